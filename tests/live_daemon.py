"""`npc-voice serve` as a real child process, for what only a process shows: signals and exit codes.

The in-process fixture of conftest.py serves most tests; SIGTERM, SIGHUP and "the process exits 0
within a bound" need the real command.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc

from npc_voice.v1 import npc_voice_pb2 as pb

_READY = re.compile(r"npc-voice is serving on (\S+):(\d+)\.")


class LiveDaemon:
    """``npc-voice serve --config PATH`` with its output captured; ``address`` once it serves."""

    def __init__(self, config_path: Path, *args: str, start_timeout_s: float = 120.0) -> None:
        cmd = [sys.executable, "-m", "npc_voice.cli", "serve", "--config", str(config_path), "--port", "0", *args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self._ready: Future[str] = Future()
        threading.Thread(target=self._read_output, daemon=True).start()
        try:
            self.address = self._ready.result(timeout=start_timeout_s)
        except Exception:
            self.kill()
            raise

    def _read_output(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = _READY.search(line)
            if m and not self._ready.done():
                self._ready.set_result(f"{m.group(1)}:{m.group(2)}")
        if not self._ready.done():
            self._ready.set_exception(RuntimeError("npc-voice serve exited before serving:\n" + self.output))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout_s: float) -> tuple[int, float]:
        """(exit code, seconds waited); raises subprocess.TimeoutExpired when it does not exit."""
        t0 = time.monotonic()
        rc = self.proc.wait(timeout=timeout_s)
        return rc, time.monotonic() - t0

    def wait_for_log(self, pattern: str, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if re.search(pattern, self.output):
                return True
            time.sleep(0.05)
        return False

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def read_in_thread(call: Iterator[pb.SpeakResponse], on_first_audio: threading.Event | None = None) -> Future[Any]:
    """Consume a streaming call in a thread: the future holds the responses, or the RpcError."""
    out: Future[Any] = Future()

    def run() -> None:
        seen: list[pb.SpeakResponse] = []
        try:
            for r in call:
                seen.append(r)
                if on_first_audio is not None and r.HasField("audio"):
                    on_first_audio.set()
            out.set_result(seen)
        except grpc.RpcError as e:
            out.set_result(e)

    threading.Thread(target=run, daemon=True).start()
    return out


def ends(responses: list[pb.SpeakResponse]) -> dict[str, int]:
    """context_id -> StreamEnd reason, for every StreamEnd received."""
    return {r.context_id: r.end.reason for r in responses if r.HasField("end")}
