"""Evaluation: intelligibility (Whisper WER) and closeness to the teacher, side by side.

    npc-voice eval [--voice DIR] [--lines FILE] [--out DIR] [--teacher-dir DIR] [--systems ...]
                   [--config F] [--characters C ...] [--styles S ...] [--no-dnsmos] [--threads N]
    npc-voice eval --merge PART/report.json ... --out DIR   (runs over parts of the lines -> one report)

Systems: ``teacher`` (Piper's own audio), ``resynth`` (teacher audio -> analysis -> our vocoder:
the ceiling the student can reach) and ``student`` (the voice model, durations predicted).
For closeness the student also renders each line with the teacher's durations, so frames align:
- MCD (dB): mel-cepstral distortion over speech frames, from cepstra c_1..c_24 of the 60-band mel
  log envelope (a DCT of our features; comparable between systems here, not with papers' SPTK MCD),
- f0 RMSE (cents) on frames voiced in both, voicing error (% of frames),
all measured by analysing the audio (npc_voice.train.features.analyse), never the model's outputs.
WER: Whisper-base (faster-whisper int8, offline), both sides normalized the same way (the
frontend's normalizer spells numbers, then lowercase, punctuation stripped).
Naturalness: DNSMOS SIG/BAK/OVRL/P.808 (npc_voice.train.naturalness) for every system, including each
character of the daemon config (``character:C``, rendered with the evaluated voice exactly as
``npc-voice say --character C`` renders) and each style on the default character (``style:S``).
Writes report.json and spectrogram.png in the output folder.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from npc_voice.audio import features as F
from npc_voice.train.asr import EXTRA_HINT, Transcriber, whisper_dir  # noqa: F401  (whisper_dir re-exported)

log = logging.getLogger(__name__)

MCD_ORDER = 24
GROSS_CENTS = 1200.0 * np.log2(1.2)  # a pitch error above 20 % (316 cents) counts as gross
SYSTEMS = ("teacher", "resynth", "student")
STYLES_EVALUATED = ("whisper", "shout")
_MCD_K = 10.0 / np.log(10.0) * np.sqrt(2.0)


@dataclass(frozen=True)
class TeacherLine:
    text: str
    audio: np.ndarray  # int16 [n] at 22050 Hz
    durations: np.ndarray | None  # frames per symbol, when known
    symbols: tuple[str, ...] | None
    seconds: float | None  # synthesis time, when synthesized here


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise SystemExit(f"evaluation needs {module!r}: {EXTRA_HINT} ({e})") from e


# -- text ----------------------------------------------------------------------------------------

def normalize_words(text: str) -> str:
    """Text -> lowercase words for WER: numbers spelled out by the frontend, punctuation dropped."""
    try:
        from npc_voice.frontend import normalize

        text = normalize(text)
    except Exception:  # a hypothesis the normalizer refuses is still scored, just unexpanded
        pass
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w\s]", "", text)
    return " ".join(text.split())


def word_error_rate(refs: list[str], hyps: list[str]) -> float:
    """Corpus WER (total edits / total reference words) after ``normalize_words``."""
    jiwer = _need("jiwer")
    pairs = [(normalize_words(r), normalize_words(h)) for r, h in zip(refs, hyps, strict=True)]
    pairs = [(r, h if h else "<empty>") for r, h in pairs if r]
    return float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]))


def read_lines(lines_file: str | Path | None) -> list[str]:
    path = Path(lines_file) if lines_file else Path(__file__).with_name("heldout.txt")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise ValueError(f"no lines in {str(path)!r}")
    return lines



# -- closeness to the teacher --------------------------------------------------------------------

def mel_cepstrum(feats: np.ndarray) -> np.ndarray:
    """[t, 68] features -> [t, MCD_ORDER] cepstral coefficients c_1.. of the mel log-amplitude envelope."""
    env = feats[:, F.ENV].astype(np.float64)  # natural log amplitude, N_ENV bands
    n = env.shape[1]
    k = np.arange(1, MCD_ORDER + 1)[:, None]
    basis = np.cos(np.pi * k * (np.arange(n)[None, :] + 0.5) / n) / n  # [order, n]: log|H| = c0 + 2 sum c_k cos
    return env @ basis.T


def compare_features(ref: np.ndarray, test: np.ndarray, speech: np.ndarray) -> dict[str, float]:
    """Frame-aligned teacher vs test features -> MCD (dB, speech frames), f0 RMSE (cents), voicing error (%)."""
    t = min(len(ref), len(test), len(speech))
    ref, test, speech = ref[:t], test[:t], speech[:t]
    diff = mel_cepstrum(ref[speech]) - mel_cepstrum(test[speech])
    mcd = float(np.mean(_MCD_K * np.sqrt((diff ** 2).sum(axis=1)))) if speech.any() else float("nan")
    v_ref, v_test = ref[:, F.VUV] > 0.5, test[:, F.VUV] > 0.5
    both = v_ref & v_test
    cents = 1200.0 / np.log(2.0) * (test[both, F.LF0] - ref[both, F.LF0])
    fine = np.abs(cents) <= GROSS_CENTS
    return {
        "mcd_db": mcd,
        "f0_rmse_cents": float(np.sqrt(np.mean(cents ** 2))) if both.any() else float("nan"),
        # gross pitch errors (> 20 %, mostly octave jumps) apart from the fine error on the other frames
        "f0_gross_error_pct": 100.0 * float(np.mean(~fine)) if both.any() else float("nan"),
        "f0_fine_rmse_cents": float(np.sqrt(np.mean(cents[fine] ** 2))) if fine.any() else float("nan"),
        "voicing_error_pct": 100.0 * float(np.mean(v_ref != v_test)),
        "frames": float(t),
    }


def speech_frames(audio: np.ndarray, floor_db: float = 40.0) -> np.ndarray:
    """[n_frames] bool: frames within ``floor_db`` of the loudest frame."""
    x = audio.astype(np.float64)[: len(audio) // F.HOP * F.HOP].reshape(-1, F.HOP)
    db = 10.0 * np.log10((x ** 2).mean(axis=1) + 1e-12)
    return db > db.max() - floor_db


# -- systems -------------------------------------------------------------------------------------

def teacher_lines(texts: list[str], teacher_dir: str | Path | None) -> list[TeacherLine]:
    """Teacher audio for every line: from a folder of utt_*.npz (matched by text) or Piper in-process."""
    found: dict[str, TeacherLine] = {}
    if teacher_dir is not None:
        for path in sorted(Path(teacher_dir).glob("utt_*.npz")):
            with np.load(path) as z:
                found[str(z["text"])] = TeacherLine(str(z["text"]), z["audio"], z["durations"],
                                                    tuple(str(s) for s in z["symbols"]), None)
    from npc_voice.frontend import normalize, text_to_phonemes

    out: list[TeacherLine] = []
    piper = None
    for text in texts:
        hit = found.get(text) or found.get(normalize(text))
        if hit is None:
            from npc_voice.train import teacher

            if piper is None:
                piper = teacher.load_voice(threads=2)
            ph = text_to_phonemes(text)
            t0 = time.perf_counter()
            utt = teacher.synthesize_symbols(piper, ph.symbols)
            hit = TeacherLine(text, utt.audio, utt.durations, ph.symbols, time.perf_counter() - t0)
        out.append(hit)
    return out


def load_student(voice: Any, postfilter: float | None = None) -> Any:
    """A VoiceModel, or a voice folder (None = the shipped default). ``postfilter`` replaces its vocoder's."""
    from npc_voice.model import load_voice

    model = load_voice(voice) if voice is None or isinstance(voice, (str, Path)) else voice
    if postfilter is not None:
        from npc_voice.audio.vocoder import Vocoder

        model.vocoder = Vocoder(postfilter=postfilter).to(model.device)
    return model


