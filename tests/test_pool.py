"""StatePool and the character state file format: slots, LRU eviction to host, export/import bytes."""
from __future__ import annotations

import struct
import zlib

import pytest
import torch

from npc_voice.engine.api import STATE_FORMAT_VERSION, StateFormatError
from npc_voice.engine.pool import StatePool
from npc_voice.engine.statefile import MAGIC, decode_state, encode_state
from npc_voice.model.api import StateSpec

SPEC = {
    "ssm": StateSpec((2, 3), torch.float32),
    "counter": StateSpec((1,), torch.int64),
}


def make_pool(slots: int = 3, host: int = 10) -> StatePool:
    return StatePool(SPEC, slots, torch.device("cpu"), host)


def fill(pool: StatePool, slot: int, value: float) -> None:
    pool.tensors["ssm"][slot].fill_(value)
    pool.tensors["counter"][slot].fill_(int(value))


def test_acquire_gives_distinct_zeroed_slots_never_scratch() -> None:
    pool = make_pool(slots=3)
    fill(pool, 1, 5.0)
    fill(pool, 2, 6.0)
    a, b = pool.acquire("a"), pool.acquire("b")
    assert {a, b} == {1, 2}
    assert a is not None and b is not None
    assert float(pool.tensors["ssm"][a].abs().sum()) == 0.0
    assert int(pool.tensors["counter"][b].sum()) == 0
    assert pool.acquire("c") is None  # every usable slot is active
    assert pool.active_count == 2


def test_release_keeps_state_resident_and_reacquire_returns_it() -> None:
    pool = make_pool(slots=3)
    slot = pool.acquire("a")
    assert slot is not None
    fill(pool, slot, 3.0)
    pool.release("a")
    assert pool.active_count == 0
    assert pool.acquire("a") == slot
    assert float(pool.tensors["ssm"][slot][0, 0]) == 3.0


def test_eviction_to_host_and_restore_is_exact() -> None:
    pool = make_pool(slots=2)  # one usable slot
    slot = pool.acquire("a")
    assert slot == 1
    pool.tensors["ssm"][slot] = torch.randn(2, 3)
    pool.tensors["counter"][slot] = 12345678901
    saved = {k: t[slot].clone() for k, t in pool.tensors.items()}
    pool.release("a")
    assert pool.acquire("b") == 1  # takes a's slot: a goes to host memory
    assert pool.evictions == 1 and pool.host_count() == 1
    assert float(pool.tensors["ssm"][1].abs().sum()) == 0.0  # b starts fresh
    pool.tensors["ssm"][1].fill_(9.0)
    pool.release("b")
    assert pool.acquire("a") == 1
    for k, t in pool.tensors.items():
        assert torch.equal(t[1], saved[k]), k
    assert pool.known() == {"a", "b"} and pool.known_count() == 2


def test_lru_evicts_least_recently_used_idle_character() -> None:
    pool = make_pool(slots=3)
    for name in ("a", "b"):
        pool.acquire(name)
    pool.release("a")
    pool.release("b")
    pool.acquire("a")  # a becomes active again; b is the only idle one
    pool.release("a")  # now a is the most recent idle
    pool.acquire("c")
    assert pool.slot_of("b") is None and pool.slot_of("a") is not None


def test_host_cache_is_bounded() -> None:
    pool = make_pool(slots=2, host=1)
    for name in ("a", "b", "c"):
        pool.acquire(name)
        pool.release(name)
    assert pool.host_count() == 1 and pool.forgotten == 1
    assert pool.known() == {"b", "c"}


def test_forget_frees_slot_and_resets_state() -> None:
    pool = make_pool(slots=2)
    slot = pool.acquire("a")
    assert slot is not None
    fill(pool, slot, 4.0)
    pool.forget("a")  # active: zeroed in place, keeps its slot
    assert float(pool.tensors["ssm"][slot].abs().sum()) == 0.0 and pool.is_active("a")
    fill(pool, slot, 4.0)
    pool.release("a")
    pool.forget("a")
    assert pool.known() == set()
    assert pool.acquire("a") == slot
    assert float(pool.tensors["ssm"][slot].abs().sum()) == 0.0


def test_write_copies_a_state_and_checks_shapes() -> None:
    pool = make_pool(slots=3)
    slot = pool.acquire("guard")
    assert slot is not None
    fill(pool, slot, 2.0)
    state = pool.read("guard")
    assert state is not None
    pool.write("guard/7", state)
    assert pool.read("nobody") is None
    copy = pool.read("guard/7")
    assert copy is not None and float(copy["ssm"][0, 0]) == 2.0
    with pytest.raises(ValueError, match="ssm"):
        pool.write("x", {"ssm": torch.zeros(3, 2), "counter": torch.zeros(1, dtype=torch.int64)})


def sample_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "dec_ssm": torch.randn(2, 4, 3, generator=g),
        "voc_counter": torch.tensor([2**40 + 3], dtype=torch.int64),
        "half": torch.randn(5, generator=g).to(torch.bfloat16),
    }


def test_state_bytes_round_trip_exactly() -> None:
    state = sample_state()
    data = encode_state("voice-abc", state)
    assert data.startswith(MAGIC)
    version, back = decode_state(data)
    assert version == "voice-abc"
    assert set(back) == set(state)
    for k in state:
        assert back[k].dtype == state[k].dtype and torch.equal(back[k], state[k]), k
    assert encode_state("voice-abc", back) == data  # deterministic


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: b"XXXXXXXX" + d[8:], "not an npc-voice"),
        (lambda d: d[:-5] + bytes([d[-5] ^ 0xFF]) + d[-4:], "crc32"),
        (lambda d: _with_crc(d[:8] + struct.pack("<H", STATE_FORMAT_VERSION + 1) + d[10:-4]), "format version"),
        (lambda d: _with_crc(d[:-20]), "truncated"),
        (lambda d: _with_crc(d[:-4] + b"\0"), "trailing"),
        (lambda d: d[:5], "not an npc-voice"),
    ],
)
def test_bad_state_bytes_are_rejected(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    data = encode_state("v1", sample_state())
    with pytest.raises(StateFormatError, match=message):
        decode_state(mutate(data))


def test_cond_arena_pages_gather_release_and_grow() -> None:
    from npc_voice.engine.arena import CondArena

    arena = CondArena(k=2, d_cond=3, device=torch.device("cpu"), pages=2)
    a = torch.arange(12, dtype=torch.float32).view(4, 3)  # 2 pages
    b = -torch.arange(18, dtype=torch.float32).view(6, 3)  # 3 pages: the arena grows
    pa, pb = arena.alloc(a), arena.alloc(b)
    assert len(pa) == 2 and len(pb) == 3 and not set(pa) & set(pb)
    got = arena.gather([pb[1], pa[0], pa[1]])  # [3, K, d]
    assert torch.equal(got[0], b[2:4]) and torch.equal(got[1], a[0:2]) and torch.equal(got[2], a[2:4])
    arena.release(pa)
    pc = arena.alloc(torch.ones(4, 3))
    assert sorted(pc) == sorted(pa)  # freed pages are reused
    assert torch.equal(arena.gather(pb), b.view(3, 2, 3))  # untouched by the reuse
    with pytest.raises(ValueError, match="multiple of K"):
        arena.alloc(torch.ones(3, 3))
