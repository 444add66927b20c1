"""Shared fixtures: a real npc-voice daemon (grpc.aio, tiny random voices) on 127.0.0.1, port 0.

The daemon runs its asyncio loop in a background thread, exactly as ``npc-voice serve`` does
in the main thread; tests talk to it over a real loopback channel with the sync client.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import pytest

from npc_voice.v1 import npc_voice_pb2 as pb
from npc_voice.v1 import npc_voice_pb2_grpc as pb_grpc

# Two tiny voices; characters differ by controls; goblin defaults to f32le at 16 kHz.
TINY_CONFIG = """
voices:
  tiny: {tiny: 0}
  tiny2: {tiny: 1}
characters:
  guard: {voice: tiny, pitch: -3, formant: 0.9, description: test guard}
  merchant: {voice: tiny, pitch: 2, speed: 1.1}
  goblin: {voice: tiny2, pitch: 6, format: {encoding: f32le, sample_rate: 16000}}
default_character: guard
server:
  port: 0
  slots: 9
  frames_per_tick: 4
  max_queue_wait_s: 1.0
  max_text_bytes: 300
  lookahead_ms: 150
"""


class DaemonThread:
    """A Daemon on its own event loop thread; ``address`` is ready once constructed."""

    def __init__(self, config_path: Path, **options: Any) -> None:
        from npc_voice.server.app import Daemon, DaemonOptions

        self.daemon = Daemon(DaemonOptions(config_path=str(config_path), **options))
        self.loop = asyncio.new_event_loop()
        started: Future[None] = Future()
        self.thread = threading.Thread(target=self._run, args=(started,), name="npc-voice-test-daemon", daemon=True)
        self.thread.start()
        started.result(timeout=120)
        self.address = f"127.0.0.1:{self.daemon.port}"

    def _run(self, started: Future[None]) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.daemon.start())
        except BaseException as e:  # surface start-up errors in the test, not a hang
            started.set_exception(e)
            return
        started.set_result(None)
        self.loop.run_forever()

    def call(self, coro: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the daemon's loop (e.g. a reload) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_running():
            self.call(self.daemon.stop(0.5))
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


def start_daemon(tmp: Path, text: str = TINY_CONFIG, **options: Any) -> DaemonThread:
    path = tmp / "voices.yaml"
    path.write_text(text, encoding="utf-8")
    options.setdefault("watch_interval_s", 0)
    return DaemonThread(path, **options)


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonThread]:
    d = start_daemon(tmp_path_factory.mktemp("daemon"))
    yield d
    d.stop()


@pytest.fixture(scope="session")
def channel(daemon: DaemonThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(daemon.address) as ch:
        yield ch


@pytest.fixture(scope="session")
def stub(channel: grpc.Channel) -> pb_grpc.NpcVoiceStub:
    return pb_grpc.NpcVoiceStub(channel)


def wait_idle(stub: pb_grpc.NpcVoiceStub, timeout_s: float = 30.0) -> pb.GetStatsResponse:
    """Poll GetStats until no stream holds a slot (bounded; returns the last stats)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        stats = stub.GetStats(pb.GetStatsRequest())
        if (stats.slots_in_use == 0 and stats.active_streams == 0) or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)
