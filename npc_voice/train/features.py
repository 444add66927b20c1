"""Feature analysis: teacher audio -> per-frame vocoder parameters (layout in npc_voice.audio.features).

    python -m npc_voice.train.features --data /work/data/teacher [--watch]

writes ``feat_XXXXX.npy`` ([n_frames, FEATURE_DIM] float32) beside every ``utt_XXXXX.npz``, skipping
the ones already done (resumable), and ``stats.npz`` (per-dimension mean/std over the corpus).
With ``--watch`` it keeps polling for new utterances until none arrived for ``--idle`` seconds.

Pitch and voicing come from ``npc_voice.train.pitch`` (short-window NCCF + Viterbi, 60-400 Hz:
WORLD's harvest/d4c labelled the teacher's creaky vowels unvoiced); the envelope from WORLD's
cheaptrick (fft 1024) and aperiodicity from d4c (its own voicing veto off), at the centre of
every 256-sample frame.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np

from npc_voice.audio.features import (
    AP,
    AP_EDGES_HZ,
    AP_MIN_DB,
    ENV,
    ENV_FLOOR,
    FEATURE_DIM,
    HOP,
    LF0,
    LF0_DEFAULT,
    SAMPLE_RATE,
    VUV,
    env_filterbank,
)
from npc_voice.train.pitch import track

log = logging.getLogger(__name__)

FFT_SIZE = 1024  # cheaptrick/d4c; 513 bins over 0..11025 Hz
_EXTRA_HINT = "pip install -e '.[train]'"


def load_pyworld() -> ModuleType:
    """Import pyworld's extension module.

    pyworld 0.3.5's ``__init__`` imports ``pkg_resources``, which setuptools >= 81 no longer
    ships; the compiled module itself needs nothing of it, so load that directly.
    """
    try:
        import pyworld  # noqa: F401

        return sys.modules["pyworld"]
    except ModuleNotFoundError as e:
        if e.name != "pkg_resources":
            raise ModuleNotFoundError(f"feature analysis needs pyworld: {_EXTRA_HINT}") from e
    spec = importlib.util.find_spec("pyworld")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"feature analysis needs pyworld: {_EXTRA_HINT}")
    cached = sys.modules.get("pyworld.pyworld")
    if cached is not None:
        return cached
    so = [p for p in os.listdir(spec.submodule_search_locations[0]) if p.startswith("pyworld.") and p.endswith(".so")]
    if not so:
        raise ModuleNotFoundError(f"pyworld is installed but its compiled module is missing: {_EXTRA_HINT}")
    path = os.path.join(spec.submodule_search_locations[0], so[0])
    ext_spec = importlib.util.spec_from_file_location("pyworld.pyworld", path)
    assert ext_spec is not None and ext_spec.loader is not None
    mod = importlib.util.module_from_spec(ext_spec)
    ext_spec.loader.exec_module(mod)
    sys.modules["pyworld.pyworld"] = mod
    return mod


_FILTERBANK = env_filterbank(FFT_SIZE // 2 + 1)  # [N_ENV, 513]
_AP_BIN_BANDS = np.searchsorted(np.asarray(AP_EDGES_HZ[1:-1]), np.linspace(0.0, SAMPLE_RATE / 2, FFT_SIZE // 2 + 1),
                                side="right")  # [513] band index of every bin


def world_analyse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 audio in [-1, 1] -> (f0 [n], sp [n, 513] power, ap [n, 513]) at frame centres.

    n = len(x) // HOP; frame i is analysed at sample i*HOP + HOP/2.
    """
    pw = load_pyworld()
    n = len(x) // HOP
    if n == 0:
        raise ValueError(f"audio of {len(x)} samples is shorter than one {HOP}-sample frame")
    f0 = track(x)
    t = (np.arange(n) + 0.5) * HOP / SAMPLE_RATE
    sp = pw.cheaptrick(x, f0, t, SAMPLE_RATE, fft_size=FFT_SIZE)
    # threshold 0: d4c's own voicing test (LoveTrain) would mark the creaky vowels fully aperiodic
    ap = pw.d4c(x, f0, t, SAMPLE_RATE, fft_size=FFT_SIZE, threshold=0.0)
    return f0, sp, ap


