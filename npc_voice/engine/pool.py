"""StatePool: every character's recurrent state for one voice, in slot-major device tensors.

One tensor per state kind, ``[slots, *spec.shape]`` on the device, so a batch step gathers
rows by slot index. Slot 0 is scratch: padding rows of a batch point at it and it belongs to
no character. A character's state is in one of three places:

- active: in a slot, its stream is speaking (never evicted);
- idle:   still in its slot after its stream ended (LRU; a slot is taken back only when a
          new character needs one and no slot is free);
- host:   evicted to CPU memory (pinned on CUDA), LRU-bounded by ``host_capacity``; it is
          copied back into a slot when the character speaks again (identical continuation).

Not thread-safe: the engine serializes every call (its lock, tensor work on its thread).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping

import torch

from npc_voice.contracts import StateSpec

log = logging.getLogger(__name__)


class StatePool:
    def __init__(self, spec: Mapping[str, StateSpec], slots: int, device: torch.device, host_capacity: int) -> None:
        if slots < 2:
            raise ValueError(f"a state pool needs at least 2 slots (slot 0 is scratch), got slots={slots}")
        if not spec:
            raise ValueError("a state pool needs at least one state tensor; the voice's state_spec() is empty")
        self.spec = dict(spec)
        self.device = device
        self.slots = slots
        self.host_capacity = host_capacity
        self.tensors: dict[str, torch.Tensor] = {
            name: torch.zeros((slots, *s.shape), dtype=s.dtype, device=device) for name, s in self.spec.items()
        }
        self._free = list(range(slots - 1, 0, -1))  # pop() hands out the lowest slot first
        self._slot_of: dict[str, int] = {}  # resident characters (active and idle)
        self._active: set[str] = set()
        self._idle: OrderedDict[str, None] = OrderedDict()  # least recently used first
        self._host: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()  # least recently used first
        self.evictions = 0  # slot -> host moves so far
        self.forgotten = 0  # host states dropped by the host LRU bound

    @property
    def usable_slots(self) -> int:
        return self.slots - 1

    @property
    def active_count(self) -> int:
        return len(self._active)

    def known(self) -> set[str]:
        return set(self._slot_of) | set(self._host)

    def known_count(self) -> int:
        return len(self._slot_of) + len(self._host)  # disjoint: restoring pops the host copy

    def host_count(self) -> int:
        return len(self._host)

    def is_active(self, character: str) -> bool:
        return character in self._active

    def slot_of(self, character: str) -> int | None:
        return self._slot_of.get(character)

    def acquire(self, character: str) -> int | None:
        """Give ``character`` a slot holding its state (restored, resident, or zeros if new).

        Returns None when every usable slot is active. Evicts the least recently used idle
        character to host memory when no slot is free."""
        if character in self._active:
            raise RuntimeError(f"character {character!r} already holds slot {self._slot_of[character]}")
        slot = self._slot_of.get(character)
        if slot is not None:
            del self._idle[character]
        else:
            slot = self._take_slot()
            if slot is None:
                return None
            saved = self._host.pop(character, None)
            for name, t in self.tensors.items():
                if saved is None:
                    t[slot].zero_()
                else:
                    t[slot].copy_(saved[name])
            self._slot_of[character] = slot
        self._active.add(character)
        return slot

    def release(self, character: str) -> None:
        """The character stopped speaking: its state stays in its slot, now evictable (LRU)."""
        if character not in self._active:
            return
        self._active.discard(character)
        self._idle[character] = None
        self._idle.move_to_end(character)

    def forget(self, character: str) -> None:
        """Drop the character's state (reset). An active character's slot is zeroed in place."""
        self._host.pop(character, None)
        slot = self._slot_of.get(character)
        if slot is None:
            return
        if character in self._active:
            for t in self.tensors.values():
                t[slot].zero_()
            return
        del self._idle[character]
        del self._slot_of[character]
        self._free.append(slot)

    def read(self, character: str) -> dict[str, torch.Tensor] | None:
        """A CPU copy of the character's state, or None if it has none."""
        slot = self._slot_of.get(character)
        if slot is not None:
            return {name: t[slot].to("cpu", copy=True) for name, t in self.tensors.items()}
        saved = self._host.get(character)
        if saved is None:
            return None
        return {name: t.clone() for name, t in saved.items()}

    def write(self, character: str, state: Mapping[str, torch.Tensor]) -> None:
        """Replace the character's state (import). Shapes and dtypes must match the spec."""
        self.check(state)
        slot = self._slot_of.get(character)
        if slot is not None:
            for name, t in self.tensors.items():
                t[slot].copy_(state[name])
            if character in self._idle:
                self._idle.move_to_end(character)
            return
        self._put_host(character, {name: state[name].to("cpu", copy=True) for name in self.spec})

    def check(self, state: Mapping[str, torch.Tensor]) -> None:
        """Raise ValueError naming the first tensor that does not fit this pool's spec."""
        if set(state) != set(self.spec):
            raise ValueError(f"state tensors {sorted(state)} do not match the voice's {sorted(self.spec)}")
        for name, s in self.spec.items():
            t = state[name]
            if tuple(t.shape) != tuple(s.shape) or t.dtype != s.dtype:
                raise ValueError(
                    f"state tensor {name!r} is {t.dtype} {list(t.shape)}, the voice needs {s.dtype} {list(s.shape)}"
                )

    def _take_slot(self) -> int | None:
        if self._free:
            return self._free.pop()
        if not self._idle:
            return None
        victim, _ = self._idle.popitem(last=False)
        slot = self._slot_of.pop(victim)
        self._put_host(victim, {name: self._to_host(t[slot]) for name, t in self.tensors.items()})
        self.evictions += 1
        return slot

    def _to_host(self, row: torch.Tensor) -> torch.Tensor:
        if row.device.type == "cuda":
            out = torch.empty(row.shape, dtype=row.dtype, pin_memory=True)
            return out.copy_(row)
        return row.clone()

    def _put_host(self, character: str, state: dict[str, torch.Tensor]) -> None:
        self._host[character] = state
        self._host.move_to_end(character)
        while len(self._host) > self.host_capacity:
            forgotten, _ = self._host.popitem(last=False)
            self.forgotten += 1
            log.info("host state cache full (%d characters): forgot the state of %r", self.host_capacity, forgotten)
