"""The load-testing harness: jitter-buffer accounting, the report, and a real run against a daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from npc_voice.loadtest.client_sim import LineRecord, SimConfig, SimResult, StatsSample
from npc_voice.loadtest.lines import BARKS, CONVERSATIONS, llm_pieces
from npc_voice.loadtest.playback import JitterBuffer, dry_in_stalls, percentiles
from npc_voice.loadtest.report import build_report, summary_text

RATE = 1000  # samples per second: 1 sample = 1 ms keeps the arithmetic readable


def test_playback_starts_after_prebuffer_and_keeps_up_without_underruns() -> None:
    buf = JitterBuffer(RATE, prebuffer_s=0.1)
    # 40 ms chunks every 40 ms (exactly real time), first one at t = 0.05
    for i in range(10):
        buf.on_chunk(0.05 + 0.04 * i, 40)
    buf.on_end(0.05 + 0.04 * 9)
    assert buf.first_play_t == pytest.approx(0.05 + 0.04 * 2)  # 120 ms buffered after the third chunk
    assert buf.underruns == 0 and buf.stall_s == 0.0
    assert buf.audio_s == pytest.approx(0.4)
    assert buf.chunk_gaps_s() == pytest.approx([0.04] * 9)


def test_playback_counts_an_underrun_and_the_stall() -> None:
    buf = JitterBuffer(RATE, prebuffer_s=0.1)
    buf.on_chunk(0.0, 100)  # starts playing at 0.0; runs dry at 0.1
    buf.on_chunk(0.25, 50)  # late by 150 ms: underrun; 50 ms < prebuffer, so still stalled
    assert buf.underruns == 1 and buf.stall_s == 0.0
    buf.on_chunk(0.30, 50)  # 100 ms buffered again: resumes, stalled 0.1 -> 0.3
    assert buf.stall_s == pytest.approx(0.2)
    buf.on_chunk(0.35, 100)  # still 50 ms of the previous run left at 0.35: on time
    buf.on_end(0.36)
    assert buf.underruns == 1
    assert buf.stall_s == pytest.approx(0.2)


def test_playback_notes_when_each_underrun_ran_dry_and_which_fell_in_a_client_stall() -> None:
    buf = JitterBuffer(RATE, prebuffer_s=0.1)
    buf.on_chunk(0.0, 100)  # dry at 0.1
    buf.on_chunk(0.25, 100)  # late: underrun 1; 100 ms buffered again, plays 0.25 -> 0.35
    buf.on_chunk(0.50, 100)  # late: underrun 2 (dry at 0.35)
    buf.on_end(0.55)
    assert buf.underruns == 2 and buf.dry_at == pytest.approx([0.1, 0.35])
    # the client's event loop was late over [0.05, 0.12] and [0.36, 0.40]: only the first dry
    # moment fell inside a stall; the second came 10 ms before the next one began
    assert dry_in_stalls(buf.dry_at, [(0.05, 0.12), (0.36, 0.40)]) == 1
    assert dry_in_stalls(buf.dry_at, [(0.05, 0.12), (0.30, 0.40)]) == 2
    assert dry_in_stalls(buf.dry_at, []) == 0
    assert dry_in_stalls([0.2], [(0.1, 0.2)]) == 1  # the ends belong to the stall


def test_playback_short_stream_plays_at_end_and_late_end_is_no_underrun() -> None:
    buf = JitterBuffer(RATE, prebuffer_s=0.1)
    buf.on_chunk(0.0, 30)
    assert buf.first_play_t is None  # 30 ms < 100 ms pre-buffer
    buf.on_end(0.5)  # the end flushes; nothing was playing, so nothing ran out
    assert buf.first_play_t == 0.5 and buf.underruns == 0
    buf2 = JitterBuffer(RATE, prebuffer_s=0.05)
    buf2.on_chunk(0.0, 60)
    buf2.on_chunk(0.2, 10)  # ran dry at 0.06, before the stream ended
    assert buf2.underruns == 1


def test_playback_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="sample_rate must be positive, got 0"):
        JitterBuffer(0)
    buf = JitterBuffer(RATE)
    buf.on_chunk(1.0, 10)
    with pytest.raises(ValueError, match="must not decrease"):
        buf.on_chunk(0.5, 10)
    buf.on_end(1.1)
    with pytest.raises(ValueError, match="after the end"):
        buf.on_chunk(1.2, 10)


def test_percentiles() -> None:
    p = percentiles([float(v) for v in range(1, 101)])
    assert p["p50"] == pytest.approx(50.5) and p["p99"] == pytest.approx(99.01) and p["max"] == 100.0
    assert p["count"] == 100
    empty = percentiles([])
    assert empty["p50"] is None and empty["count"] == 0


def test_lines_and_llm_pieces() -> None:
    assert BARKS and CONVERSATIONS
    text = "Welcome, traveller. The road is long."
    pieces = llm_pieces(text)
    assert "".join(pieces) == text and len(pieces) == 3


def test_sim_config_validates_with_the_bad_value() -> None:
    with pytest.raises(ValueError, match="'shouting'"):
        SimConfig(server="x:1", streams=1, duration_s=1, scenario="shouting")
    with pytest.raises(ValueError, match="got 0"):
        SimConfig(server="x:1", streams=0, duration_s=1)
    with pytest.raises(ValueError, match="cancel_fraction must be in 0..1, got 2"):
        SimConfig(server="x:1", streams=1, duration_s=1, cancel_fraction=2)


def _line(
    kind: str, t0: float, first: float | None, end: float, samples: int, outcome: str, **kw: object
) -> LineRecord:
    rec = LineRecord(kind=kind, character=f"{kind}/1", t_sent=t0, t_ref=t0, t_first_audio=first, t_end=end)
    rec.sample_rate, rec.samples, rec.outcome = RATE, samples, outcome
    for k, v in kw.items():
        setattr(rec, k, v)
    return rec


def test_report_from_hand_made_records() -> None:
    cfg = SimConfig(server="127.0.0.1:1", streams=3, duration_s=2.0, scenario="mixed", token="secret")
    lines = [
        _line("bark", 0.0, 0.05, 1.0, 1000, "completed", gaps_s=[0.04, 0.06], server_queued_ms=1.0,
              server_first_audio_ms=30.0),
        _line("bark", 0.5, 0.60, 1.2, 500, "cancelled", underruns=2, stall_s=0.1, server_queued_ms=3.0,
              server_first_audio_ms=80.0),
        _line("conversation", 0.2, 0.35, 3.0, 2500, "completed", server_queued_ms=9.0, server_first_audio_ms=900.0),
        _line("slow_reader", 0.1, 0.2, 4.0, 1000, "completed", underruns=5, server_queued_ms=2.0,
              server_first_audio_ms=40.0),
        _line("bark", 1.0, None, 1.1, 0, "rejected", error="RESOURCE_EXHAUSTED"),
    ]
    lines[1].dry_at = [0.7, 0.9]  # the cancelled bark's two underruns; the client stalled over the first
    lines[3].dry_at = [0.3] * 5  # the slow reader's: slow on purpose, never counted
    stats = [StatsSample(0.5, 3, 3, 8, 0, 10.0, 20.0, 3)]
    report = build_report(SimResult(cfg, ["guard"], lines, stats, 4.0, {"slots_total": 8},
                                    loop_stalls=[(0.25, 0.35), (0.65, 0.75)], daemon_underruns=1,
                                    daemon_late_audio=4))
    assert "secret" not in json.dumps(report)  # the token never lands in a report
    assert report["counts"] == {
        "started": 5,
        "completed": 3,
        "cancelled": 1,
        "interrupted": 0,
        "dropped": 0,
        "rejected": 1,
        "failed": 0,
        "unfinished": 0,
    }
    assert report["counts_by_kind"]["bark"]["rejected"] == 1
    assert report["errors"] == {"RESOURCE_EXHAUSTED": 1}
    assert report["first_audio_ms"]["count"] == 4
    assert report["first_audio_ms"]["p50"] == pytest.approx(100.0)  # 50, 100, 100, 150
    assert report["first_audio_ms_by_kind"]["conversation"]["p50"] == pytest.approx(150.0)
    daemon = report["in_daemon_ms"]  # Speak lines only: a Converse turn is timed from its open
    assert daemon["first_audio"]["count"] == 3 and daemon["first_audio"]["p50"] == pytest.approx(40.0)
    assert daemon["queued"]["max"] == pytest.approx(3.0)
    assert report["underruns"] == {
        "count": 2,
        "streams_affected": 1,
        "stall_ms_total": pytest.approx(100.0),
        "slow_reader_underruns": 5,
        "daemon_counted": 1,
        "daemon_late_audio": 4,
        "while_client_stalled": 1,
    }
    stalls = {"count": 2, "total_ms": pytest.approx(200.0), "max_ms": pytest.approx(100.0)}
    assert report["client_loop_stalls"] == stalls
    assert report["chunk_gap_ms"]["max"] == pytest.approx(60.0)
    assert report["audio_s_total"] == pytest.approx(5.0)
    assert report["realtime_factor"]["aggregate"] == pytest.approx(5.0 / 4.0)
    assert report["realtime_factor"]["per_stream"]["min"] == pytest.approx(1.0 / 3.9)  # the slow reader
    assert report["slots_timeline"][0]["slots_total"] == 8
    assert report["target"] == {"zero_underruns": False, "p99_first_audio_ms_le_150": True, "no_failures": False,
                                "steady_all_completed": True, "settled_to_zero": False}  # (no settle measured)
    assert "first audio" in summary_text(report) and "in daemon   p50 40" in summary_text(report)
    assert ("of which    1 ran dry while this load generator itself was stalled (its event loop >= 20 ms late 2 "
            "times, longest 100 ms); the daemon counted 1 times a stream fell behind its playback clock in the "
            "engine, and 4 audio chunks its gRPC edge took after they were due") in summary_text(report)


def test_loadtest_cli_against_a_real_daemon(daemon: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`npc-voice loadtest` end to end: 4 simulated characters for 3 s against the tiny-voice daemon."""
    from npc_voice.cli import main

    report_path, plot_path = tmp_path / "lt.json", tmp_path / "lt.png"
    address = daemon.address  # type: ignore[attr-defined]
    rc = main(
        [
            "loadtest",
            "--server",
            address,
            "--streams",
            "4",
            "--duration",
            "3",
            "--scenario",
            "mixed",
            "--report",
            str(report_path),
            "--plot",
            str(plot_path),
            "--cancel-fraction",
            "0.3",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out
    report = json.loads(report_path.read_text())
    for key in (
        "config",
        "first_audio_ms",
        "first_audio_ms_by_kind",
        "chunk_gap_ms",
        "underruns",
        "realtime_factor",
        "counts",
        "errors",
        "slots_timeline",
        "server_stats_end",
        "target",
        "client_loop_stalls",
    ):
        assert key in report, key
    assert report["underruns"]["daemon_counted"] >= 0  # the daemon's own counts, read before and after
    assert report["underruns"]["daemon_late_audio"] >= 0
    assert 0 <= report["underruns"]["while_client_stalled"] <= report["underruns"]["count"]
    counts = report["counts"]
    assert counts["started"] >= 4
    assert counts["failed"] == 0 and counts["unfinished"] == 0, report["errors"]
    assert counts["completed"] + counts["cancelled"] + counts["rejected"] == counts["started"]
    assert counts["completed"] >= 1
    fa = report["first_audio_ms"]
    assert fa["count"] >= 1 and 0 < fa["p50"] <= fa["p99"] <= fa["max"] < 10_000
    daemon_fa = report["in_daemon_ms"]["first_audio"]  # the daemon's StreamEnd timings arrived
    assert daemon_fa["count"] >= 1 and 0 < daemon_fa["p50"] <= daemon_fa["max"] < 10_000
    assert "in daemon" in out.out
    assert report["chunk_gap_ms"]["p50"] > 0
    assert report["audio_s_total"] > 0.5 and report["realtime_factor"]["aggregate"] > 0
    timeline = report["slots_timeline"]
    assert timeline and all(s["slots_total"] == timeline[0]["slots_total"] > 0 for s in timeline)
    assert max(s["active_streams"] for s in timeline) >= 1
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot_path.stat().st_size > 5000
    assert "first audio" in out.out and "[" in out.err  # summary on stdout, live progress on stderr


def test_sweep_helpers() -> None:
    from npc_voice.loadtest.cli import _suffixed, parse_streams, passes

    assert parse_streams("16") == [16] and parse_streams("16,32, 64") == [16, 32, 64]
    for bad in ("", "0", "x", "8,-1"):
        with pytest.raises(ValueError, match="--streams"):
            parse_streams(bad)
    assert _suffixed("out/sweep.json", 32, True) == "out/sweep-n32.json"
    assert _suffixed("out/sweep.json", 32, False) == "out/sweep.json" and _suffixed(None, 3, True) is None
    target = {"zero_underruns": True, "p99_first_audio_ms_le_150": True, "steady_all_completed": True,
              "settled_to_zero": True}
    good = {"target": target, "counts": {"failed": 0, "rejected": 0}, "config": {"scenario": "barks"}}
    assert passes(good)
    assert not passes({**good, "counts": {"failed": 1, "rejected": 0}})
    assert not passes({**good, "target": {**target, "zero_underruns": False}})
    continuous = {**good, "config": {"scenario": "continuous"}}
    assert passes(continuous) and not passes({**continuous, "counts": {"failed": 0, "rejected": 1}})
    churn = {**good, "config": {"scenario": "churn"}}
    assert passes(churn) and not passes({**churn, "target": {**target, "settled_to_zero": False}})
    assert not passes({**churn, "target": {**target, "steady_all_completed": False}})
    slow = {**target, "p99_first_audio_ms_le_150": False}  # judged for continuous, only reported for churn
    assert passes({**churn, "target": slow}) and not passes({**continuous, "target": slow})
    assert not passes({**churn, "target": {**slow, "zero_underruns": False}})
