"""Stream: one character speaking one or more lines on one continuous sample clock (stub)."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from npc_voice.engine.api import AudioEvent, EndEvent, MarkEvent

Event = MarkEvent | AudioEvent | EndEvent


class Stream:
    """Thread-safe; events are consumed from asyncio (``events``) or a thread (``events_sync``)."""

    request_id: str
    character: str
    voice: str
    sample_rate: int

    def say(self, text: str) -> None:
        raise NotImplementedError

    def end_input(self) -> None:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def events(self) -> AsyncIterator[Event]:
        raise NotImplementedError
        yield  # pragma: no cover

    def events_sync(self, timeout: float | None = None) -> Iterator[Event]:
        raise NotImplementedError
