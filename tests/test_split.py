"""RowSplitter: one CPU model call's rows stepped by several threads, against the whole call."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from npc_voice.engine.api import EngineConfig
from npc_voice.engine.engine import Engine
from npc_voice.engine.split import MIN_CHUNK_ROWS, RowSplitter, chunk_bounds
from npc_voice.model import tiny_voice
from npc_voice.model.voice import DEFAULT_CONTROLS
from tests.test_engine import LINE, collect, direct_render, speak

K = 8


@pytest.mark.parametrize("rows", [1, 7, 15, 16, 17, 31, 32, 33, 64, 200])
@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_chunks_cover_the_rows_in_order(rows: int, threads: int) -> None:
    bounds = chunk_bounds(rows, threads)
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))  # contiguous, in order
    if len(bounds) > 1:
        assert all(hi - lo >= MIN_CHUNK_ROWS for lo, hi in bounds)
        assert len(bounds) <= 2 * threads
        assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1
    if threads == 1 or rows < 2 * MIN_CHUNK_ROWS:
        assert bounds == [(0, rows)]


def _inputs(voice, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(rows)
    cond = torch.randn(rows, K, voice.d_cond, generator=gen)
    controls = torch.tensor(DEFAULT_CONTROLS).repeat(rows, 1)
    controls[:, 0] = torch.linspace(-6.0, 6.0, rows)  # a pitch per row: rows out of order would show
    return torch.arange(1, rows + 1), cond, controls


def test_a_split_call_equals_the_whole_call_audio_and_state() -> None:
    voice, rows = tiny_voice(0), 50
    slots, cond, controls = _inputs(voice, rows)
    whole_state, split_state = voice.new_state(rows + 1), voice.new_state(rows + 1)
    splitter = RowSplitter(3)
    try:
        with torch.inference_mode():
            for _ in range(3):  # the states carry over between calls
                whole = voice.step(whole_state, slots, cond, controls)
                split = splitter.run(lambda s, c, k: voice.step(split_state, s, c, k), slots, cond, controls)
                assert split.shape == whole.shape
                torch.testing.assert_close(split, whole, atol=1e-5, rtol=0)  # other batch sizes round differently
                assert float(whole.abs().max()) > 1e-3
        for name, tensor in whole_state.items():
            torch.testing.assert_close(split_state[name], tensor, atol=1e-5, rtol=1e-5, msg=name)
    finally:
        splitter.close()


def test_helpers_take_chunks_and_the_rows_come_back_in_order() -> None:
    splitter = RowSplitter(2)
    seen: list[str] = []

    def step(slots: torch.Tensor, cond: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        seen.append(threading.current_thread().name)
        time.sleep(0.05)  # long enough that the helper claims a chunk
        return slots[:, None].float() * 10.0

    try:
        slots = torch.arange(64)
        out = splitter.run(step, slots, torch.zeros(64, 1), torch.zeros(64, 1))
        assert out[:, 0].tolist() == [10.0 * i for i in range(64)]
        assert len(seen) == len(chunk_bounds(64, 2)) == 4
        assert threading.current_thread().name in seen and "npc-voice-step-1" in seen
    finally:
        splitter.close()


def test_a_failing_chunk_fails_the_call_and_the_next_call_works() -> None:
    splitter = RowSplitter(2)

    def step(slots: torch.Tensor, cond: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        if int(slots[0]) == 16:  # the second chunk, whichever thread steps it
            raise RuntimeError("boom in a chunk")
        return slots[:, None].float()

    try:
        with pytest.raises(RuntimeError, match="boom in a chunk"):
            splitter.run(step, torch.arange(32), torch.zeros(32, 1), torch.zeros(32, 1))
        out = splitter.run(step, torch.arange(100, 132), torch.zeros(32, 1), torch.zeros(32, 1))
        assert out[:, 0].tolist() == [float(i) for i in range(100, 132)]
    finally:
        splitter.close()
    # closed: the caller steps alone, in one call
    calls: list[int] = []
    out = splitter.run(lambda s, c, k: (calls.append(len(s)), s[:, None].float())[1],
                       torch.arange(32), torch.zeros(32, 1), torch.zeros(32, 1))
    assert calls == [32] and out.shape == (32, 1)


def test_the_engine_with_step_threads_equals_rendering_directly() -> None:
    voice = tiny_voice(0)
    engine = Engine({"tiny": voice}, EngineConfig(slots=48, lookahead_ms=1e9, max_load=0.0, step_threads=2))
    engine.start()
    try:
        assert engine.splitter is not None and engine.splitter.threads == 2
        streams = [speak(engine, f"npc{i}", LINE) for i in range(40)]  # beats of up to 40 rows: chunks
        want = direct_render(voice, [LINE])
        for stream in streams:
            _, pcm, end = collect(stream)
            assert end.reason == "completed"
            assert pcm.shape == want.shape
            np.testing.assert_allclose(pcm, want, atol=1e-4, rtol=0)
        assert engine.splitter.calls_split > 0
    finally:
        engine.close()


def test_admission_keeps_one_thread_within_real_time_while_the_hypervisor_takes_the_machine() -> None:
    """The split calls' measured cost must fit max_load of real time; and with the call on one
    thread (the helper's vCPU gone) the round must fit a share of real time that falls as the
    hypervisor takes more of the machine (PARALLEL_GUARD on a quiet host, GUARD_PER_STEAL less per
    unit of steal, GUARD_MIN at least). The round's work beyond the step (overhead) counts once."""
    from npc_voice.engine.core import GUARD_MIN, GUARD_PER_STEAL, PARALLEL_GUARD

    engine = Engine({"tiny": tiny_voice(0)}, EngineConfig(slots=200, step_threads=2, max_load=0.7,
                                                          admit_floor=0))
    core, vr = engine.core, engine.core.voices["tiny"]
    real_time = core.k * vr.model.hop / vr.model.sample_rate
    vr.cost, vr.one_thread_cost = type(vr.cost)(), type(vr.cost)()
    per_row = real_time / 100.0  # measured: 100 rows fill real time
    for batch in (8, 16, 32, 8, 16, 32):
        vr.cost.add(batch, per_row * batch)
        vr.one_thread_cost.add(batch, 2.0 * per_row * batch)  # on one thread: twice as long
    core.overhead = 1.1

    def fits(n: int) -> bool:
        return core._over_load(vr, {"tiny": n - 1}) == ""

    def most(limit: float = 200) -> int:
        return max(n for n in range(1, int(limit)) if fits(n))

    core.steal.share = 0.0  # measured decides: 1.1 * n / 100 <= 0.7
    assert most() == 63
    core.steal.share = 0.5  # one thread: 2n/100 + 0.1 * n/100 <= GUARD_MIN
    assert most() == int(GUARD_MIN / 0.021 + 1e-9)
    assert "on one thread" in core._over_load(vr, {"tiny": most()})
    core.steal.share = 0.05  # on the slope
    assert most() == int((PARALLEL_GUARD - 0.05 * GUARD_PER_STEAL) / 0.021 + 1e-9) < 63
    core.overhead = 1.0
    vr.one_thread_cost = type(vr.cost)()
    for batch in (8, 16, 32, 8, 16, 32):
        vr.one_thread_cost.add(batch, 1.1 * per_row * batch)  # the helper bought little
    assert most() == 70  # the measured cost decides again
    assert engine.stats().load == 0.0
    engine.close()


def test_steal_meter_reads_the_hypervisors_share_and_tolerates_no_proc() -> None:
    from npc_voice.engine.hostcpu import StealMeter

    samples = iter([(0.0, 0.0, 0.0), (8.0, 1.0, 1.0), (18.0, 2.0, 1.0)])  # (busy, idle, stolen) so far
    meter = StealMeter(every_s=0.5, weight=1.0, read=lambda: next(samples))
    assert meter.update(0.0) == 0.0  # the first reading only sets the baseline
    assert meter.update(0.2) == 0.0  # too soon: not read
    assert meter.update(1.0) == pytest.approx(0.1)  # 1 of 10 CPU-s stolen
    assert meter.update(2.0) == pytest.approx(0.0)

    def broken() -> tuple[float, float, float]:
        raise OSError("no /proc here")

    quiet = StealMeter(read=broken)
    assert quiet.update(0.0) == 0.0 and quiet.update(10.0) == 0.0
    live = StealMeter(every_s=0.0)
    live.update()
    time.sleep(0.05)
    assert 0.0 <= live.update() <= 1.0


def test_a_split_call_reports_its_one_thread_time() -> None:
    voice = tiny_voice(0)
    engine = Engine({"tiny": voice}, EngineConfig(slots=48, step_threads=2))
    step = engine.core.voices["tiny"].step
    slots, cond, controls = _inputs(voice, 40)
    with torch.inference_mode():
        step(slots[:4], cond[:4], controls[:4])
        assert step.one_thread_s() is None  # 4 rows: not split
        t0 = time.perf_counter()
        step(slots, cond, controls)
        wall = time.perf_counter() - t0
    one_thread = step.one_thread_s()
    assert one_thread is not None and 0.0 < one_thread < 3.0 * wall
    engine.close()
