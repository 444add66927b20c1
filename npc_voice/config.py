"""Daemon configuration: voices, characters and server settings, loaded from YAML.

The file has four top-level keys (all optional except ``characters``)::

    voices:              # name -> checkpoint
      default: default   # "default" = the shipped voice (npc_voice.model.load_voice(None))
      big: ./big_voice   # a checkpoint directory, relative to this file
      test: {tiny: 3}    # a tiny random voice (tests only): npc_voice.model.tiny_voice(seed=3)
    characters:
      guard:
        voice: default
        description: Gruff city guard
        pitch: -3          # semitones, -24 .. 24
        formant: 0.9       # envelope warp, 0.5 .. 2.0 (<1 bigger, >1 smaller speaker)
                           # (every range: npc_voice.contracts.CONTROL_RANGES, "value")
        speed: 0.95        # speaking-rate multiplier, 0.25 .. 4.0
        breathiness: 0.1   # 0 .. 1
        volume: 1.0        # linear gain, 0 .. 4
        style: normal      # normal | whisper | shout
        lexicon: {Eldoria: ɛlˈdɔːɹiə}
        format: {encoding: s16le, sample_rate: 22050}
    default_character: narrator
    server: {host: 127.0.0.1, port: 50051, slots: 256, ...}

Everything is frozen once loaded; a reload builds a new ``Config`` and swaps it whole.
Errors are ``ConfigError`` naming the file, the key path and the reason.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from npc_voice import contracts
from npc_voice.contracts import CONTROL_RANGES, SAMPLE_RATE, SAMPLE_RATES
from npc_voice.frontend import validate_lexicon

log = logging.getLogger(__name__)

ENCODINGS = ("s16le", "f32le")
DEFAULT_SAMPLE_RATE = SAMPLE_RATE
DEFAULT_ENCODING = "s16le"
EMBEDDED_CONFIG = "voices.yaml"  # package data, the default when --config is not given

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")  # template and voice names
_INSTANCE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # the "42" of "guard/42"

# A character's configured controls, by YAML key: (low, high), inclusive. The value ranges of
# the one control table (npc_voice.contracts.CONTROL_RANGES), which the engine accepts too.
CHARACTER_RANGES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {r.config_key: r.value for r in CONTROL_RANGES.values()}
)
STYLES = tuple(contracts.STYLES)  # the style names a character (or a request) may give


class ConfigError(ValueError):
    """An invalid configuration file; the message names the file, key path and reason."""


class UnknownCharacterError(LookupError):
    """A character id whose template is not configured (-> NOT_FOUND)."""


class CharacterIdError(ValueError):
    """A malformed character id such as "guard/" (-> INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class VoiceSpec:
    name: str  # key under ``voices:``; characters refer to it
    kind: str  # "default" (shipped voice) | "checkpoint" (path) | "tiny" (random test voice)
    path: str | None = None  # checkpoint directory (kind "checkpoint"), absolute
    seed: int = 0  # kind "tiny" only
    description: str = ""


@dataclass(frozen=True)
class CharacterSpec:
    name: str
    voice: str  # a key of Config.voices
    description: str = ""
    pitch: float = 0.0  # semitones
    formant: float = 1.0
    speed: float = 1.0
    breathiness: float = 0.0
    volume: float = 1.0
    style: str = ""  # "" (= normal) or one of STYLES
    lexicon: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # lowercase word -> IPA
    encoding: str = DEFAULT_ENCODING  # default output encoding: s16le | f32le
    sample_rate: int = DEFAULT_SAMPLE_RATE  # default output rate


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"  # loopback by default: exposing the daemon is a deliberate choice
    port: int = 50051
    metrics_port: int = 0  # HTTP /metrics, /healthz, /readyz on `host`; 0 = off (README "Operating it")
    slots: int = 256  # engine pool rows (slot 0 is scratch)
    frames_per_tick: int = 8
    max_queue_wait_s: float = 2.0  # bounded wait for a slot before RESOURCE_EXHAUSTED
    max_text_bytes: int = 4096  # UTF-8 bytes per Speak text / Converse phrase (proto says 4096)
    lookahead_ms: float = 250.0  # how far generation runs ahead of each stream's playback clock (250: a
    #   stall of the machine under ~250 ms, a busy hypervisor's, reaches no listener; bench/README.md)
    lead_slack_ms: float = 300.0  # most lead beyond lookahead_ms (a beat's tick; a topped-up short piece)
    max_load: float = 0.7  # admit streams only while the measured tick cost fits this share of real time; 0 = off
    max_waiting_per_character: int = 4  # Speak calls queued behind a busy character (BusyPolicy QUEUE)
    max_line_symbols: int = 160  # longer lines are split into consecutive lines (engine thread never stalls)
    max_batch: int = 0  # most streams per model call (a larger tick steps in pieces); 0 = auto: on CPU 32 rows,
    #   32 per chunk with step threads (128 with two); every slot on GPU
    threads: int = 0  # torch CPU threads for the engine; 0 = half the cores (the rest serve gRPC, encoder)
    step_threads: int = 0  # threads stepping one CPU model call's rows together; 0 = auto (2 on 2 cores, up to 4)
    host_cache_characters: int = 100_000  # idle character states kept in host memory per voice (LRU)
    host_cache_mb: float = 2048.0  # ... and at most this many MB of them per voice; the lower bound wins
    prepare_cache_mb: float = 64.0  # lines prepared before (a bark said again skips the encoder); 0 = off
    device: str = "auto"  # auto | cpu | cuda
    engine_process: str = "auto"  # auto | on | off: the engine in its own process (auto: on CPU)
    tls_cert: str | None = None  # PEM files; both or neither
    tls_key: str | None = None
    token_file: str | None = None  # shared secret for `authorization: Bearer <token>`
    token_env: str | None = None  # ... or the name of an environment variable holding it
    # Limits per client (README "Configuration", "Limits"); each refusal has a status code (errors.py).
    max_id_bytes: int = 128  # UTF-8 bytes of a character, request or context id; longer: INVALID_ARGUMENT
    max_contexts_per_call: int = 8  # Converse contexts open (or still speaking) in one call; more: RESOURCE_EXHAUSTED
    context_idle_timeout_s: float = 60.0  # a Converse context with no message this long is closed; 0 = never
    max_buffered_text_bytes: int = 65536  # Converse text sent but not yet begun speaking, per context (~10 min)
    max_output_buffer_bytes: int = 4 << 20  # Converse responses waiting for a client that does not read
    slow_reader_timeout_s: float = 10.0  # a response write blocked this long: the call ends RESOURCE_EXHAUSTED
    drain_grace_s: float = 5.0  # on SIGTERM: speaking streams get this long to finish, then fade out
    max_concurrent_rpcs: int = 1024  # calls in progress at once; more: RESOURCE_EXHAUSTED (grpc); 0 = no limit
    keepalive_time_s: float = 30.0  # ping an idle connection this often, so dead peers are noticed
    keepalive_timeout_s: float = 10.0  # ... and close it when a ping is not answered within this
    max_connection_age_s: float = 3600.0  # GOAWAY after this (clients reconnect; load spreads); 0 = never
    max_connection_age_grace_s: float = 300.0  # calls still open that long after the GOAWAY are cut
    max_receive_message_bytes: int = 4 << 20  # one request message (ImportCharacterState carries a state)
    max_send_message_bytes: int = 16 << 20  # one response message


@dataclass(frozen=True)
class Config:
    source: str  # file path (or "<embedded voices.yaml>") for messages
    voices: Mapping[str, VoiceSpec]
    characters: Mapping[str, CharacterSpec]
    default_character: str
    server: ServerSettings

    def resolve(self, character_id: str) -> tuple[str, CharacterSpec]:
        """Full character id ("" = default, "guard", "guard/42") -> (full id, template spec)."""
        cid = character_id or self.default_character
        template, sep, instance = cid.partition("/")
        if sep and not _INSTANCE_RE.match(instance):
            raise CharacterIdError(
                f"malformed character id {cid!r}: expected 'NAME' or 'NAME/INSTANCE' "
                "with INSTANCE of 1-64 characters from [A-Za-z0-9_.:-]"
            )
        spec = self.characters.get(template)
        if spec is None:
            known = ", ".join(sorted(self.characters))
            raise UnknownCharacterError(f"unknown character {template!r} (from id {cid!r}); configured: {known}")
        return cid, spec


# ----------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate a YAML file, or the embedded default when ``path`` is None."""
    if path is None:
        text = resources.files("npc_voice").joinpath(EMBEDDED_CONFIG).read_text(encoding="utf-8")
        return parse_config(text, source=f"<embedded {EMBEDDED_CONFIG}>", base_dir=None)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read configuration: {e.strerror or e}") from e
    return parse_config(text, source=str(p), base_dir=p.resolve().parent)


def parse_config(text: str, *, source: str, base_dir: Path | None) -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from e
    return _Parser(source, base_dir).config(raw)


class _Parser:
    def __init__(self, source: str, base_dir: Path | None) -> None:
        self.source = source
        self.base_dir = base_dir

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {reason}")

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__} {value!r}")
        for k in value:
            if not isinstance(k, str):
                raise self.fail(key, f"keys must be strings, got {k!r}")
            if allowed is not None and k not in allowed:
                raise self.fail(f"{key}.{k}", f"unknown key {k!r}; allowed: {', '.join(allowed)}")
        return value

    def number(self, value: Any, key: str, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"expected a number in [{lo:g}, {hi:g}], got {value!r}")
        if not lo <= float(value) <= hi:
            raise self.fail(key, f"{value!r} is out of range [{lo:g}, {hi:g}]")
        return float(value)

    def integer(self, value: Any, key: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer in [{lo}, {hi}], got {value!r}")
        if not lo <= value <= hi:
            raise self.fail(key, f"{value!r} is out of range [{lo}, {hi}]")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {value!r}")
        return value

    def name(self, value: str, key: str) -> str:
        if not _NAME_RE.match(value):
            raise self.fail(key, f"invalid name {value!r}: use 1-64 characters from [A-Za-z0-9_.-], no '/'")
        return value

    def config(self, raw: Any) -> Config:
        top = self.mapping(raw, "<top level>", ("voices", "characters", "default_character", "server"))
        voices = {name: self.voice(name, v) for name, v in self.mapping(top.get("voices"), "voices").items()}
        if not voices:
            voices = {"default": VoiceSpec("default", "default")}
        chars_raw = self.mapping(top.get("characters"), "characters")
        if not chars_raw:
            raise self.fail("characters", "at least one character is required")
        characters = {name: self.character(name, c, voices) for name, c in chars_raw.items()}
        default = top.get("default_character", next(iter(characters)))
        if not isinstance(default, str) or default not in characters:
            raise self.fail("default_character", f"{default!r} is not a configured character")
        return Config(
            source=self.source,
            voices=MappingProxyType(voices),
            characters=MappingProxyType(characters),
            default_character=default,
            server=self.server(top.get("server")),
        )

    def voice(self, name: str, raw: Any) -> VoiceSpec:
        key = f"voices.{name}"
        self.name(name, key)
        if isinstance(raw, str):
            raw = {"checkpoint": raw}
        v = self.mapping(raw, key, ("checkpoint", "tiny", "description"))
        description = self.string(v.get("description", ""), f"{key}.description")
        if ("checkpoint" in v) == ("tiny" in v):
            raise self.fail(key, "give exactly one of 'checkpoint: PATH|default' or 'tiny: SEED'")
        if "tiny" in v:
            seed = self.integer(v["tiny"], f"{key}.tiny", 0, 2**31 - 1)
            return VoiceSpec(name, "tiny", seed=seed, description=description or f"tiny random voice (seed {seed})")
        ckpt = self.string(v["checkpoint"], f"{key}.checkpoint")
        if ckpt == "default":
            return VoiceSpec(name, "default", description=description or "the shipped default voice")
        path = Path(ckpt).expanduser()
        if not path.is_absolute():
            if self.base_dir is None:
                raise self.fail(f"{key}.checkpoint", f"relative path {ckpt!r} needs a config file on disk")
            path = self.base_dir / path
        if not path.exists():
            raise self.fail(f"{key}.checkpoint", f"{str(path)!r} does not exist")
        return VoiceSpec(name, "checkpoint", path=str(path), description=description)

    def character(self, name: str, raw: Any, voices: Mapping[str, VoiceSpec]) -> CharacterSpec:
        key = f"characters.{name}"
        self.name(name, key)
        allowed = ("voice", "description", *CHARACTER_RANGES, "style", "lexicon", "format")
        c = self.mapping(raw, key, allowed)
        voice = self.string(c.get("voice", "default"), f"{key}.voice")
        if voice not in voices:
            raise self.fail(f"{key}.voice", f"unknown voice {voice!r}; configured: {', '.join(sorted(voices))}")
        controls = {k: self.number(c[k], f"{key}.{k}", lo, hi) for k, (lo, hi) in CHARACTER_RANGES.items() if k in c}
        style = self.string(c.get("style", ""), f"{key}.style")
        if style and style not in STYLES:
            raise self.fail(f"{key}.style", f"{style!r} is not one of {', '.join(STYLES)}")
        lexicon: dict[str, str] = {}
        for word, ipa in self.mapping(c.get("lexicon"), f"{key}.lexicon").items():
            if not isinstance(ipa, str) or not ipa.strip():
                raise self.fail(f"{key}.lexicon.{word}", f"expected an IPA string, got {ipa!r}")
            try:
                validate_lexicon({word.lower(): ipa.strip()})
            except ValueError as e:
                raise self.fail(f"{key}.lexicon.{word}", str(e)) from e
            lexicon[word.lower()] = ipa.strip()
        fmt = self.mapping(c.get("format"), f"{key}.format", ("encoding", "sample_rate"))
        encoding = self.string(fmt.get("encoding", DEFAULT_ENCODING), f"{key}.format.encoding").lower()
        if encoding not in ENCODINGS:
            raise self.fail(f"{key}.format.encoding", f"{encoding!r} is not one of {', '.join(ENCODINGS)}")
        rate = fmt.get("sample_rate", DEFAULT_SAMPLE_RATE)
        if rate not in SAMPLE_RATES or isinstance(rate, bool):
            raise self.fail(f"{key}.format.sample_rate", f"{rate!r} is not one of {', '.join(map(str, SAMPLE_RATES))}")
        return CharacterSpec(
            name=name,
            voice=voice,
            description=self.string(c.get("description", ""), f"{key}.description"),
            lexicon=MappingProxyType(lexicon),
            encoding=encoding,
            sample_rate=int(rate),
            style=style,
            **controls,
        )

    def server(self, raw: Any) -> ServerSettings:
        names = tuple(f.name for f in fields(ServerSettings))
        s = self.mapping(raw, "server", names)
        out: dict[str, Any] = {}
        for k in ("host", "device", "tls_cert", "tls_key", "token_file", "token_env"):
            if s.get(k) is not None:
                out[k] = self.string(s[k], f"server.{k}")
        if "engine_process" in s:
            value = s["engine_process"]
            if isinstance(value, bool):  # YAML reads a bare on/off as a boolean
                value = "on" if value else "off"
            mode = self.string(value, "server.engine_process").lower()
            if mode not in ("auto", "on", "off"):
                raise self.fail("server.engine_process", f"{value!r} is not one of auto, on, off")
            out["engine_process"] = mode
        ints = (
            ("port", 0, 65535),
            ("metrics_port", 0, 65535),
            ("slots", 2, 1_000_000),
            ("frames_per_tick", 1, 64),
            ("max_batch", 0, 1_000_000),
            ("threads", 0, 1024),
            ("step_threads", 0, 64),
            ("host_cache_characters", 0, 100_000_000),
            ("max_waiting_per_character", 0, 100_000),
            ("max_line_symbols", 0, 1_000_000),
        )
        for k, lo, hi in ints:
            if k in s:
                out[k] = self.integer(s[k], f"server.{k}", lo, hi)
        if "max_text_bytes" in s:
            out["max_text_bytes"] = self.integer(s["max_text_bytes"], "server.max_text_bytes", 1, 1 << 20)
        if "max_queue_wait_s" in s:
            out["max_queue_wait_s"] = self.number(s["max_queue_wait_s"], "server.max_queue_wait_s", 0.0, 3600.0)
        if "max_load" in s:
            out["max_load"] = self.number(s["max_load"], "server.max_load", 0.0, 10.0)
        if "lookahead_ms" in s:
            out["lookahead_ms"] = self.number(s["lookahead_ms"], "server.lookahead_ms", 0.0, 1e9)
        if "host_cache_mb" in s:
            out["host_cache_mb"] = self.number(s["host_cache_mb"], "server.host_cache_mb", 0.0, 1e7)
        if "prepare_cache_mb" in s:
            out["prepare_cache_mb"] = self.number(s["prepare_cache_mb"], "server.prepare_cache_mb", 0.0, 1e6)
        if "lead_slack_ms" in s:
            out["lead_slack_ms"] = self.number(s["lead_slack_ms"], "server.lead_slack_ms", 0.0, 1e9)
        out |= self.limits(s)
        if out.get("device", "auto") not in ("auto", "cpu", "cuda"):
            raise self.fail("server.device", f"{out['device']!r} is not one of auto, cpu, cuda")
        if ("tls_cert" in out) != ("tls_key" in out):
            raise self.fail("server", "give both tls_cert and tls_key, or neither")
        if out.get("metrics_port") and out["metrics_port"] == out.get("port", ServerSettings.port):
            raise self.fail("server.metrics_port", f"{out['metrics_port']} is server.port too: use another port")
        for k in ("tls_cert", "tls_key", "token_file"):
            if k in out and self.base_dir is not None and not Path(out[k]).is_absolute():
                out[k] = str(self.base_dir / out[k])
        return ServerSettings(**out)

    def limits(self, s: dict[str, Any]) -> dict[str, Any]:
        """The per-client limits of ``server:`` (ranges keep each one meaningful: no 0-byte ids)."""
        ints = (
            ("max_id_bytes", 16, 4096),
            ("max_contexts_per_call", 1, 256),
            ("max_buffered_text_bytes", 64, 1 << 26),
            ("max_output_buffer_bytes", 1 << 16, 1 << 30),
            ("max_concurrent_rpcs", 0, 1_000_000),
            ("max_receive_message_bytes", 1 << 16, 1 << 30),
            ("max_send_message_bytes", 1 << 16, 1 << 30),
        )
        seconds = (
            ("context_idle_timeout_s", 0.0, 86400.0),
            ("slow_reader_timeout_s", 0.1, 3600.0),
            ("drain_grace_s", 0.0, 600.0),
            ("keepalive_time_s", 1.0, 86400.0),
            ("keepalive_timeout_s", 1.0, 3600.0),
            ("max_connection_age_s", 0.0, 1e7),
            ("max_connection_age_grace_s", 0.0, 1e7),
        )
        out: dict[str, Any] = {k: self.integer(s[k], f"server.{k}", lo, hi) for k, lo, hi in ints if k in s}
        out |= {k: self.number(s[k], f"server.{k}", lo, hi) for k, lo, hi in seconds if k in s}
        return out
