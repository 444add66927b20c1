"""Configuration: the embedded default, validation messages (file + key path + reason), reload."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from npc_voice.config import (
    CharacterIdError,
    ConfigError,
    UnknownCharacterError,
    load_config,
    parse_config,
)
from npc_voice.server.reload import ConfigStore

GOOD = """
voices:
  tiny: {tiny: 0}
characters:
  guard: {voice: tiny, pitch: -3, formant: 0.9, lexicon: {Eldoria: ɛlˈdɔːɹiə}}
  goblin: {voice: tiny, pitch: 6, format: {encoding: f32le, sample_rate: 16000}}
default_character: guard
server: {slots: 8, port: 0}
"""


def write(tmp_path: Path, text: str, name: str = "voices.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_embedded_default_has_six_distinct_characters() -> None:
    config = load_config(None)
    assert len(config.characters) >= 6
    assert {"guard", "merchant", "child", "giant", "goblin", "narrator"} <= set(config.characters)
    controls = {(c.pitch, c.formant, c.speed, c.breathiness, c.volume) for c in config.characters.values()}
    assert len(controls) == len(config.characters), "characters must differ in their controls"
    assert config.voices["default"].kind == "default"
    assert config.server.host == "127.0.0.1"
    assert config.default_character in config.characters


def test_good_file_parses(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    guard = config.characters["guard"]
    assert guard.pitch == -3.0 and guard.formant == 0.9 and guard.voice == "tiny"
    assert dict(guard.lexicon) == {"eldoria": "ɛlˈdɔːɹiə"}  # keys lowercased
    goblin = config.characters["goblin"]
    assert (goblin.encoding, goblin.sample_rate) == ("f32le", 16000)
    assert config.voices["tiny"].kind == "tiny" and config.server.slots == 8


@pytest.mark.parametrize(
    ("edit", "key", "fragment"),
    [
        (("pitch: 6", "pitch: 99"), "characters.goblin.pitch", "99 is out of range [-24, 24]"),
        (("pitch: 6", "pitch: loud"), "characters.goblin.pitch", "'loud'"),
        (("voice: tiny, pitch: 6", "voice: nope, pitch: 6"), "characters.goblin.voice", "unknown voice 'nope'"),
        (("sample_rate: 16000", "sample_rate: 8000"), "characters.goblin.format.sample_rate", "8000"),
        (("encoding: f32le", "encoding: mp3"), "characters.goblin.format.encoding", "'mp3'"),
        (("pitch: 6", "pitch: 6, colour: red"), "characters.goblin.colour", "unknown key 'colour'"),
        (("default_character: guard", "default_character: king"), "default_character", "'king'"),
        (("slots: 8", "slots: -1"), "server.slots", "-1 is out of range"),
        (("slots: 8", "slots: 8, max_load: 20"), "server.max_load", "20 is out of range [0, 10]"),
        (("{tiny: 0}", "{tiny: 0, checkpoint: x}"), "voices.tiny", "exactly one"),
    ],
)
def test_validation_error_names_file_key_and_reason(
    tmp_path: Path, edit: tuple[str, str], key: str, fragment: str
) -> None:
    assert edit[0] in GOOD
    path = write(tmp_path, GOOD.replace(edit[0], edit[1]))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and key in message and fragment in message, message


def test_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "characters: [unclosed"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="at least one character"):
        parse_config("voices: {}", source="x.yaml", base_dir=None)


def test_resolve_character_ids(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.resolve("")[0] == "guard"
    cid, spec = config.resolve("goblin/42")
    assert cid == "goblin/42" and spec.name == "goblin"
    with pytest.raises(UnknownCharacterError, match="'dragon'"):
        config.resolve("dragon/1")
    for bad in ("guard/", "guard/has space", "guard/" + "x" * 65):
        with pytest.raises(CharacterIdError, match="malformed character id"):
            config.resolve(bad)


def make_store(path: Path) -> tuple[ConfigStore, list[str]]:
    from npc_voice.server.voices import build_voices

    config = load_config(path)
    added: list[str] = []
    voices = build_voices(config.voices.values(), "cpu")
    return ConfigStore(config, voices, str(path), "cpu", lambda v: added.extend(v)), added


def test_reload_swaps_valid_and_keeps_old_on_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, GOOD)
    store, added = make_store(path)
    new = GOOD.replace("  goblin:", "  giant: {voice: big, pitch: -9}\n  goblin:").replace(
        "tiny: {tiny: 0}", "tiny: {tiny: 0}\n  big: {tiny: 5}"
    )
    path.write_text(new, encoding="utf-8")
    assert store.reload()
    assert "giant" in store.config.characters and added == ["big"] and "big" in store.voices

    path.write_text("characters: [unclosed", encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="npc_voice.server.reload"):
        assert not store.reload()
    assert "giant" in store.config.characters  # old configuration kept
    assert "reload rejected" in caplog.text and "invalid YAML" in caplog.text

    path.write_text(GOOD.replace("pitch: 6", "pitch: 60"), encoding="utf-8")
    assert not store.reload()
    assert "characters.goblin.pitch" in caplog.text and "giant" in store.config.characters


def test_watch_reloads_on_file_change(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    store, _ = make_store(path)

    async def scenario() -> None:
        watcher = asyncio.create_task(store.watch(interval_s=0.05))
        try:
            await asyncio.sleep(0.1)
            path.write_text(GOOD.replace("pitch: 6", "pitch: 7"), encoding="utf-8")
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))  # coarse-mtime filesystems
            for _ in range(400):  # bounded wait, not a timing assertion
                if store.generation:
                    break
                await asyncio.sleep(0.05)
        finally:
            watcher.cancel()

    asyncio.run(scenario())
    assert store.generation == 1 and store.config.characters["goblin"].pitch == 7.0
