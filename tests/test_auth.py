"""Shared-secret token on every call (health and reflection included) and TLS."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from conftest import DaemonThread, start_daemon
from grpc_health.v1 import health_pb2, health_pb2_grpc

from npc_voice.client import NpcVoiceClient, speak_request
from npc_voice.server.auth import TokenError, read_token
from npc_voice.v1 import npc_voice_pb2 as pb
from npc_voice.v1 import npc_voice_pb2_grpc as pb_grpc

TOKEN = "s3cret-token-never-logged"


def test_read_token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "token"
    f.write_text(f"  {TOKEN}\n", encoding="utf-8")
    assert read_token(str(f)) == TOKEN
    monkeypatch.setenv("NPC_TEST_TOKEN", TOKEN)
    assert read_token(token_env="NPC_TEST_TOKEN") == TOKEN
    assert read_token() is None
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    with pytest.raises(TokenError, match="empty"):
        read_token(str(tmp_path / "empty"))
    with pytest.raises(TokenError, match="NPC_UNSET_VAR"):
        read_token(token_env="NPC_UNSET_VAR")
    with pytest.raises(TokenError, match="cannot read"):
        read_token(str(tmp_path / "missing"))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> object:
    tmp = tmp_path_factory.mktemp("auth")
    (tmp / "token").write_text(TOKEN, encoding="utf-8")
    d = start_daemon(tmp, token_file=str(tmp / "token"))
    yield d
    d.stop()


def unauthenticated(fn: object) -> None:
    with pytest.raises(grpc.RpcError) as info:
        result = fn()  # type: ignore[operator]
        if not isinstance(result, pb.ListCharactersResponse | health_pb2.HealthCheckResponse):
            list(result)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value
    assert "authorization" in info.value.details()


def test_every_call_needs_the_token(secured: DaemonThread, caplog: pytest.LogCaptureFixture) -> None:
    with grpc.insecure_channel(secured.address) as ch:
        stub = pb_grpc.NpcVoiceStub(ch)
        health = health_pb2_grpc.HealthStub(ch)
        wrong = (("authorization", "Bearer not-the-token"),)
        with caplog.at_level(logging.DEBUG):
            unauthenticated(lambda: stub.ListCharacters(pb.ListCharactersRequest()))
            unauthenticated(lambda: stub.ListCharacters(pb.ListCharactersRequest(), metadata=wrong))
            unauthenticated(lambda: stub.Speak(speak_request("Hello there.")))
            unauthenticated(lambda: stub.Converse(iter([pb.ConverseRequest(text="Hi.")])))
            unauthenticated(lambda: health.Check(health_pb2.HealthCheckRequest()))
    assert TOKEN not in caplog.text
    with NpcVoiceClient(secured.address, token=TOKEN) as client:
        assert client.health()
        assert client.list_characters().default_character == "guard"
        pcm, rate, _ = client.speak_to_array("Hello there.", "guard/auth")
        assert rate == 22050 and len(pcm) > 0


def test_tls(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl CLI not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    d = start_daemon(tmp_path, tls_cert=str(cert), tls_key=str(key))
    try:
        with NpcVoiceClient(d.address, tls_ca=str(cert)) as client:
            assert client.health()
            _, rate, marks = client.speak_to_array("Hello there.", "merchant/tls")
            assert rate == 22050 and marks.words
        with grpc.insecure_channel(d.address) as ch:  # plaintext against a TLS port fails
            with pytest.raises(grpc.RpcError):
                pb_grpc.NpcVoiceStub(ch).ListCharacters(pb.ListCharactersRequest(), timeout=5)
    finally:
        d.stop()
