"""npc_voice.collector: start-up objects leave later collections; garbage made after still goes."""
from __future__ import annotations

import gc

from npc_voice.collector import frozen_while


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a


def test_frozen_objects_leave_collections_and_new_cycles_are_still_collected() -> None:
    alive = [_Node() for _ in range(1000)]  # alive at the freeze: out of every later collection
    with frozen_while("test"):
        assert gc.get_freeze_count() >= len(alive)
        assert not any(o is alive[0] for o in gc.get_objects(generation=2))
        for _ in range(100):
            _cycle()
        assert gc.collect() >= 200  # cycles made after the freeze are collected as before
    assert gc.get_freeze_count() == 0  # everything given back to the collector
    assert any(o is alive[0] for o in gc.get_objects(generation=2))
