"""Request: the engine thread's record of one stream, with an explicit lifecycle.

    WAITING ──admit──> RUNNING ──> COMPLETED | CANCELLED | INTERRUPTED | FAILED
       └──────────────> REJECTED | CANCELLED | FAILED

Only the engine thread reads or writes a Request. The caller holds the matching ``Stream``
handle, which posts commands (say, end input, cancel, close) that the engine applies to the
Request between ticks; the engine answers through the handle's event queue. Every request
leaves through one finish path (``EngineCore.finish``) that releases what it holds, counts the
outcome and ends the stream, so the outcome counters always add up.
"""
from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from npc_voice.contracts import PhonemeInput
from npc_voice.engine.api import BusyPolicy, VoiceControls
from npc_voice.engine.speaker import Speaker
from npc_voice.model.api import PreparedLine

if TYPE_CHECKING:
    from npc_voice.engine.stream import Stream


class RequestStatus(enum.Enum):
    WAITING = "waiting"  # opened, no slot yet (capacity, or its character is busy)
    RUNNING = "running"  # holds a slot; speaks its lines
    COMPLETED = "completed"  # every line spoken after end of input
    CANCELLED = "cancelled"  # cancel, close (consumer gone), or engine shutdown
    INTERRUPTED = "interrupted"  # a newer stream for the character barged in
    REJECTED = "rejected"  # refused: no capacity within the bounded wait, or busy by policy
    FAILED = "failed"  # an error in its preparation, rendering or model step

    @property
    def finished(self) -> bool:
        return self not in (RequestStatus.WAITING, RequestStatus.RUNNING)


FINISHED = tuple(s for s in RequestStatus if s.finished)


@dataclass(eq=False)
class Request:
    stream: Stream  # the caller's handle: events go out through it
    character: str
    voice: str
    controls: VoiceControls
    lexicon: Mapping[str, str]
    sample_rate: int
    request_id: str
    busy: BusyPolicy
    opened_at: float  # monotonic, when open_stream was called
    wait_s: float  # how long it may wait for admission before it is rejected
    encoding: str | None = None  # "s16le" | "f32le": also encode audio for the wire, per batch
    status: RequestStatus = RequestStatus.WAITING
    lines: deque[PhonemeInput] = field(default_factory=deque)  # said, not yet prepared
    prepared: deque[tuple[PreparedLine, PhonemeInput]] = field(default_factory=deque)  # ready, not started
    input_ended: bool = False
    cancel_requested: bool = False  # fade out at the next frame, then end "cancelled"
    interrupt_requested: bool = False  # same, ending "interrupted"
    speaker: Speaker | None = None  # slot, line position and clocks while RUNNING

    @property
    def stopping(self) -> bool:
        return self.cancel_requested or self.interrupt_requested

    @property
    def has_audio(self) -> bool:
        return self.speaker is not None and self.speaker.gen > 0
