"""Audio the gRPC edge handed on late: made by the engine in time for the client's playback
clock (``AudioEvent.due_t``), but taken by the daemon's event loop only after that clock needed it.

The engine counts the streams it let fall behind (``underruns``); this counts what the daemon
process itself held up — its event loop, or the engine link, short of CPU (a busy host, another
program on the machine). A client with a jitter buffer hears a gap only once the lateness eats its
buffer, so this is the daemon's share of the risk, not a count of what listeners heard.
"""
from __future__ import annotations

import time

from npc_voice.engine.api import AudioEvent


class LateAudio:
    """One owner: the event loop (the Speak and Converse handlers note each event they take)."""

    def __init__(self) -> None:
        self.count = 0  # audio events the edge took after their due time, made before it

    def note(self, event: object, now: float | None = None) -> None:
        if isinstance(event, AudioEvent) and event.made_t <= event.due_t < (time.monotonic() if now is None else now):
            self.count += 1
