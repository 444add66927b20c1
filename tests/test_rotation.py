"""Token and TLS certificate rotation without a restart and without dropping a connection."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import TINY_CONFIG, start_daemon
from live_daemon import LiveDaemon, read_in_thread

from npc_voice.client import NpcVoiceClient, speak_request
from npc_voice.v1 import npc_voice_pb2 as pb
from npc_voice.v1 import npc_voice_pb2_grpc as pb_grpc

OLD, NEW = "old-token-0123456789", "new-token-9876543210"
LINE = "The gate opens at dawn and closes at dusk, so be quick about your business in town."


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def code_of(stub: pb_grpc.NpcVoiceStub, token: str) -> grpc.StatusCode:
    try:
        stub.ListCharacters(pb.ListCharactersRequest(), metadata=bearer(token), timeout=10)
    except grpc.RpcError as e:
        return e.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_token_rotates_on_sighup_and_an_open_stream_goes_on(tmp_path: Path) -> None:
    (tmp_path / "voices.yaml").write_text(TINY_CONFIG, encoding="utf-8")
    token_file = tmp_path / "token"
    token_file.write_text(OLD + "\n", encoding="utf-8")
    live = LiveDaemon(tmp_path / "voices.yaml", "--token-file", str(token_file))
    try:
        with grpc.insecure_channel(live.address) as ch:
            stub = pb_grpc.NpcVoiceStub(ch)
            assert code_of(stub, OLD) == grpc.StatusCode.OK
            audio = threading.Event()
            call = stub.Speak(speak_request(LINE, "guard/rot"), metadata=bearer(OLD), timeout=60)
            speaking = read_in_thread(call, audio)
            assert audio.wait(30)
            token_file.write_text(NEW + "\n", encoding="utf-8")
            live.signal(signal.SIGHUP)
            assert live.wait_for_log("token rotated"), live.output
            assert code_of(stub, OLD) == grpc.StatusCode.UNAUTHENTICATED
            assert code_of(stub, NEW) == grpc.StatusCode.OK
            token_file.write_text("", encoding="utf-8")  # an empty file is refused: NEW stays in force
            live.signal(signal.SIGHUP)
            assert live.wait_for_log("token not rotated"), live.output
            assert code_of(stub, NEW) == grpc.StatusCode.OK
            responses = speaking.result(timeout=60)  # the stream opened with the old token finished
            assert isinstance(responses, list), responses
            assert responses[-1].end.reason == pb.END_REASON_COMPLETED
            assert OLD not in live.output and NEW not in live.output  # tokens are never logged
        live.signal(signal.SIGTERM)
        assert live.wait_exit(30)[0] == 0
    finally:
        live.kill()


def make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl CLI not installed: cannot make a test certificate")
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}"]
        + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key


def works(address: str, ca: Path) -> bool:
    try:
        with NpcVoiceClient(address, tls_ca=str(ca)) as c:
            c.stub.ListCharacters(pb.ListCharactersRequest(), timeout=5)
        return True
    except grpc.RpcError:
        return False


@pytest.fixture
def tls_files(tmp_path: Path) -> Iterator[tuple[Path, Path, Path, Path]]:
    one, one_key = make_cert(tmp_path, "one")
    two, two_key = make_cert(tmp_path, "two")
    yield one, one_key, two, two_key


def test_tls_certificate_rotates_without_dropping_connections(
    tmp_path: Path, tls_files: tuple[Path, Path, Path, Path]
) -> None:
    one, one_key, two, two_key = tls_files
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(one, cert)
    shutil.copy(one_key, key)
    d = start_daemon(tmp_path, tls_cert=str(cert), tls_key=str(key))
    try:
        assert works(d.address, one) and not works(d.address, two)
        with NpcVoiceClient(d.address, tls_ca=str(one)) as held:  # a connection made with the old certificate
            audio = threading.Event()
            speaking = read_in_thread(held.speak(LINE, "guard/tls"), audio)
            assert audio.wait(30)
            shutil.copy(two, cert)
            shutil.copy(two_key, key)
            d.daemon.reload_credentials()  # what SIGHUP does
            assert works(d.address, two) and not works(d.address, one)  # new handshakes: the new certificate
            responses = speaking.result(timeout=60)
            assert isinstance(responses, list) and responses[-1].end.reason == pb.END_REASON_COMPLETED
            held.list_characters()  # the old connection still serves new calls
        shutil.copy(one, cert)  # a key that does not match the certificate: refused, the current one stays
        d.daemon.reload_credentials()  # what SIGHUP does
        assert works(d.address, two)
        assert d.daemon.certificate is not None and d.daemon.certificate.rotations == 1
    finally:
        d.stop()
