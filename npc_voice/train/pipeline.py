"""``npc-voice train --out DIR``: a voice from nothing, every stage resumable.

    DIR/corpus.txt      build_corpus(n, seed)                       (npc_voice.train.corpus)
    DIR/teacher/        Piper teacher audio + durations per line   (npc_voice.train.teacher)
    DIR/teacher/feat_*  vocoder features of the teacher audio      (npc_voice.train.features)
    DIR/run/            training checkpoints (resumed)              (npc_voice.train.train)
    DIR/voice/          the exported voice + MODEL_CARD.md          (load with load_voice(DIR/voice))

Each stage skips the work already in DIR, so an interrupted run continues where it stopped.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from npc_voice.model.checkpoint import read_meta
from npc_voice.train.corpus import build_corpus
from npc_voice.train.model_card import write_model_card
from npc_voice.train.train import TrainConfig, default_symbols, load_init, model_config, train

log = logging.getLogger(__name__)

DEFAULT_N_UTTS = 9000  # ~8.5 h of teacher audio: 3000 template lines + 6000 of which half word-mix (corpus.py)
DEFAULT_HOURS = 3.5  # training budget; on a 2-core CPU the whole pipeline takes about 4 h
# (measured: teacher 9000 lines in 19 min with 2 workers, analysis ~10 min, then training)


def build_corpus_file(out: Path, n_utts: int, seed: int) -> list[str]:
    """DIR/corpus.txt, written once; an existing file is reused only if it matches (n, seed)."""
    lines = build_corpus(n_utts, seed)
    path = out / "corpus.txt"
    text = "\n".join(lines) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") != text:
        raise ValueError(f"{path} was written for another --n-utts/--seed; use a new --out directory")
    path.write_text(text, encoding="utf-8")
    return lines


def run_pipeline(out_dir: str | Path, *, n_utts: int = DEFAULT_N_UTTS, hours: float | None = DEFAULT_HOURS,
                 steps: int | None = None, seed: int = 0, workers: int = 2, threads: int = 1,
                 name: str = "default", init: str | None = None) -> Path:
    """Run (or resume) every stage; returns DIR/voice."""
    out = Path(out_dir)
    teacher_dir = out / "teacher"
    cfg = TrainConfig(data_dir=str(teacher_dir), run_dir=str(out / "run"), steps=steps, hours=hours,
                      seed=seed, threads=threads, name=name, init=init)
    if init is not None:  # an unusable --init fails now, not after an hour of synthesis
        symbols = default_symbols()
        load_init(init, model_config(cfg, symbols), symbols)
    out.mkdir(parents=True, exist_ok=True)

    log.info("1/5 corpus: %d lines (seed %d)", n_utts, seed)
    lines = build_corpus_file(out, n_utts, seed)

    log.info("2/5 teacher: Piper en_US-joe-medium -> %s", teacher_dir)
    # Imported here, not at the top: they need the optional `train` extra (piper, pyworld).
    from npc_voice.train import features, teacher

    teacher.synthesize(lines, teacher_dir, workers=workers)

    log.info("3/5 features -> %s/feat_*.npy", teacher_dir)
    features.run(teacher_dir, workers=workers, settle_s=0.0)  # the teacher is done: every file is whole

    log.info("4/5 train -> %s", out / "run")
    trained = train(cfg)

    log.info("5/5 export -> %s", out / "voice")
    voice_dir = export(trained, out / "voice", corpus_lines=len(lines))
    log.info("voice ready: %s (load_voice(%r))", voice_dir, str(voice_dir))
    return voice_dir


def export(src: Path, dst: Path, corpus_lines: int | None = None) -> Path:
    """Copy a trained voice directory and write its model card."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("model.safetensors", "config.json"):
        shutil.copyfile(src / f, dst / f)
    write_model_card(dst, read_meta(dst), corpus_lines=corpus_lines)
    return dst
