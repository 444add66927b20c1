"""Property-based fuzzing: any input ends in a result or the documented error, within a time bound.

- text frontend: any str -> PhonemeInput, or TextError (-> INVALID_ARGUMENT);
- state bytes: any bytes -> (voice, tensors), or StateFormatError (-> INVALID_ARGUMENT);
- YAML configuration: any text -> Config, or ConfigError naming the file;
- requests to a live daemon: any SpeakRequest / Converse sequence ends OK, INVALID_ARGUMENT,
  NOT_FOUND or RESOURCE_EXHAUSTED -- never INTERNAL or UNKNOWN, never a hang.

Derandomized (the same examples on every run, for CI) and small: the file runs in well under a
minute on 2 cores. Raise ``NPC_VOICE_FUZZ_EXAMPLES`` (a multiplier) for a longer local hunt.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Iterator

import grpc
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npc_voice.config import ConfigError, parse_config
from npc_voice.engine.api import StateFormatError
from npc_voice.engine.statefile import MAGIC, _pack_str, decode_state, encode_state
from npc_voice.frontend import TextError, text_to_phonemes
from npc_voice.v1 import npc_voice_pb2 as pb
from npc_voice.v1 import npc_voice_pb2_grpc as pb_grpc

SCALE = float(os.environ.get("NPC_VOICE_FUZZ_EXAMPLES", "1"))


def fuzz(examples: int, deadline_ms: int | None = 2000) -> settings:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=deadline_ms,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


# proto3 strings are UTF-8: no lone surrogates can reach the daemon, so none are generated.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
NUMBERS = st.text(alphabet="0123456789.,:;-+$%£€ /ªº¹½", max_size=600)  # the normaliser's expansions
WORDS = st.lists(st.sampled_from(["Halt", "Dr.", "St.", "3rd", "1,000", "$5", "e.g.", "—", "!", "?", "x" * 80]))


# -- text frontend ------------------------------------------------------------------------------------


@fuzz(150)
@given(st.one_of(TEXT, NUMBERS, WORDS.map(" ".join)))
def test_frontend_gives_phonemes_or_text_error(text: str) -> None:
    try:
        result = text_to_phonemes(text)
    except TextError:
        return
    assert len(result.symbols) > 0


@fuzz(3, deadline_ms=10_000)
@given(st.integers(1, 4096).flatmap(lambda n: st.text(alphabet="0123456789", min_size=n, max_size=n)))
def test_frontend_long_numbers_stay_bounded(digits: str) -> None:
    """4096 bytes of digits expand ~6x when spelt out: still an answer within seconds, not a stall."""
    t0 = time.monotonic()
    try:
        text_to_phonemes(digits)
    except TextError:
        pass
    assert time.monotonic() - t0 < 10.0


# -- state bytes ---------------------------------------------------------------------------------------


def valid_state() -> bytes:
    g = torch.Generator().manual_seed(0)
    return encode_state("voice-v1", {"conv": torch.randn(2, 3, generator=g), "ssm": torch.randn(4, generator=g)})


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """Edits of a valid state's body, the checksum recomputed: these get past the crc32 check."""
    body = data[:-4]
    edit = st.tuples(st.integers(0, len(body) - 1), st.binary(min_size=0, max_size=12), st.integers(0, 12))

    def apply(edits: list[tuple[int, bytes, int]]) -> bytes:
        b = bytearray(body)
        for pos, new, cut in edits:
            b[pos : pos + cut] = new
        return with_crc(bytes(b))

    return st.lists(edit, min_size=1, max_size=4).map(apply)


@fuzz(300)
@given(st.one_of(st.binary(max_size=512), st.binary(max_size=64).map(lambda b: MAGIC + b), mutated(valid_state())))
def test_state_bytes_decode_or_state_format_error(data: bytes) -> None:
    try:
        voice, tensors = decode_state(data)
    except StateFormatError:
        return
    assert isinstance(voice, str) and all(isinstance(t, torch.Tensor) for t in tensors.values())


def state_with_dtype(dtype_name: str) -> bytes:
    parts = [MAGIC, struct.pack("<H", 1), _pack_str("v"), struct.pack("<H", 1), _pack_str("x"), _pack_str(dtype_name)]
    parts += [struct.pack("<BI", 1, 2), struct.pack("<Q", 2), b"\x00\x01"]
    return with_crc(b"".join(parts))


def test_state_bytes_refuse_dtypes_outside_an_allow_list() -> None:
    """A state's tensors are float (the pool's dtype) or int64 counters; anything else (qint8,
    bits8, complex, aliases like "float") is refused while decoding, not later as INTERNAL."""
    names = sorted(n for n in dir(torch) if isinstance(getattr(torch, n, None), torch.dtype))
    accepted = []
    for name in set(names) - {"float32", "float16", "bfloat16", "int64"}:
        try:
            decode_state(state_with_dtype(name))
        except StateFormatError:
            continue
        accepted.append(name)
    assert not accepted, sorted(accepted)


# -- YAML configuration -------------------------------------------------------------------------------

