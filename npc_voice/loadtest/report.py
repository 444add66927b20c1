"""Load-test numbers: the JSON report and the PNG plot.

Report keys (all latencies in ms, audio in s):
    config              the SimConfig used (+ server address, start time)
    wall_s, client_cpu_s  test wall time; CPU seconds the load generator itself used
    first_audio_ms      p50/p95/p99/max/mean/count over every line that produced audio:
                        Speak: request sent -> first AudioChunk; Converse: the text piece
                        that completed the first phrase -> first AudioChunk
    first_audio_ms_by_kind   the same per kind (bark, conversation, slow_reader)
    in_daemon_ms        the daemon's own account of the same lines (StreamEnd timings, from the
                        request's arrival; Speak lines only, churn's dropped lines excluded):
                        first_audio (to the first AudioChunk sent) and queued (waiting for
                        admission: character busy, no slot, or over max_load), p50/p95/p99/max.
                        first_audio_ms minus this is the client's side: gRPC, the network, and
                        the load generator's own event loop (on a shared machine, its CPU wait)
    chunk_gap_ms        gaps between consecutive AudioChunks of a stream (p50/p99/max)
    underruns           count, streams_affected, stall_ms_total (slow readers excluded: their
                        client is slow on purpose), plus slow_reader_underruns; and who could have
                        caused them: daemon_counted (the daemon's own count over the run: times a stream's
                        generated audio fell behind its playback clock in the engine), while_client_stalled
                        (those that ran dry while this load generator's event loop was itself 20 ms
                        or more late: it could not have read the audio then, whatever the daemon sent);
                        daemon_late_audio (audio chunks the engine made in time that the daemon's gRPC
                        edge took only after they were due: the daemon process short of CPU)
    client_loop_stalls  count, total_ms, max_ms of those moments (a load generator sharing the
                        daemon's machine, or its hypervisor, is late too)
    realtime_factor     audio seconds produced per wall second: per stream (p50/min, completed
                        lines) and aggregate (all audio / test wall time)
    counts              started, completed, cancelled, rejected, failed, unfinished
    errors              gRPC status name -> count (rejected + failed)
    slots_timeline      GetStats every ~0.5 s: t, active_streams, slots_in_use, slots_total, ...
    server_stats_end    the daemon's GetStats after the run
    counts_by_kind      the same counts per kind (bark, conversation, slow_reader, continuous, steady, churn)
    batch_fill          the daemon's mean stepped rows / speaking streams per model step (GetStats)
    settled_s           after the run, seconds until the daemon had no active stream (None: not within 10 s)
    target              the issue's CPU target: zero underruns and p99 first audio <= 150 ms; for churn
                        the p99 is not judged, and every steady line completed and the daemon back
                        to 0 active streams
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

from npc_voice.loadtest.client_sim import LOOP_STALL_S, SimResult
from npc_voice.loadtest.playback import dry_in_stalls, percentiles

log = logging.getLogger(__name__)

P99_TARGET_MS = 150.0


def build_report(result: SimResult) -> dict[str, Any]:
    lines = result.lines
    kinds = sorted({r.kind for r in lines})
    by_kind = {k: percentiles([v for r in lines if r.kind == k and (v := r.first_audio_ms) is not None]) for k in kinds}
    unplayed = ("slow_reader", "churn")  # slow on purpose, or dropped on purpose
    gaps_ms = [g * 1000.0 for r in lines if r.kind not in unplayed for g in r.gaps_s]
    played = [r for r in lines if r.kind not in unplayed]
    underruns = sum(r.underruns for r in played)
    affected = sum(1 for r in played if r.underruns)
    rtf_per_stream = [
        r.audio_s / (r.t_end - r.t_sent)
        for r in lines
        if r.outcome == "completed" and r.t_end is not None and r.t_end > r.t_sent and r.samples
    ]
    audio_total = sum(r.audio_s for r in lines)
    counts = _counts(lines)
    counts_by_kind = {k: _counts([r for r in lines if r.kind == k]) for k in kinds}
    errors: dict[str, int] = {}
    for r in lines:
        if r.error:
            errors[r.error] = errors.get(r.error, 0) + 1
    latencies = [v for r in lines if r.kind != "churn" and (v := r.first_audio_ms) is not None]  # churn: dropped
    first = percentiles(latencies)
    p99 = first["p99"]
    speak = [r for r in lines if r.kind not in ("conversation", "churn")]  # Converse: timed from the open
    config = dataclasses.asdict(result.config)
    config.pop("token", None)  # never write a credential into a report
    config["started_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "config": config,
        "characters": result.characters,
        "wall_s": result.wall_s,
        "client_cpu_s": result.client_cpu_s,  # the load generator's own CPU use (same machine as the daemon?)
        "first_audio_ms": first,
        "first_audio_ms_by_kind": by_kind,
        "first_audio_ms_burst": percentiles([v for r in lines if r.burst and (v := r.first_audio_ms) is not None]),
        "in_daemon_ms": {
            "first_audio": percentiles([v for r in speak if (v := r.server_first_audio_ms) is not None]),
            "queued": percentiles([v for r in speak if (v := r.server_queued_ms) is not None]),
        },
        "chunk_gap_ms": percentiles(gaps_ms, (50, 99)),
        "underruns": {
            "count": underruns,
            "streams_affected": affected,
            "stall_ms_total": 1000.0 * sum(r.stall_s for r in played),
            "slow_reader_underruns": sum(r.underruns for r in lines if r.kind == "slow_reader"),
            "daemon_counted": result.daemon_underruns,
            "daemon_late_audio": result.daemon_late_audio,
            "while_client_stalled": dry_in_stalls(sorted(t for r in played for t in r.dry_at), result.loop_stalls),
        },
        "client_loop_stalls": {
            "count": len(result.loop_stalls),
            "total_ms": 1000.0 * sum(b - a for a, b in result.loop_stalls),
            "max_ms": 1000.0 * max((b - a for a, b in result.loop_stalls), default=0.0),
        },
        "realtime_factor": {
            "per_stream": percentiles(rtf_per_stream, (50,)) | {"min": min(rtf_per_stream, default=None)},
            "aggregate": audio_total / result.wall_s if result.wall_s > 0 else None,
        },
        "audio_s_total": audio_total,
        "counts": counts,
        "counts_by_kind": counts_by_kind,
        "batch_fill": result.final_stats.get("batch_fill"),
        "settled_s": result.settled_s,
        "errors": errors,
        "slots_timeline": [dataclasses.asdict(s) for s in result.stats],
        "server_stats_end": result.final_stats,
        "target": {
            "zero_underruns": underruns == 0,
            "p99_first_audio_ms_le_150": p99 is not None and p99 <= P99_TARGET_MS,
            "no_failures": counts["failed"] == 0 and counts["rejected"] == 0,
            "steady_all_completed": all(r.outcome == "completed" for r in lines if r.kind in ("steady", "continuous")),
            "settled_to_zero": result.settled_s is not None,
        },
    }


OUTCOMES = ("completed", "cancelled", "interrupted", "dropped", "rejected", "failed", "unfinished")


def _counts(lines: list[Any]) -> dict[str, int]:
    counts = {"started": len(lines)}
    for k in OUTCOMES:
        counts[k] = sum(1 for r in lines if r.outcome == k)
    return counts


def write_json(report: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def summary_text(report: dict[str, Any]) -> str:
    """A few human lines for the terminal."""
    fa, gap, u, c = report["first_audio_ms"], report["chunk_gap_ms"], report["underruns"], report["counts"]
    rtf = report["realtime_factor"]
    agg = rtf["aggregate"]
    t = report["target"]
    cfg = report["config"]
    return "\n".join(
        [
            f"{cfg['scenario']}: {cfg['streams']} streams, {cfg['duration_s']:g} s against {cfg['server']}",
            f"first audio   p50 {_ms(fa['p50'])}  p95 {_ms(fa['p95'])}  p99 {_ms(fa['p99'])}  max {_ms(fa['max'])} ms "
            f"({fa['count']} lines)",
            *_in_daemon(report.get("in_daemon_ms")),
            f"chunk gaps    p50 {_ms(gap['p50'])}  p99 {_ms(gap['p99'])}  max {_ms(gap['max'])} ms",
            f"underruns     {u['count']} in {u['streams_affected']} streams, stalled {u['stall_ms_total']:.0f} ms"
            f" (slow readers: {u['slow_reader_underruns']})",
            *_attribution(u, report.get("client_loop_stalls")),
            f"lines         {c['started']} started, {c['completed']} completed, {c['cancelled']} cancelled, "
            f"{c['dropped']} dropped by the client, {c['rejected']} rejected, {c['failed']} failed, "
            f"{c['unfinished']} unfinished",
            *[f"  {kind:<12}{k['started']} started, {k['completed']} completed, {k['dropped']} dropped, "
              f"{k['cancelled']} cancelled, {k['rejected']} rejected, {k['failed']} failed"
              for kind, k in report["counts_by_kind"].items()],
            f"daemon        batch fill {fmt_fill(report['batch_fill'])}, back to 0 active streams "
            f"{_settled(report['settled_s'])}",
            *_preparer(report.get("server_stats_end") or {}),
            f"audio         {report['audio_s_total']:.1f} s in {report['wall_s']:.1f} s wall "
            f"(aggregate {'-' if agg is None else f'{agg:.1f}'}x real time)",
            f"client        {report['client_cpu_s']:.1f} CPU-s used by this load generator",
            f"target        zero underruns: {t['zero_underruns']}, p99 <= 150 ms: {t['p99_first_audio_ms_le_150']}",
        ]
    )


def _preparer(stats: dict[str, Any]) -> list[str]:
    """The daemon's line preparer since it started (GetStats leaves zeros out; no line at all from
    a daemon whose engine runs in its own thread, which has no preparer)."""
    prepared, hits = int(stats.get("lines_prepared", 0)), int(stats.get("prepare_cache_hits", 0))
    if not prepared and not hits:
        return []
    share = 100.0 * hits / (prepared + hits)
    return [f"  preparer    {prepared} lines encoded, {hits} said again from its cache ({share:.0f} %), "
            f"{int(stats.get('prepare_cache_bytes', 0)) / (1 << 20):.1f} MB held (since the daemon started)"]


def _attribution(u: dict[str, Any], stalls: dict[str, Any] | None) -> list[str]:
    """Who could have made the underruns: the engine (the daemon's own count), or this load
    generator, stalled when the audio ran out (a client sharing the daemon's machine)."""
    if not u["count"] or stalls is None:
        return []
    daemon = "-" if u.get("daemon_counted") is None else u["daemon_counted"]
    late = "-" if u.get("daemon_late_audio") is None else u["daemon_late_audio"]
    return [f"  of which    {u['while_client_stalled']} ran dry while this load generator itself was stalled "
            f"(its event loop >= {LOOP_STALL_S * 1000:.0f} ms late {stalls['count']} times, "
            f"longest {stalls['max_ms']:.0f} ms); "
            f"the daemon counted {daemon} times a stream fell behind its playback clock in the engine, "
            f"and {late} audio chunks its gRPC edge took after they were due"]


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _in_daemon(d: dict[str, Any] | None) -> list[str]:
    """The daemon's side of first audio, when the run recorded it."""
    if not d or not d["first_audio"]["count"]:
        return []
    fa, q = d["first_audio"], d["queued"]
    return [f"  in daemon   p50 {_ms(fa['p50'])}  p95 {_ms(fa['p95'])}  p99 {_ms(fa['p99'])}  max {_ms(fa['max'])} ms "
            f"(of which waiting for admission p50 {_ms(q['p50'])}  p99 {_ms(q['p99'])} ms)"]


def _settled(v: float | None) -> str:
    return "NOT within 10 s" if v is None else f"after {v:.2f} s"


def fmt_fill(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def write_plot(report: dict[str, Any], latencies_ms: list[float], path: str | Path) -> None:
    """Latency histogram + active streams / slots over time, one PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("the plot needs matplotlib: pip install -e '.[loadtest]'") from exc
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    if latencies_ms:
        ax1.hist(latencies_ms, bins=min(50, max(5, len(latencies_ms) // 4)), color="tab:blue")
    for q, style in (("p50", ":"), ("p99", "--")):
        v = report["first_audio_ms"][q]
        if v is not None:
            ax1.axvline(v, color="k", linestyle=style, label=f"{q} {v:.0f} ms")
    ax1.axvline(P99_TARGET_MS, color="tab:red", alpha=0.5, label="target p99 150 ms")
    ax1.set_xlabel("first audio latency (ms)")
    ax1.set_ylabel("lines")
    ax1.legend()
    timeline = report["slots_timeline"]
    cfg = report["config"]
    ts = [s["t"] for s in timeline]
    ax2.plot(ts, [s["active_streams"] for s in timeline], label="active streams")
    ax2.plot(ts, [s["slots_in_use"] for s in timeline], label="slots in use")
    ax2.plot(ts, [s.get("client_in_flight", 0) for s in timeline], label="lines in flight (client)", alpha=0.7)
    if cfg["burst"] or (cfg["burst"] is None and cfg["scenario"] == "mixed"):
        ax2.axvline(cfg["duration_s"] / 2, color="tab:red", alpha=0.4, linestyle="--", label="burst")
    if timeline:
        total = timeline[-1]["slots_total"]
        peak = max(max(s["slots_in_use"], s["active_streams"], s.get("client_in_flight", 0)) for s in timeline)
        if total <= 1.5 * max(peak, 1):  # draw the ceiling only when it is in view
            ax2.axhline(total, color="grey", linestyle=":", label="slots total")
        ax2.set_title(f"{total} usable slots", fontsize=9)
    ax2.set_xlabel("time (s)")
    ax2.set_ylabel("count")
    ax2.legend(loc="upper left")
    if timeline and timeline[-1]["underruns"] > timeline[0]["underruns"]:
        ax3 = ax2.twinx()  # when the daemon fell behind: its cumulative underrun counter
        ax3.plot(ts, [s["underruns"] - timeline[0]["underruns"] for s in timeline], color="tab:red", linestyle=":")
        ax3.set_ylabel("daemon underruns (cumulative, dotted)", color="tab:red")
    fig.suptitle(f"npc-voice loadtest: {cfg['scenario']}, {cfg['streams']} streams, {cfg['duration_s']:g} s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
