"""Converse end to end: pieces -> phrases, flush, buffer delay, cancel, several contexts, half-close."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from conftest import wait_idle

from npc_voice.client import decode_pcm
from npc_voice.v1 import npc_voice_pb2 as pb
from npc_voice.v1 import npc_voice_pb2_grpc as pb_grpc

_END = object()


class Conversation:
    """A Converse call whose requests the test writes one at a time (queue-backed iterator)."""

    def __init__(self, stub: pb_grpc.NpcVoiceStub, timeout: float = 60.0) -> None:
        self.requests: queue.Queue[object] = queue.Queue()
        self.call = stub.Converse(self._iter(), timeout=timeout)
        self.responses = iter(self.call)
        self.seen: list[pb.SpeakResponse] = []

    def _iter(self) -> Iterator[pb.ConverseRequest]:
        while True:
            item = self.requests.get()
            if item is _END:
                return
            assert isinstance(item, pb.ConverseRequest)
            yield item

    def send(self, context_id: str = "", **action: object) -> None:
        self.requests.put(pb.ConverseRequest(context_id=context_id, **action))  # type: ignore[arg-type]

    def half_close(self) -> None:
        self.requests.put(_END)

    def read_until(self, kind: str, context_id: str = "") -> pb.SpeakResponse:
        for r in self.responses:
            self.seen.append(r)
            if r.WhichOneof("event") == kind and r.context_id == context_id:
                return r
        raise AssertionError(f"call ended before a {kind!r} event for context {context_id!r}")

    def finish(self) -> list[pb.SpeakResponse]:
        self.half_close()
        self.seen.extend(self.responses)
        return self.seen


def by_context(responses: list[pb.SpeakResponse]) -> dict[str, list[pb.SpeakResponse]]:
    out: dict[str, list[pb.SpeakResponse]] = {}
    for r in responses:
        out.setdefault(r.context_id, []).append(r)
    return out


def check_context(events: list[pb.SpeakResponse]) -> tuple[np.ndarray, list[pb.Marks], pb.StreamEnd]:
    """One stream per context: start first, end last, offsets contiguous across phrases."""
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("start") == 1, kinds
    encoding = events[0].start.format.encoding
    offset, chunks, marks = 0, [], []
    for e in events[1:-1]:
        if e.HasField("audio"):
            assert e.audio.sample_offset == offset
            chunk = decode_pcm(e.audio.pcm, encoding)
            offset += len(chunk)
            chunks.append(chunk)
        elif e.HasField("marks"):
            assert all(m.start_sample >= offset for m in e.marks.words)
            marks.append(e.marks)
    end = events[-1].end
    assert end.total_samples == offset
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), marks, end


def words_of(marks: list[pb.Marks]) -> list[str]:
    return [w.label.lower().strip(".,?!") for m in marks for w in m.words]


def test_pieces_become_phrases_on_one_clock(stub: pb_grpc.NpcVoiceStub) -> None:
    conv = Conversation(stub)
    conv.send("npc", config=pb.ConverseConfig(character="guard/conv", request_id="r1", max_buffer_delay_ms=60000))
    for piece in ("Hello the", "re, fri", "end. How are", " you?"):
        conv.send("npc", text=piece)
    conv.send("npc", close=True)
    events = by_context(conv.finish())
    assert set(events) == {"npc"}
    pcm, marks, end = check_context(events["npc"])
    assert events["npc"][0].start.request_id == "r1" and events["npc"][0].start.character == "guard/conv"
    assert end.reason == pb.END_REASON_COMPLETED and len(pcm) > 0
    assert len(marks) == 3, "three phrases: 'Hello there,' 'friend.' 'How are you?'"
    assert words_of(marks) == ["hello", "there", "friend", "how", "are", "you"]
    starts = [m.words[0].start_sample for m in marks]
    assert starts == sorted(starts) and starts[-1] < end.total_samples  # one continuous sample clock


def test_flush_and_buffer_delay_speak_without_punctuation(stub: pb_grpc.NpcVoiceStub) -> None:
    conv = Conversation(stub)
    conv.send("a", config=pb.ConverseConfig(character="merchant/flush", max_buffer_delay_ms=60000))
    conv.send("a", text="Fresh bread for sale")
    conv.send("a", flush=True)
    conv.read_until("audio", "a")  # spoken although the call and context are still open
    conv.send("b", config=pb.ConverseConfig(character="merchant/delay", max_buffer_delay_ms=50))
    conv.send("b", text="Apples and pears")
    conv.read_until("audio", "b")  # the buffer delay spoke it
    events = by_context(conv.finish())  # half-close ends both contexts
    for cid in ("a", "b"):
        _, _, end = check_context(events[cid])
        assert end.reason == pb.END_REASON_COMPLETED
    assert words_of(check_context(events["b"])[1]) == ["apples", "and", "pears"]


def test_cancel_ends_one_context_and_the_other_goes_on(stub: pb_grpc.NpcVoiceStub) -> None:
    conv = Conversation(stub)
    conv.send("talker", config=pb.ConverseConfig(character="guard/c1"))
    conv.send("talker", text="This is a rather long speech that will be interrupted before it is over. " * 3)
    conv.send("other", config=pb.ConverseConfig(character="merchant/c2", format=pb.AudioFormat(sample_rate_hz=16000)))
    conv.send("other", text="Good day to you.")
    conv.read_until("audio", "talker")
    conv.send("talker", cancel=True)
    conv.read_until("end", "talker")
    conv.send("other", text=" And farewell.")
    events = by_context(conv.finish())
    _, _, end = check_context(events["talker"])
    assert end.reason == pb.END_REASON_CANCELLED
    pcm, marks, end = check_context(events["other"])
    assert end.reason == pb.END_REASON_COMPLETED and events["other"][0].start.format.sample_rate_hz == 16000
    assert words_of(marks) == ["good", "day", "to", "you", "and", "farewell"]
    stats = wait_idle(stub)
    assert (stats.slots_in_use, stats.active_streams) == (0, 0)


def test_half_close_speaks_buffers_then_ends(stub: pb_grpc.NpcVoiceStub) -> None:
    conv = Conversation(stub)
    conv.send("", text="no punctuation here")  # default context, default character
    events = by_context(conv.finish())
    assert set(events) == {"default"}  # an empty context_id is the context "default"
    _, marks, end = check_context(events["default"])
    assert end.reason == pb.END_REASON_COMPLETED and words_of(marks) == ["no", "punctuation", "here"]
    assert events["default"][0].start.character == "guard"


def test_disconnect_mid_conversation_frees_slots(stub: pb_grpc.NpcVoiceStub) -> None:
    conv = Conversation(stub)
    conv.send("x", text="A long story begins here, and it goes on and on for quite a while, friend. " * 2)
    conv.read_until("audio", "x")
    conv.call.cancel()
    stats = wait_idle(stub)
    assert (stats.slots_in_use, stats.active_streams) == (0, 0)


@pytest.mark.parametrize(
    ("config", "code"),
    [
        (pb.ConverseConfig(character="dragon"), grpc.StatusCode.NOT_FOUND),
        (pb.ConverseConfig(format=pb.AudioFormat(sample_rate_hz=11025)), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ConverseConfig(overrides=pb.VoiceOverrides(volume=9.0)), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_converse_errors(stub: pb_grpc.NpcVoiceStub, config: pb.ConverseConfig, code: grpc.StatusCode) -> None:
    conv = Conversation(stub)
    conv.send("e", config=config)
    with pytest.raises(grpc.RpcError) as info:
        conv.finish()
    assert info.value.code() == code


def test_config_after_speech_starts_a_new_stream_in_order(stub: pb_grpc.NpcVoiceStub) -> None:
    conv = Conversation(stub)
    conv.send("r", config=pb.ConverseConfig(character="guard/re", request_id="first"))
    conv.send("r", text="I am the guard.")
    conv.send("r", config=pb.ConverseConfig(character="merchant/re", request_id="second"))
    conv.send("r", text="And I sell bread.")
    events = by_context(conv.finish())["r"]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds.count("start") == 2 and kinds.count("end") == 2
    split = kinds.index("end") + 1
    first, second = events[:split], events[split:]
    _, marks1, end1 = check_context(first)
    _, marks2, end2 = check_context(second)
    assert (first[0].start.character, first[0].start.request_id) == ("guard/re", "first")
    assert (second[0].start.character, second[0].start.request_id) == ("merchant/re", "second")
    assert words_of(marks1) == ["i", "am", "the", "guard"] and words_of(marks2) == ["and", "i", "sell", "bread"]
    assert end1.reason == end2.reason == pb.END_REASON_COMPLETED
