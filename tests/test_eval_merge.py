"""`npc-voice eval --merge`: runs over parts of the held-out lines give the report of one run over all
of them (a 66-line run takes hours niced on a shared machine; parts can run side by side).

Whisper and DNSMOS are replaced by fakes: the merge only does arithmetic on their per-line outputs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from npc_voice.config import parse_config
from npc_voice.model import tiny_voice
from npc_voice.say import render_text

pytest.importorskip("jiwer")

CONFIG = """
voices:
  tiny: {tiny: 3}
characters:
  hero: {voice: tiny}
  ghost: {voice: tiny, pitch: 2, style: whisper}
default_character: hero
"""
LINES = ["Good morning, traveller.", "The gate closes at dusk.", "Bring me three wolf pelts."]


def fake_asr(audio: np.ndarray) -> str:  # deterministic per clip: some lines are "misheard"
    return LINES[len(audio) % len(LINES)]


def fake_mos(audio: np.ndarray) -> dict[str, float]:
    x = float(np.abs(audio.astype(np.float64)).mean())
    return {"sig": 1.0 + (len(audio) % 7) / 2.0, "bak": 2.0 + x, "ovrl": 3.0 - x, "p808": 1.0 + (len(audio) % 5)}


def run(tmp_path: Path, name: str, lines: list[str], voice) -> dict:  # type: ignore[no-untyped-def]
    from npc_voice.train.evaluate import run_eval

    f = tmp_path / f"{name}.txt"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    teacher = tmp_path / "teacher"
    if not teacher.exists():
        teacher.mkdir()
        for i, text in enumerate(LINES):  # the tiny voice's own audio stands in for the teacher's
            audio = (np.clip(render_text(voice, text), -1, 1) * 32767).astype(np.int16)
            np.savez(teacher / f"utt_{i:05d}.npz", text=text, audio=audio, durations=np.zeros(1, np.int64),
                     symbols=np.array(["x"]))
    config = parse_config(CONFIG, source="test.yaml", base_dir=None)
    return run_eval(voice, f, tmp_path / name, teacher, ("teacher", "student"), config=config, asr=fake_asr,
                    mos=fake_mos)


def test_merged_parts_equal_one_run_over_all_lines(tmp_path: Path) -> None:
    from npc_voice.train.evaluate import merge_reports

    voice = tiny_voice(3)
    whole = run(tmp_path, "whole", LINES, voice)
    parts = [run(tmp_path, "a", LINES[:2], voice), run(tmp_path, "b", LINES[2:], voice)]
    merged = merge_reports(parts, tmp_path / "merged")
    assert merged["lines"] == 3 and [row["text"] for row in merged["per_line"]] == LINES
    assert set(merged["summary"]) == set(whole["summary"]) == {
        "teacher", "student", "character:hero", "character:ghost", "style:whisper", "style:shout"}
    wers = set()
    for name, s in whole["summary"].items():
        m = merged["summary"][name]
        assert "rtf" not in m  # render times are not in a report
        assert set(m) == set(s) - {"rtf"}
        for key in m:
            assert m[key] == pytest.approx(s[key], rel=1e-9, abs=1e-9), (name, key)
        wers.add(round(m["wer_pct"], 6))
    assert any(w > 0 for w in wers)  # the fake transcriber misheard something: WER was really compared
    # corpus WER over all words, not the mean of the parts' WERs (the parts have different word counts)
    name = next(n for n in whole["summary"] if parts[0]["summary"][n]["wer_pct"] != parts[1]["summary"][n]["wer_pct"])
    mean_of_parts = np.mean([p["summary"][name]["wer_pct"] for p in parts])
    assert merged["summary"][name]["wer_pct"] != pytest.approx(mean_of_parts)
    on_disk = json.loads((tmp_path / "merged" / "report.json").read_text(encoding="utf-8"))
    assert on_disk["summary"] == merged["summary"]


def test_merge_refuses_reports_of_different_evaluations(tmp_path: Path) -> None:
    from npc_voice.train.evaluate import merge_reports

    voice = tiny_voice(3)
    a, b = run(tmp_path, "a", LINES[:1], voice), run(tmp_path, "b", LINES[1:], voice)
    with pytest.raises(ValueError, match="voice_version"):
        merge_reports([a, b | {"voice_version": "other"}])
    with pytest.raises(ValueError, match="nothing"):
        merge_reports([])


def test_command_line_merge(tmp_path: Path) -> None:
    from npc_voice.train.evaluate import add_arguments, format_summary, run_from_args

    voice = tiny_voice(3)
    run(tmp_path, "a", LINES[:2], voice)
    run(tmp_path, "b", LINES[2:], voice)
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--merge", str(tmp_path / "a" / "report.json"), str(tmp_path / "b" / "report.json"),
                         "--out", str(tmp_path / "m")])
    report = run_from_args(args)
    assert report["lines"] == 3 and (tmp_path / "m" / "report.json").exists()
    assert "style:whisper" in format_summary(report)
