"""`npc-voice` CLI: say (in-process and through a daemon), --lines, voices, characters, serve."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest
from conftest import TINY_CONFIG, DaemonThread

from npc_voice.cli import main


@pytest.fixture()
def config_file(tmp_path: Path) -> Path:
    p = tmp_path / "voices.yaml"
    p.write_text(TINY_CONFIG, encoding="utf-8")
    return p


def read_wav(path: Path) -> tuple[int, int]:
    """(rate, frames) of a mono 16-bit WAV; fails on anything else."""
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        return w.getframerate(), w.getnframes()


def test_say_in_process_writes_a_wav(tmp_path: Path, config_file: Path) -> None:
    out = tmp_path / "hello.wav"
    assert main(["say", "--config", str(config_file), "--character", "guard", "-o", str(out), "Hello there."]) == 0
    rate, frames = read_wav(out)
    assert rate == 22050 and frames > 0
    out16 = tmp_path / "hello16.wav"
    assert main(["say", "--config", str(config_file), "--rate", "16000", "-o", str(out16), "Hello there."]) == 0
    rate16, frames16 = read_wav(out16)
    assert rate16 == 16000 and abs(frames16 - round(frames * 16000 / 22050)) <= 1


def test_say_lines_writes_one_wav_per_line(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = tmp_path / "barks.txt"
    lines.write_text("Halt!\n\nWho goes there?\n   \nMove along.\n", encoding="utf-8")
    out_dir = tmp_path / "barks"
    code = main(
        ["say", "--config", str(config_file), "--character", "merchant", "--lines", str(lines)]
        + ["--out-dir", str(out_dir)]
    )
    assert code == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["000.wav", "001.wav", "002.wav"]
    frames = [read_wav(out_dir / f"{i:03d}.wav")[1] for i in range(3)]
    assert all(f > 0 for f in frames) and frames[1] > frames[0]  # "Who goes there?" is longer than "Halt!"
    err = capsys.readouterr().err
    assert "[3/3] 002.wav" in err and "wrote 3 file(s)" in err


def test_say_through_a_daemon(tmp_path: Path, daemon: DaemonThread) -> None:
    out = tmp_path / "remote.wav"
    assert main(["say", "--server", daemon.address, "--character", "goblin/cli", "-o", str(out), "Hello there."]) == 0
    assert read_wav(out)[0] == 16000  # goblin's configured default rate


def test_say_errors(tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["say", "--config", str(config_file), "--character", "dragon", "-o", str(tmp_path / "x.wav"), "Hi."]) == 1
    )
    assert "'dragon'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["say", "Hi."])  # neither -o nor --out-dir
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_CONFIG.replace("pitch: -3", "pitch: -300"), encoding="utf-8")
    assert main(["characters", "--config", str(bad)]) == 2
    assert "characters.guard.pitch" in capsys.readouterr().err


def test_voices_and_characters(config_file: Path, daemon: DaemonThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["characters", "--config", str(config_file)]) == 0
    local = capsys.readouterr().out
    assert all(name in local for name in ("guard", "merchant", "goblin")) and "* guard" in local
    assert main(["characters", "--server", daemon.address]) == 0
    assert capsys.readouterr().out == local
    assert main(["voices", "--server", daemon.address]) == 0
    remote = capsys.readouterr().out
    assert "tiny2" in remote and "22050 Hz" in remote
    assert main(["characters"]) == 0  # the embedded default configuration
    assert "narrator" in capsys.readouterr().out


def test_serve_prints_how_to_speak(tmp_path: Path, config_file: Path) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "npc_voice", "serve", "--config", str(config_file), "--port", "0"]
    log = tmp_path / "serve.log"  # a file, not a pipe: nobody reads stderr while it runs
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the daemon is serving (or died: empty line)
        hint = proc.stdout.readline()
        assert "serving on 127.0.0.1:" in first, (first, log.read_text())
        port = int(first.split("127.0.0.1:")[1].split(".")[0])
        assert port > 0 and f"npc-voice say --server 127.0.0.1:{port}" in hint
        proc.send_signal(signal.SIGHUP)  # reload the configuration
        for _ in range(600):  # bounded wait for the log line, not a timing assertion
            if "configuration reloaded" in log.read_text():
                break
            time.sleep(0.05)
        assert "SIGHUP: reloading configuration" in log.read_text()
        assert "configuration reloaded" in log.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "npc-voice listening on 127.0.0.1" in log.read_text()


def test_serve_on_a_taken_port_fails_clearly(
    config_file: Path, daemon: DaemonThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--config", str(config_file), "--port", str(daemon.daemon.port)]) == 1
    assert f"cannot listen on 127.0.0.1:{daemon.daemon.port}" in capsys.readouterr().err
