"""Versioned bytes for one character's state (save games, moving a character between daemons).

Layout, little-endian:

    magic        8 bytes  b"NPCVSTAT"
    version      u16      STATE_FORMAT_VERSION
    voice        str      voice version id (checkpoint hash) the state belongs to
    n_tensors    u16
    n_tensors times:
        name     str
        dtype    str      torch dtype name without "torch.", e.g. "float32"
        ndim     u8, then ndim x u32 shape
        nbytes   u64, then the raw bytes (C order)
    crc32        u32      of every byte before it

where ``str`` is a u16 byte length followed by UTF-8. Decoding checks everything and raises
``StateFormatError`` with the reason; it never returns a partial state.
"""
from __future__ import annotations

import struct
import zlib

import torch

from npc_voice.engine.api import STATE_FORMAT_VERSION, StateFormatError

MAGIC = b"NPCVSTAT"
_MAX_NDIM = 8


# The dtypes a voice's state may use (pools are float32, bf16/fp16 optional; counters int64).
STATE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64}
# Larger magnitudes are no state a voice reaches by speaking: refuse them instead of letting one
# imported character produce noise bursts or overflow (recurrent states of trained voices stay < 1e3).
MAX_STATE_MAGNITUDE = 1e6
MAX_COUNTER = 2**48


def check_state_values(tensors: dict[str, torch.Tensor]) -> None:
    """Raise StateFormatError if a float tensor holds NaN/Inf or an absurd magnitude, or an integer
    tensor a negative or absurd count."""
    for name, t in tensors.items():
        if t.numel() == 0:
            continue
        if t.is_floating_point():
            values = t.float()
            if not bool(torch.isfinite(values).all()):
                raise StateFormatError(f"character state tensor {name!r} holds NaN or infinite values")
            peak = float(values.abs().max())
            if peak > MAX_STATE_MAGNITUDE:
                raise StateFormatError(f"character state tensor {name!r} holds {peak:.3g}, beyond any voice's "
                                       f"state (|x| <= {MAX_STATE_MAGNITUDE:g})")
        elif int(t.min()) < 0 or int(t.max()) > MAX_COUNTER:
            raise StateFormatError(f"character state tensor {name!r} holds counts outside [0, {MAX_COUNTER}]")


def encode_state(voice_version: str, tensors: dict[str, torch.Tensor]) -> bytes:
    """Serialize ``tensors`` (one character's rows, any device) for ``voice_version``."""
    parts = [MAGIC, struct.pack("<H", STATE_FORMAT_VERSION), _pack_str(voice_version), struct.pack("<H", len(tensors))]
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        parts += [_pack_str(name), _pack_str(str(t.dtype).removeprefix("torch."))]
        parts.append(struct.pack(f"<B{t.dim()}I", t.dim(), *t.shape))
        parts += [struct.pack("<Q", len(raw)), raw]
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def decode_state(data: bytes) -> tuple[str, dict[str, torch.Tensor]]:
    """Parse bytes from ``encode_state``: (voice version id, name -> CPU tensor).

    Raises ``StateFormatError`` for wrong magic, unknown format version, truncation, or a
    checksum mismatch. Checking the voice and the shapes is the caller's job (it knows them)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise StateFormatError(f"character state must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < len(MAGIC) + 2 + 4 or data[: len(MAGIC)] != MAGIC:
        raise StateFormatError(f"not an npc-voice character state (starts with {data[:8]!r}, expected {MAGIC!r})")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    body = data[:-4]
    if zlib.crc32(body) != crc:
        raise StateFormatError("character state is corrupt (crc32 mismatch)")
    reader = _Reader(body, len(MAGIC))
    (version,) = reader.unpack("<H")
    if version != STATE_FORMAT_VERSION:
        raise StateFormatError(
            f"character state format version {version} is not supported (this daemon reads {STATE_FORMAT_VERSION})"
        )
    voice = reader.string()
    (n,) = reader.unpack("<H")
    tensors: dict[str, torch.Tensor] = {}
    for _ in range(n):
        name, dtype_name = reader.string(), reader.string()
        dtype = STATE_DTYPES.get(dtype_name)
        if dtype is None:
            raise StateFormatError(f"character state tensor {name!r} has dtype {dtype_name[:32]!r}; states hold "
                                   f"only {sorted(STATE_DTYPES)}")
        (ndim,) = reader.unpack("<B")
        if ndim > _MAX_NDIM:
            raise StateFormatError(f"character state tensor {name!r} has {ndim} dimensions")
        shape = reader.unpack(f"<{ndim}I")
        (nbytes,) = reader.unpack("<Q")
        expected = _numel(shape) * torch.empty((), dtype=dtype).element_size()
        if nbytes != expected:
            raise StateFormatError(f"character state tensor {name!r}: {nbytes} bytes for shape {list(shape)}")
        raw = bytearray(reader.take(nbytes))
        flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        tensors[name] = flat.view(dtype).reshape(shape)
    if reader.pos != len(body):
        raise StateFormatError(f"character state has {len(body) - reader.pos} unexpected trailing bytes")
    return voice, tensors


def _pack_str(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<H", len(raw)) + raw


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise StateFormatError("character state is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def string(self) -> str:
        (n,) = self.unpack("<H")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as e:
            raise StateFormatError(f"character state has a malformed name: {e}") from e