def render_student(model: Any, tl: TeacherLine) -> tuple[np.ndarray, float, np.ndarray | None]:
    """-> (audio with predicted durations, render seconds, audio with the teacher's durations or None)."""
    from npc_voice.frontend import text_to_phonemes

    ph = text_to_phonemes(tl.text)
    t0 = time.perf_counter()
    free = model.render_prepared(model.prepare(ph))
    seconds = time.perf_counter() - t0
    aligned = None
    if tl.durations is not None and tl.symbols == ph.symbols:
        aligned = model.render_prepared(model.prepare(ph, durations=[int(d) for d in tl.durations]))
    else:
        log.warning("no teacher durations for %r (symbols differ): closeness not measured", tl.text[:40])
    return free, seconds, aligned


def to_int16(x: np.ndarray) -> np.ndarray:
    return x if x.dtype == np.int16 else (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def spectrogram_png(path: Path, rows: list[tuple[str, np.ndarray]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 2.6 * len(rows)), sharex=True, squeeze=False)
    for ax, (name, audio) in zip(axes[:, 0], rows, strict=True):
        x = audio.astype(np.float64) / (32768.0 if audio.dtype == np.int16 else 1.0)
        ax.specgram(x + 1e-6 * np.random.default_rng(0).standard_normal(len(x)), NFFT=1024, Fs=F.SAMPLE_RATE,
                    noverlap=1024 - 128, cmap="magma", vmin=-120, vmax=-20)
        ax.set_ylim(0, 8000)
        ax.set_ylabel(f"{name}\nHz")
    axes[0, 0].set_title(title[:100])
    axes[-1, 0].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


@dataclass
class Rendered:
    """Audio of every system for every line, and what rendering took."""

    audio: dict[str, list[np.ndarray]]  # system -> per line (int16 teacher or float32)
    aligned: dict[str, dict[int, np.ndarray]]  # system -> line index -> audio on the teacher's frames
    render_s: dict[str, float]


def render_core(teachers: list[TeacherLine], systems: tuple[str, ...], model: Any) -> Rendered:
    """Teacher, vocoder resynthesis and student audio for every line."""
    import torch

    from npc_voice.audio.vocoder import Vocoder
    from npc_voice.train.features import analyse

    vocoder = Vocoder()
    r = Rendered({s: [] for s in systems}, {s: {} for s in systems if s != "teacher"}, {s: 0.0 for s in systems})
    for i, tl in enumerate(teachers):
        if "teacher" in systems:
            r.audio["teacher"].append(tl.audio)
            r.render_s["teacher"] += tl.seconds or 0.0
        if "resynth" in systems:
            t0 = time.perf_counter()
            y = vocoder.synthesize(torch.from_numpy(analyse(tl.audio))).numpy()
            r.render_s["resynth"] += time.perf_counter() - t0
            r.audio["resynth"].append(y)
            r.aligned["resynth"][i] = y
        if "student" in systems and model is not None:
            free, secs, al = render_student(model, tl)
            r.audio["student"].append(free)
            r.render_s["student"] += secs
            if al is not None:
                r.aligned["student"][i] = al
    return r


def cast_systems(config: Any, characters: tuple[str, ...] | None, styles: tuple[str, ...]
                 ) -> list[tuple[str, str, str]]:
    """(system name, character id, style) for each configured character (None = all) and style."""
    names = list(config.characters) if characters is None else list(characters)
    out = [(f"character:{c}", c, "") for c in names]
    return out + [(f"style:{s}", config.default_character, s) for s in styles]


def render_cast(texts: list[str], config: Any, model: Any, cast: list[tuple[str, str, str]]) -> Rendered:
    """Every character (and style) through the same engine path `npc-voice say --character C` uses."""
    from npc_voice.say import render_local

    r = Rendered({}, {}, {})
    for system, character, style in cast:
        t0 = time.perf_counter()
        pcm = [x for _, x, _ in render_local(config, character, texts, rate=F.SAMPLE_RATE, voice=model, style=style)]
        r.render_s[system] = time.perf_counter() - t0
        r.audio[system] = pcm
        log.info("rendered %s (%d lines, %.1f s)", system, len(pcm), r.render_s[system])
    return r


def score_lines(texts: list[str], teachers: list[TeacherLine], r: Rendered, asr: Any, mos: Any
                ) -> list[dict[str, Any]]:
    """Per line: each system's transcript and DNSMOS scores, and closeness of the aligned renders."""
    from npc_voice.train.features import analyse

    per_line: list[dict[str, Any]] = []
    for i, tl in enumerate(teachers):
        row: dict[str, Any] = {"text": texts[i]}
        for name, clips in r.audio.items():
            row[f"{name}_asr"] = asr(clips[i])
            if mos is not None:
                row.update({f"{name}_dnsmos_{k}": v for k, v in mos(clips[i]).items()})
        aligned = {name: a[i] for name, a in r.aligned.items() if i in a}
        if aligned:
            ref, speech = analyse(tl.audio), speech_frames(tl.audio)
            for name, audio in aligned.items():
                metrics = compare_features(ref, analyse(to_int16(audio)), speech)
                row.update({f"{name}_{k}": v for k, v in metrics.items() if k != "frames"})
        per_line.append(row)
        log.info("%d/%d %s", i + 1, len(teachers), {k: v for k, v in row.items() if k.endswith("_asr")})
    return per_line


CLOSENESS = ("mcd_db", "f0_rmse_cents", "f0_gross_error_pct", "f0_fine_rmse_cents", "voicing_error_pct")


def summarize(texts: list[str], per_line: list[dict[str, Any]], r: Rendered) -> dict[str, dict[str, float]]:
    """System -> WER (%), mean DNSMOS, closeness means and real-time factor."""
    summary: dict[str, dict[str, float]] = {}
    for name, clips in r.audio.items():
        if len(clips) != len(texts):
            continue
        s = summarize_lines(texts, per_line, name)
        audio_s = sum(len(c) for c in clips) / F.SAMPLE_RATE
        if r.render_s.get(name, 0.0) > 0:
            s["rtf"] = r.render_s[name] / max(audio_s, 1e-9)
        summary[name] = s
    return summary


def summarize_lines(texts: list[str], per_line: list[dict[str, Any]], name: str) -> dict[str, float]:
    """One system's corpus WER (%) and per-line means (DNSMOS, closeness) from the per-line rows."""
    from npc_voice.train.naturalness import MOS_KEYS

    s: dict[str, float] = {"wer_pct": 100.0 * word_error_rate(texts, [row[f"{name}_asr"] for row in per_line])}
    for key in [f"dnsmos_{k}" for k in MOS_KEYS] + list(CLOSENESS):
        vals = [row[f"{name}_{key}"] for row in per_line if np.isfinite(row.get(f"{name}_{key}", np.nan))]
        if vals:
            s[key] = float(np.mean(vals))
    return s


def merge_reports(reports: list[dict[str, Any]], out_dir: str | Path | None = None) -> dict[str, Any]:
    """Reports of runs over consecutive parts of one line list (``--limit N``, then ``--lines`` with the
    rest) -> the report of one run over all the lines: WER is recomputed over the whole corpus (not a
    mean of the parts' WERs), DNSMOS and closeness are means over every line. The render real-time
    factor is left out (a report keeps no render times). The parts must agree on voice, config, cast
    and postfilter. Written to out_dir/report.json when out_dir is given."""
    if not reports:
        raise ValueError("nothing to merge")
    same = ("voice", "voice_version", "student_postfilter", "config", "cast", "definitions")
    for r in reports[1:]:
        differ = [k for k in same if r.get(k) != reports[0].get(k)]
        if differ:
            raise ValueError(f"reports differ in {differ}: not parts of one evaluation")
    per_line = [row for r in reports for row in r["per_line"]]
    texts = [row["text"] for row in per_line]
    names = [n for n in reports[0]["summary"] if all(n in r["summary"] for r in reports)]
    report = {k: reports[0].get(k) for k in same}
    report |= {"lines": len(texts), "lines_file": " + ".join(f"{r['lines_file']} ({r['lines']})" for r in reports),
               "summary": {n: summarize_lines(texts, per_line, n) for n in names}, "per_line": per_line}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    return report


def run_eval(voice: Any = None, lines_file: str | Path | None = None, out_dir: str | Path = "eval_out",
             teacher_dir: str | Path | None = None, systems: tuple[str, ...] = SYSTEMS, limit: int | None = None,
             beam_size: int = 5, postfilter: float | None = None, *, config: Any = None,
             characters: tuple[str, ...] | None = None, styles: tuple[str, ...] = STYLES_EVALUATED,
             asr: Any = None, mos: Any = "dnsmos") -> dict[str, Any]:
    """Render, transcribe, score and compare; returns (and writes to out_dir/report.json) the report.

    ``config``: a loaded daemon Config (None = the embedded voices.yaml) whose ``characters`` (None = all;
    () = none) and ``styles`` (on the default character) are rendered with the evaluated voice.
    ``asr``: audio -> text (None = Whisper-base); ``mos``: audio -> DNSMOS dict ("dnsmos" = the real
    one, None = skip naturalness)."""
    from npc_voice.config import load_config

    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        raise ValueError(f"unknown systems {bad}; choose from {SYSTEMS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = read_lines(lines_file)[:limit]
    teachers = teacher_lines(texts, teacher_dir)
    asr = asr if asr is not None else Transcriber(beam_size=beam_size)
    if mos == "dnsmos":
        from npc_voice.train.naturalness import DnsMos

        mos = DnsMos()
    model = load_student(voice, postfilter)
    rendered = render_core(teachers, systems, model)
    config = config if config is not None else load_config(None)
    cast = cast_systems(config, characters, styles)
    extra = render_cast(texts, config, model, cast)
    rendered.audio.update(extra.audio)
    rendered.render_s.update(extra.render_s)
    per_line = score_lines(texts, teachers, rendered, asr, mos)
    report = {"lines": len(texts), "lines_file": str(lines_file or "npc_voice/train/heldout.txt"),
              "voice": getattr(model, "name", None), "voice_version": getattr(model, "version", None),
              "student_postfilter": postfilter, "config": config.source,
              "cast": {name: {"character": c, "style": st or config.characters[c].style or "normal"}
                       for name, c, st in cast},
              "summary": summarize(texts, per_line, rendered), "per_line": per_line,
              "definitions": DEFINITIONS | {"wer": f"Whisper-base int8, beam {beam_size}, lowercase, "
                                                   "punctuation stripped, numbers spelled"}}
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    first = [("teacher", teachers[0].audio)] + [(n, a[0]) for n, a in rendered.aligned.items() if 0 in a]
    spectrogram_png(out / "spectrogram.png", first, texts[0])
    return report


DEFINITIONS = {
    "mcd": f"c1..c{MCD_ORDER} of the 60-band mel log envelope, frames within 40 dB of peak",
    "alignment": "resynth/student rendered on the teacher's frames (teacher durations)",
    "dnsmos": "speechmos 0.0.1.1 DNSMOS (P.835 sig/bak/ovrl, P.808), 16 kHz, peak-normalised, mean over lines",
    "cast": "character:C = `npc-voice say --character C` (engine, configured controls); "
            "style:S = the default character with the per-request style override S",
}


def format_summary(report: dict[str, Any]) -> str:
    cols = ("wer_pct", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808", "mcd_db", "f0_fine_rmse_cents",
            "voicing_error_pct", "rtf")
    heads = ("WER %", "SIG", "BAK", "OVRL", "P.808", "MCD dB", "f0 fine c", "V/UV err %", "RTF")
    lines = [f"{'system':20s} " + " ".join(f"{h:>10s}" for h in heads)]
    for name, s in report["summary"].items():
        lines.append(f"{name:20s} " + " ".join(f"{s[c]:10.2f}" if c in s else f"{'-':>10s}" for c in cols))
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--voice", help="voice folder (model.safetensors + config.json); default: the shipped voice")
    p.add_argument("--lines", help="text file, one line per utterance (default: npc_voice/train/heldout.txt)")
    p.add_argument("--out", default="eval_out", help="output folder for report.json and spectrogram.png")
    p.add_argument("--teacher-dir", help="folder of teacher utt_*.npz for these lines (else Piper in-process)")
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    p.add_argument("--limit", type=int, help="only the first N lines")
    p.add_argument("--beam", type=int, default=5, help="Whisper beam size")
    p.add_argument("--config", help="daemon config whose characters are evaluated (default: the embedded voices.yaml)")
    p.add_argument("--characters", nargs="*", metavar="C",
                   help="only these characters (default: every character in the config; no names = none)")
    p.add_argument("--styles", nargs="*", default=list(STYLES_EVALUATED), metavar="S",
                   help="styles rendered on the default character (default: whisper shout; no names = none)")
    p.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS naturalness (WER and closeness only)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for Whisper and DNSMOS")
    p.add_argument("--postfilter", type=float, help="render the student with this vocoder postfilter (0 = off)")
    p.add_argument("--merge", nargs="+", metavar="REPORT",
                   help="render nothing: merge report.json files of runs over consecutive parts of one line list "
                        "(e.g. --limit 33, then --lines with the rest) into --out/report.json")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """run_eval with the command line's options (npc-voice eval and python -m npc_voice.train.evaluate); with
    ``--merge``, the merged report of earlier runs instead."""
    from npc_voice.config import load_config

    if getattr(args, "merge", None):
        return merge_reports([json.loads(Path(f).read_text(encoding="utf-8")) for f in args.merge], args.out)
    mos: Any = None
    if not args.no_dnsmos:
        from npc_voice.train.naturalness import DnsMos

        mos = DnsMos(threads=args.threads)
    return run_eval(args.voice, args.lines, args.out, args.teacher_dir, tuple(args.systems), args.limit, args.beam,
                    args.postfilter, config=load_config(args.config),
                    characters=None if args.characters is None else tuple(args.characters),
                    styles=tuple(args.styles), asr=Transcriber(threads=args.threads, beam_size=args.beam), mos=mos)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="npc-voice eval", description=__doc__.split("\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = run_from_args(args)
    print(format_summary(report))
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