KEYS = ["voices", "characters", "default_character", "server", "guard", "voice", "tiny", "checkpoint", "pitch"]
KEYS += ["speed", "lexicon", "format", "encoding", "sample_rate", "host", "port", "slots", "max_id_bytes"]
KEYS += ["context_idle_timeout_s", "token_file", "tls_cert", "default", "description", "volume"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(KEYS),
)
TREES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(KEYS), SCALARS), inner, max_size=5)
    ),
    max_leaves=25,
)


def documents() -> st.SearchStrategy[str]:
    def dump(tree: object) -> str:
        try:
            return yaml.safe_dump(tree, allow_unicode=True)
        except yaml.YAMLError:
            return "{"

    base = {"voices": {"t": {"tiny": 0}}, "characters": {"guard": {"voice": "t"}}}
    near_valid = st.dictionaries(st.sampled_from(["server", "characters", "voices", "default_character"]), TREES)
    return st.one_of(
        st.text(max_size=200),
        TREES.map(dump),
        near_valid.map(lambda extra: dump({**base, **extra})),
    )


@fuzz(200)
@given(documents())
def test_yaml_config_gives_config_or_config_error(text: str) -> None:
    try:
        config = parse_config(text, source="fuzz.yaml", base_dir=None)
    except ConfigError as e:
        assert str(e).startswith("fuzz.yaml: ")
        return
    assert config.characters and config.default_character in config.characters


# -- requests to a live daemon ---------------------------------------------------------------------

DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
VALID_CHARACTERS = st.sampled_from(["", "guard", "goblin", "merchant/7", "guard/fuzz-1"])
CHARACTERS = st.one_of(
    VALID_CHARACTERS,
    VALID_CHARACTERS,
    st.sampled_from(["guard/", "nobody", "guard/a/b", "g" * 200, "guard/" + "x" * 64]),
    st.text(max_size=40),
)
SHORT_TEXT = st.one_of(
    st.sampled_from(["Hi.", "Halt!", "3rd gate.", "Ok"]),
    st.sampled_from(["", " ", "...", "\x00"]),
    st.text(max_size=12),
)
FLOATS = st.one_of(
    st.none(), st.none(), st.floats(-3.0, 3.0, width=32), st.floats(allow_nan=True, allow_infinity=True, width=32)
)


@st.composite
def speak_requests(draw: st.DrawFn) -> pb.SpeakRequest:
    overrides = pb.VoiceOverrides()
    for name in ("speed", "pitch_semitones", "volume", "formant", "breathiness") if draw(st.booleans()) else ():
        value = draw(FLOATS)
        if value is not None:
            setattr(overrides, name, value)
    rate = draw(st.sampled_from([0, 1, 16000, 22050, 48000, 96000]))
    fmt = pb.AudioFormat(encoding=draw(st.sampled_from([0, 0, 1, 2, 3])), sample_rate_hz=rate)
    return pb.SpeakRequest(
        character=draw(CHARACTERS),
        text=draw(SHORT_TEXT),
        format=fmt,
        request_id=draw(st.one_of(st.just(""), st.text(max_size=150))),
        overrides=overrides,
    )


def outcome(responses: Iterator[pb.SpeakResponse], call: grpc.Call) -> grpc.StatusCode:
    """Read until the first audio (then cancel: the rest is real-time playback) or the end."""
    try:
        for r in responses:
            if r.HasField("audio") or r.HasField("end"):
                call.cancel()
                return grpc.StatusCode.OK
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()  # type: ignore[no-any-return]


@fuzz(80, deadline_ms=None)
@given(speak_requests())
def test_any_speak_request_ends_in_a_documented_status(stub: pb_grpc.NpcVoiceStub, request: pb.SpeakRequest) -> None:
    t0 = time.monotonic()
    call = stub.Speak(request, timeout=20)
    code = outcome(call, call)
    assert code in DOCUMENTED, (code, request)
    assert time.monotonic() - t0 < 15.0


@st.composite
def conversations(draw: st.DrawFn) -> list[pb.ConverseRequest]:
    out = []
    for _ in range(draw(st.integers(0, 8))):
        cid = draw(st.one_of(st.sampled_from(["", "a", "b"]), st.text(max_size=8)))
        kind = draw(st.sampled_from(["config", "text", "flush", "cancel", "close", "none"]))
        if kind == "config":
            cfg = pb.ConverseConfig(character=draw(CHARACTERS), max_buffer_delay_ms=draw(st.integers(0, 5000)))
            out.append(pb.ConverseRequest(context_id=cid, config=cfg))
        elif kind == "text":
            out.append(pb.ConverseRequest(context_id=cid, text=draw(SHORT_TEXT)))
        elif kind == "none":
            out.append(pb.ConverseRequest(context_id=cid))
        else:
            out.append(pb.ConverseRequest(context_id=cid, **{kind: True}))  # type: ignore[arg-type]
    return out


@fuzz(25, deadline_ms=None)
@given(conversations())
def test_any_converse_sequence_ends_in_a_documented_status(
    stub: pb_grpc.NpcVoiceStub, requests: list[pb.ConverseRequest]
) -> None:
    t0 = time.monotonic()
    call = stub.Converse(iter(requests), timeout=30)
    try:
        for _ in call:
            pass
        code = grpc.StatusCode.OK
    except grpc.RpcError as e:
        code = e.code()
    assert code in DOCUMENTED, (code, requests)
    assert time.monotonic() - t0 < 30.0
