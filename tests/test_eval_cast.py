"""Styles and characters end to end on a tiny voice, and `npc-voice eval`'s naturalness outputs.

Whisper is replaced by a fake transcriber (its weights are a 145 MB download); DNSMOS is the real
predictor from speechmos (its ONNX models ship in the package: the dev extra installs it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from npc_voice.config import ConfigError, parse_config
from npc_voice.engine.api import VoiceControls, controls_row
from npc_voice.model import api, tiny_voice
from npc_voice.model.voice import DEFAULT_CONTROLS
from npc_voice.say import render_text
from npc_voice.server.convert import resolve_controls
from npc_voice.server.errors import RequestError
from npc_voice.v1 import npc_voice_pb2 as pb

CONFIG = """
voices:
  tiny: {tiny: 3}
characters:
  hero: {voice: tiny}
  ghost: {voice: tiny, pitch: 2, formant: 1.1, breathiness: 0.5, style: whisper}
default_character: hero
"""
LINES = ["Good morning, traveller.", "The gate closes at dusk."]


def config():  # type: ignore[no-untyped-def]
    return parse_config(CONFIG, source="test.yaml", base_dir=None)


def test_controls_row_folds_the_style_into_the_columns() -> None:
    assert controls_row(VoiceControls()) == DEFAULT_CONTROLS
    assert controls_row(VoiceControls(style="normal")) == DEFAULT_CONTROLS
    whisper = controls_row(VoiceControls(style="whisper", volume=2.0))
    shout = controls_row(VoiceControls(style="shout", pitch_semitones=1.0))
    assert len(whisper) == len(shout) == api.N_CONTROLS
    assert whisper[api.CONTROL_VOICING] == 0.0 and whisper[api.CONTROL_VOLUME] < 2.0
    assert shout[api.CONTROL_PITCH] == pytest.approx(2.0 ** ((1.0 + api.STYLES["shout"].pitch_semitones) / 12.0))
    assert shout[api.CONTROL_TILT] > 0.0 and shout[api.CONTROL_VOLUME] > 1.0 and shout[api.CONTROL_VOICING] == 1.0
    with pytest.raises(ValueError, match="sing"):
        controls_row(VoiceControls(style="sing"))


def test_config_style_field() -> None:
    assert config().characters["ghost"].style == "whisper" and config().characters["hero"].style == ""
    with pytest.raises(ConfigError, match="characters.hero.style"):
        parse_config(CONFIG.replace("hero: {voice: tiny}", "hero: {voice: tiny, style: sing}"), source="t",
                     base_dir=None)


def test_style_override_replaces_the_characters_style() -> None:
    ghost = config().characters["ghost"]
    assert resolve_controls(ghost, pb.VoiceOverrides()).style == "whisper"
    assert resolve_controls(ghost, pb.VoiceOverrides(style="shout")).style == "shout"
    assert resolve_controls(ghost, pb.VoiceOverrides(style="")).style == "whisper"  # empty = the character's
    with pytest.raises(RequestError, match="sing"):
        resolve_controls(ghost, pb.VoiceOverrides(style="sing"))


def test_whisper_style_through_the_engine_has_no_harmonics() -> None:
    from npc_voice.say import render_local

    voice = tiny_voice(3)
    normal, whisper = ([x for _, x, _ in render_local(config(), "hero", LINES[:1], voice=voice, style=s)][0]
                       for s in ("", "whisper"))
    assert len(normal) == len(whisper) > 0 and np.isfinite(whisper).all()
    assert not np.allclose(normal, whisper)


def test_eval_reports_dnsmos_for_every_system_character_and_style(tmp_path: Path) -> None:
    pytest.importorskip("speechmos")
    pytest.importorskip("jiwer")
    from npc_voice.train.evaluate import format_summary, run_eval
    from npc_voice.train.naturalness import DnsMos

    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    voice = tiny_voice(3)
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    for i, text in enumerate(LINES):  # the tiny voice's own audio stands in for the teacher's
        audio = (np.clip(render_text(voice, text), -1, 1) * 32767).astype(np.int16)
        np.savez(teacher / f"utt_{i:05d}.npz", text=text, audio=audio, durations=np.zeros(1, np.int64),
                 symbols=np.array(["x"]))
    report = run_eval(voice, lines, tmp_path / "out", teacher, ("teacher", "student"), config=config(),
                      asr=lambda audio: LINES[0], mos=DnsMos(threads=1))
    names = {"teacher", "student", "character:hero", "character:ghost", "style:whisper", "style:shout"}
    assert set(report["summary"]) == names
    for name in names:
        s = report["summary"][name]
        assert 1.0 <= s["dnsmos_ovrl"] <= 5.0 and 1.0 <= s["dnsmos_p808"] <= 5.0
        assert {"dnsmos_sig", "dnsmos_bak", "wer_pct"} <= set(s)
    assert report["summary"]["student"]["wer_pct"] > 0.0  # the second line was "heard" as the first
    assert report["cast"]["style:whisper"] == {"character": "hero", "style": "whisper"}
    assert report["cast"]["character:ghost"]["style"] == "whisper"  # its YAML style
    assert all("character:ghost_dnsmos_ovrl" in row for row in report["per_line"])
    table = format_summary(report)
    assert "OVRL" in table and "style:whisper" in table and "character:ghost" in table
    assert (tmp_path / "out" / "report.json").exists()
