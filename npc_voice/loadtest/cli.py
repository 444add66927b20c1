"""`npc-voice loadtest`: simulate N game characters against a running daemon.

    npc-voice loadtest --server 127.0.0.1:50051 --streams 64 --duration 60 \\
        --scenario mixed --report lt.json --plot lt.png

Prints a live progress line (stderr) and a summary; writes the JSON report and
the PNG plot when asked. Exit status 0 when the run worked (whatever the
numbers), 1 when the daemon could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

import grpc

from npc_voice.loadtest.client_sim import SCENARIOS, SimConfig, SimResult, Simulation
from npc_voice.loadtest.report import build_report, summary_text, write_json, write_plot

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``loadtest`` subcommand to the npc-voice CLI."""
    p = subparsers.add_parser("loadtest", help="simulate many game characters against a running daemon")
    p.add_argument("--server", default="127.0.0.1:50051", help="daemon address host:port (default %(default)s)")
    p.add_argument("--streams", type=int, default=16, help="simulated characters, one line in flight each")
    p.add_argument("--duration", type=float, default=30.0, help="seconds during which new lines start")
    p.add_argument("--scenario", choices=SCENARIOS, default="mixed", help="barks | conversation | mixed")
    p.add_argument("--jitter-ms", type=float, default=100.0, help="client playback pre-buffer (default 100)")
    p.add_argument("--rate", type=int, default=0, help="requested sample rate (0 = the character's default)")
    p.add_argument("--cancel-fraction", type=float, default=0.1, help="lines cancelled mid-line (default 0.1)")
    p.add_argument("--slow-readers", type=float, default=None, help="fraction of slow-reading clients")
    p.add_argument("--burst", action=argparse.BooleanOptionalAction, default=None, help="burst at half time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", metavar="FILE.json", help="write the JSON report here")
    p.add_argument("--plot", metavar="FILE.png", help="write the latency/slots plot here (needs matplotlib)")
    p.add_argument("--token", help="bearer token (prefer --token-env: command lines are visible to others)")
    p.add_argument("--token-env", metavar="VAR", help="environment variable holding the bearer token")
    p.add_argument("--compare-piper", action="store_true", help="also time Piper in-process on the same lines")
    p.add_argument("--quiet", action="store_true", help="no live progress line")
    p.set_defaults(func=cmd_loadtest)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    token = args.token
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise ValueError(f"--token-env {args.token_env}: that environment variable is not set")
    return SimConfig(
        server=args.server,
        streams=args.streams,
        duration_s=args.duration,
        scenario=args.scenario,
        jitter_ms=args.jitter_ms,
        sample_rate=args.rate,
        token=token,
        seed=args.seed,
        cancel_fraction=args.cancel_fraction,
        slow_reader_fraction=args.slow_readers,
        burst=args.burst,
        progress=not args.quiet,
    )


def run_loadtest(cfg: SimConfig, report_path: str | None = None, plot_path: str | None = None) -> dict[str, Any]:
    """Run one simulation; write the report/plot if paths are given; return the report."""
    result: SimResult = asyncio.run(Simulation(cfg).run())
    report = build_report(result)
    if report_path:
        write_json(report, report_path)
    if plot_path:
        latencies = [v for r in result.lines if (v := r.first_audio_ms) is not None]
        write_plot(report, latencies, plot_path)
    return report


def cmd_loadtest(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    try:
        report = run_loadtest(cfg, args.report, args.plot)
    except grpc.aio.AioRpcError as e:
        print(f"npc-voice loadtest: {cfg.server}: {e.code().name}: {e.details()}")
        return 1
    print(summary_text(report))
    if args.report:
        print(f"report: {args.report}")
    if args.plot:
        print(f"plot:   {args.plot}")
    if args.compare_piper:
        from npc_voice.loadtest.piper_compare import compare_piper, piper_summary

        piper = compare_piper(cfg.scenario)
        print(piper_summary(piper))
        if args.report:
            report["piper"] = piper
            write_json(report, args.report)
    return 0
