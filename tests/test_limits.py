"""The ``server:`` limits as configuration, gRPC options and warnings (no daemon needed)."""

from __future__ import annotations

import logging
import warnings
from importlib import resources

import pytest

from npc_voice.client import NpcVoiceClient, warn_token_in_clear
from npc_voice.config import ConfigError, ServerSettings, parse_config
from npc_voice.server.app import server_options
from npc_voice.server.auth import RejectionLog, exposure_warnings, is_loopback

BASE = "characters:\n  guard: {voice: default}\nserver:\n"


def settings(text: str) -> ServerSettings:
    return parse_config(BASE + text, source="t.yaml", base_dir=None).server


def test_defaults_are_bounded() -> None:
    s = ServerSettings()
    assert (s.max_id_bytes, s.max_contexts_per_call, s.max_buffered_text_bytes) == (128, 8, 65536)
    assert (s.context_idle_timeout_s, s.slow_reader_timeout_s, s.drain_grace_s) == (60.0, 10.0, 5.0)
    assert s.max_output_buffer_bytes == 4 << 20 and s.max_concurrent_rpcs == 1024
    assert s.max_receive_message_bytes == 4 << 20 and s.max_send_message_bytes == 16 << 20


def test_limits_parse_and_quote_the_bad_value() -> None:
    s = settings("  max_id_bytes: 64\n  context_idle_timeout_s: 0\n  slow_reader_timeout_s: 2.5\n")
    assert s.max_id_bytes == 64 and s.context_idle_timeout_s == 0.0 and s.slow_reader_timeout_s == 2.5
    with pytest.raises(ConfigError, match=r"t.yaml: server.max_id_bytes: 0 is out of range \[16, 4096\]"):
        settings("  max_id_bytes: 0\n")
    with pytest.raises(ConfigError, match=r"server.max_contexts_per_call: expected an integer .* got 'many'"):
        settings("  max_contexts_per_call: many\n")
    with pytest.raises(ConfigError, match=r"server.slow_reader_timeout_s: 0 is out of range"):
        settings("  slow_reader_timeout_s: 0\n")
    with pytest.raises(ConfigError, match=r"server.max_sessions: unknown key"):
        settings("  max_sessions: 3\n")


def test_server_options_carry_the_limits() -> None:
    opts = dict(server_options(settings("  keepalive_time_s: 20\n  max_connection_age_s: 9000000\n")))
    assert opts["grpc.keepalive_time_ms"] == 20_000 and opts["grpc.keepalive_timeout_ms"] == 10_000
    assert opts["grpc.max_connection_age_ms"] == 2**31 - 1  # clamped to grpc's int
    assert opts["grpc.max_receive_message_length"] == 4 << 20 and opts["grpc.so_reuseport"] == 0
    assert "grpc.max_connection_age_ms" not in dict(server_options(settings("  max_connection_age_s: 0\n")))


def test_rejections_are_logged_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    rejections = RejectionLog(interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="npc_voice.server.auth"):
        for i in range(1000):  # a client retrying in a tight loop for 25 s
            now[0] = 100.0 + i * 0.025
            rejections.rejected("/npc_voice.v1.NpcVoice/Speak")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 == rejections.reported, lines  # at t = 0, 10 and 20 s
    assert lines[0].startswith("rejected 1 unauthenticated") and lines[1].startswith("rejected 400 ")
    assert rejections.count == 199  # reported with the next line


def test_exposure_warnings() -> None:
    assert exposure_warnings("127.0.0.1", tls=False, token=False) == []
    assert exposure_warnings("::1", tls=False, token=False) == []
    both = exposure_warnings("0.0.0.0", tls=False, token=False)
    assert len(both) == 2 and "without TLS" in both[0] and "without a token" in both[1]
    assert exposure_warnings("10.1.2.3", tls=True, token=True) == []
    assert not is_loopback("game-host.internal") and is_loopback("localhost") and is_loopback("[::1]")


def test_client_warns_once_about_a_token_in_clear() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_token_in_clear("127.0.0.1:50051", "secret", None)  # loopback: fine
        warn_token_in_clear("10.9.9.9:50051", None, None)  # no token: fine
        warn_token_in_clear("10.9.9.9:50051", "secret", b"CA")  # TLS: fine
        NpcVoiceClient("10.9.9.8:50051", token="secret").close()
        NpcVoiceClient("10.9.9.8:50051", token="secret").close()  # the same address: once
    assert len(caught) == 1 and "plaintext" in str(caught[0].message) and "secret" not in str(caught[0].message)


LIMITS = (
    "max_id_bytes",
    "max_contexts_per_call",
    "context_idle_timeout_s",
    "max_buffered_text_bytes",
    "max_output_buffer_bytes",
    "slow_reader_timeout_s",
    "drain_grace_s",
    "max_concurrent_rpcs",
    "keepalive_time_s",
    "keepalive_timeout_s",
    "max_connection_age_s",
    "max_connection_age_grace_s",
    "max_receive_message_bytes",
    "max_send_message_bytes",
)


def test_embedded_voices_yaml_documents_the_defaults() -> None:
    """Every limit is written out in the embedded voices.yaml, with the code's default."""
    from npc_voice.config import load_config

    embedded, defaults = load_config(None).server, ServerSettings()
    for name in LIMITS:
        assert getattr(embedded, name) == getattr(defaults, name), name
    text = resources.files("npc_voice").joinpath("voices.yaml").read_text(encoding="utf-8")
    assert all(f"  {name}:" in text for name in LIMITS)
