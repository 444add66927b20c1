"""Late audio at the gRPC edge: each AudioEvent says when the client's playback clock needs it and
when the engine made it; the daemon counts the audio it took after that (GetStats late_audio)."""
from __future__ import annotations

import math
import time

import numpy as np

from npc_voice.contracts import SAMPLE_RATE
from npc_voice.engine.api import AudioEvent, MarkEvent, VoiceControls
from npc_voice.engine.speaker import Speaker
from npc_voice.server.edge import LateAudio
from npc_voice.v1 import npc_voice_pb2 as pb
from npc_voice.v1 import npc_voice_pb2_grpc as pb_grpc
from tests.conftest import DaemonThread, wait_idle

HOP = 256
LONG = ("The old bridge to the north washed away in the spring floods, so take the mountain pass, "
        "and mind the wolves.")


def test_each_chunk_is_due_when_playback_reaches_it() -> None:
    sp = Speaker(VoiceControls(), SAMPLE_RATE, 0.0, 1, HOP, 0.0, None)
    first = sp.emit(np.zeros(8 * HOP, np.float32), 8, now=10.0)
    second = sp.emit(np.zeros(8 * HOP, np.float32), 8, now=10.02)
    third = sp.emit(np.zeros(4 * HOP, np.float32), 4, now=10.03)
    assert first is not None and second is not None and third is not None
    assert math.isinf(first.due_t) and first.made_t == 10.0  # playback starts with the first chunk
    assert second.due_t == 10.0 + 8 * HOP / SAMPLE_RATE and second.made_t == 10.02
    assert third.due_t == 10.0 + 16 * HOP / SAMPLE_RATE


def test_late_audio_counts_what_was_made_in_time_and_taken_after_it_was_due() -> None:
    late = LateAudio()
    pcm = np.zeros(4, np.float32)
    late.note(AudioEvent(pcm, 0, due_t=2.0, made_t=1.0), now=1.5)  # on time
    assert late.count == 0
    late.note(AudioEvent(pcm, 0, due_t=2.0, made_t=1.0), now=2.5)  # the edge held it past due
    assert late.count == 1
    late.note(AudioEvent(pcm, 0, due_t=2.0, made_t=2.2), now=2.5)  # the engine was late: its underrun, not ours
    late.note(AudioEvent(pcm, 0), now=1e9)  # a stream's first audio: no clock yet
    late.note(MarkEvent((), (), ()), now=1e9)
    assert late.count == 1


def test_a_stalled_event_loop_shows_as_late_audio_in_getstats(daemon: DaemonThread, stub: pb_grpc.NpcVoiceStub) -> None:
    before = stub.GetStats(pb.GetStatsRequest()).late_audio
    call = stub.Speak(pb.SpeakRequest(character="guard/late", text=LONG), timeout=60)
    seen = [next(call).WhichOneof("event")]
    while seen[-1] != "audio":
        seen.append(next(call).WhichOneof("event"))
    daemon.loop.call_soon_threadsafe(time.sleep, 1.0)  # the daemon's event loop stops for a second
    rest = list(call)
    assert rest[-1].end.reason == pb.END_REASON_COMPLETED
    total = sum(len(r.audio.pcm) for r in rest if r.WhichOneof("event") == "audio")
    assert total > 0
    after = wait_idle(stub).late_audio
    assert after > before  # the audio the engine made meanwhile reached the edge after it was due
