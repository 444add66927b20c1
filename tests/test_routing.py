"""Every Python client the project ships sends `x-npc-character` (character-affine routing).

A capturing gRPC server records each call's metadata and answers UNIMPLEMENTED; the clients
talk to it over real loopback gRPC.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from npc_voice.client import CHARACTER_HEADER, AsyncNpcVoiceClient, NpcVoiceClient, routing_metadata
from npc_voice.loadtest.client_sim import SimConfig, Simulation
from npc_voice.v1 import npc_voice_pb2 as pb


class Capture(grpc.GenericRpcHandler):
    """Records (method, metadata) of every call; every call fails UNIMPLEMENTED."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        with self.lock:
            self.calls.append((details.method.rsplit("/", 1)[-1], dict(details.invocation_metadata)))  # type: ignore[attr-defined]

        def fail(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "capture only")

        def fail_stream(request_iterator: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "capture only")

        if details.method.endswith("/Converse"):  # type: ignore[attr-defined]
            return grpc.stream_stream_rpc_method_handler(fail_stream)
        return grpc.unary_unary_rpc_method_handler(fail)

    def headers(self, method: str) -> list[str | None]:
        with self.lock:
            return [md.get(CHARACTER_HEADER) for m, md in self.calls if m == method]


@pytest.fixture()
def capture() -> Iterator[tuple[Capture, str]]:
    handler = Capture()
    server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield handler, f"127.0.0.1:{port}"
    server.stop(0)


def test_routing_metadata() -> None:
    assert routing_metadata("guard/42") == ((CHARACTER_HEADER, "guard/42"),)
    assert routing_metadata("") == ()  # the default character is not routed: name it behind a proxy
    assert routing_metadata("gärd") == ()  # not carriable as metadata; the daemon rejects it anyway


def test_sync_client_sends_the_character_on_every_character_call(capture: tuple[Capture, str]) -> None:
    handler, address = capture
    with NpcVoiceClient(address, token="t") as c:
        for call in (
            lambda: list(c.speak("Hi.", "guard/1")),
            lambda: list(c.converse([pb.ConverseRequest(context_id="a")], character="merchant/2")),
            lambda: c.cancel("guard/3"),
            lambda: c.reset("guard/4"),
            lambda: c.export_state("guard/5"),
            lambda: c.import_state("guard/6", b"x"),
            lambda: list(c.speak("Hi.")),
        ):
            with pytest.raises(grpc.RpcError):
                call()
    assert handler.headers("Speak") == ["guard/1", None]
    assert handler.headers("Converse") == ["merchant/2"]
    assert handler.headers("Cancel") == ["guard/3"]
    assert handler.headers("ResetCharacter") == ["guard/4"]
    assert handler.headers("ExportCharacterState") == ["guard/5"]
    assert handler.headers("ImportCharacterState") == ["guard/6"]
    assert all(md.get("authorization") == "Bearer t" for _, md in handler.calls), "the token is kept"


def test_async_client_sends_the_character(capture: tuple[Capture, str]) -> None:
    handler, address = capture

    async def main() -> None:
        async with AsyncNpcVoiceClient(address) as c:
            with pytest.raises(grpc.aio.AioRpcError):
                await c.speak_to_array("Hi.", "goblin/7")
            call = c.converse(character="goblin/8")
            with pytest.raises(grpc.aio.AioRpcError):
                await call.write(pb.ConverseRequest(context_id="a"))
                await call.done_writing()
                async for _ in call:
                    pass
            with pytest.raises(grpc.aio.AioRpcError):
                await c.export_state("goblin/9")

    asyncio.run(main())
    assert handler.headers("Speak") == ["goblin/7"]
    assert handler.headers("Converse") == ["goblin/8"]
    assert handler.headers("ExportCharacterState") == ["goblin/9"]


def test_loadtest_calls_carry_the_character() -> None:
    sim = Simulation(SimConfig(server="127.0.0.1:1", streams=1, duration_s=1.0, token="t"))
    assert sim._meta("guard/3") == (("authorization", "Bearer t"), (CHARACTER_HEADER, "guard/3"))