def _interp_lf0(lf0: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    if not voiced.any():
        return np.full(len(lf0), LF0_DEFAULT)
    idx = np.arange(len(lf0))
    return np.interp(idx, idx[voiced], lf0[voiced])


def world_to_features(f0: np.ndarray, sp: np.ndarray, ap: np.ndarray) -> np.ndarray:
    """WORLD parameters -> [n, FEATURE_DIM] float32 in the npc_voice.audio.features layout."""
    n = len(f0)
    feats = np.zeros((n, FEATURE_DIM), dtype=np.float64)
    feats[:, LF0] = np.log(np.maximum(f0, 1e-3))
    feats[:, VUV] = (f0 > 0).astype(np.float64)
    log_amp = 0.5 * np.log(np.maximum(sp, 1e-30))  # [n, 513] natural log of |H|
    feats[:, ENV] = np.maximum(log_amp @ _FILTERBANK.T, ENV_FLOOR)
    ap_db = 10.0 * np.log10(np.clip(ap, 1e-12, 1.0))  # [n, 513]
    bands = np.stack([ap_db[:, _AP_BIN_BANDS == b].mean(axis=1) for b in range(AP.stop - AP.start)], axis=1)
    feats[:, AP] = np.clip(bands, AP_MIN_DB, 0.0)
    feats[:, LF0] = _interp_lf0(feats[:, LF0], feats[:, VUV] > 0.5)
    return feats.astype(np.float32)


def analyse(audio: np.ndarray) -> np.ndarray:
    """int16 (or float in [-1, 1]) audio at 22050 Hz -> features [len(audio) // 256, FEATURE_DIM] float32."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"expected mono 1-D audio, got shape {audio.shape}")
    x = audio.astype(np.float64) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float64)
    return world_to_features(*world_analyse(x))


def _feat_path(utt: Path) -> Path:
    return utt.with_name(utt.name.replace("utt_", "feat_", 1).replace(".npz", ".npy"))


def _analyse_file(utt: str) -> tuple[str, int]:
    """Returns (path, n_frames), or (path, -1) if the file could not be read (retried on the next poll)."""
    path = Path(utt)
    try:
        with np.load(path) as z:
            audio = z["audio"]
        feats = analyse(audio)
    except Exception as e:  # a half-written or corrupt npz must not stop a long run
        logging.getLogger(__name__).warning("skipping %s: %s", utt, e)
        return utt, -1
    out = _feat_path(path)
    tmp = out.with_suffix(".tmp.npy")
    np.save(tmp, feats)
    os.replace(tmp, out)  # atomic: a half-written file never looks done
    return utt, len(feats)


def pending(data_dir: Path, settle_s: float = 2.0) -> list[str]:
    """Utterances without features. Files younger than ``settle_s`` are left for the next poll (a
    writer may still be busy); the pipeline passes 0 once the teacher has finished."""
    utts = sorted(u for u in glob.glob(str(data_dir / "utt_*.npz")) if not u.endswith(".tmp.npz"))
    settled = time.time() - settle_s
    return [u for u in utts if not _feat_path(Path(u)).exists() and os.path.getmtime(u) <= settled]


def write_stats(data_dir: Path) -> Path:
    """Per-dimension mean/std over every feat_*.npy of data_dir -> stats.npz (mean, std, n_frames)."""
    total = np.zeros(FEATURE_DIM)
    total_sq = np.zeros(FEATURE_DIM)
    count = 0
    for f in sorted(glob.glob(str(data_dir / "feat_*.npy"))):
        if f.endswith(".tmp.npy"):
            continue
        x = np.load(f).astype(np.float64)
        total += x.sum(0)
        total_sq += (x * x).sum(0)
        count += len(x)
    if count == 0:
        raise FileNotFoundError(f"no feat_*.npy in {data_dir}")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 1e-8))
    out = data_dir / "stats.npz"
    np.savez(out, mean=mean.astype(np.float32), std=std.astype(np.float32), n_frames=np.int64(count))
    return out


def run(data_dir: Path, workers: int = 2, watch: bool = False, idle_s: float = 600.0, poll_s: float = 30.0,
        settle_s: float = 2.0) -> int:
    """Analyse every pending utterance; with ``watch``, keep polling until idle for ``idle_s``."""
    done = 0
    failed_last = -1  # pending count right after the previous pass: unchanged means nothing new
    last_new = time.monotonic()
    with ProcessPoolExecutor(max_workers=workers, initializer=_nice) as pool:
        while True:
            todo = pending(data_dir, settle_s)
            if todo and len(todo) != failed_last:
                last_new = time.monotonic()
                t0 = time.monotonic()
                for i, (_, n_frames) in enumerate(pool.map(_analyse_file, todo, chunksize=4), 1):
                    done += n_frames >= 0
                    if i % 50 == 0 or i == len(todo):
                        rate = i / max(time.monotonic() - t0, 1e-9)
                        print(f"\r{data_dir.name}: {i}/{len(todo)} analysed ({rate:.1f} utt/s)", end="", flush=True)
                print(flush=True)
                if done:
                    write_stats(data_dir)
                failed_last = len(pending(data_dir, settle_s))
                last_new = time.monotonic()  # idle counts from the end of a pass, not its start
            if not watch or time.monotonic() - last_new > idle_s:
                break
            time.sleep(poll_s)
    return done


def _nice() -> None:
    try:
        os.nice(5)
    except OSError:  # not permitted: run at the inherited priority
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m npc_voice.train.features", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder of utt_*.npz (teacher data)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--watch", action="store_true", help="keep polling for new utterances")
    p.add_argument("--idle", type=float, default=600.0, help="with --watch: stop after this many seconds idle")
    p.add_argument("--redo", action="store_true", help="re-analyse every utterance (features from an older analysis)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.data.is_dir():
        p.error(f"--data {str(args.data)!r} is not a folder")
    if args.redo:
        for f in args.data.glob("feat_*.npy"):
            f.unlink()
    n = run(args.data, workers=args.workers, watch=args.watch, idle_s=args.idle)
    print(f"{n} utterances analysed in {args.data}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
