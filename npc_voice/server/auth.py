"""Shared-secret authentication: `authorization: Bearer <token>` on every call.

When a token is configured, EVERY method needs it — NpcVoice, grpc.health.v1.Health and
server reflection alike (a daemon reachable from elsewhere should not even reveal its API
to strangers). Without a token configured nothing is checked (loopback use).
The token is read from a file or an environment variable and never logged. ``TokenSource``
re-reads the file on SIGHUP: calls started after that need the new token, calls already
running go on (a token is checked once, when a call starts). Rejections are logged at most
once per ``REJECTION_LOG_INTERVAL_S`` with a count, so a client retrying in a loop cannot flood
the log.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger(__name__)

_BEARER = "bearer "
REJECTION_LOG_INTERVAL_S = 10.0


class TokenError(ValueError):
    """The configured token source is missing or empty."""


def read_token(token_file: str | None = None, token_env: str | None = None) -> str | None:
    """The shared secret from a file (stripped) or an environment variable; None when neither is set."""
    if token_file and token_env:
        raise TokenError("give a token file or a token environment variable, not both")
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise TokenError(f"cannot read token file {token_file!r}: {e.strerror or e}") from e
        if not token:
            raise TokenError(f"token file {token_file!r} is empty")
        return token
    if token_env:
        token = os.environ.get(token_env, "").strip()
        if not token:
            raise TokenError(f"environment variable {token_env!r} is unset or empty")
        return token
    return None


class TokenSource:
    """The token in force; ``reload()`` (SIGHUP) re-reads its file. A token from the environment
    cannot change while the process runs: rotate with token_file."""

    def __init__(self, token_file: str | None = None, token_env: str | None = None, token: str | None = None) -> None:
        self.token_file, self.token_env = token_file, token_env
        self.token = token if token is not None else read_token(token_file, token_env)

    def reload(self) -> bool:
        """Re-read the token; True when it changed. A missing or empty file keeps the old one."""
        if not self.token_file:
            return False
        try:
            token = read_token(self.token_file)
        except TokenError as e:
            log.error("token not rotated, the current one stays in force: %s", e)
            return False
        changed = token != self.token
        self.token = token
        if changed:
            log.info("token rotated: calls from now on need the new one")
        return changed


class RejectionLog:
    """At most one log line per ``interval_s`` about rejected calls, with how many there were."""

    def __init__(self, interval_s: float = REJECTION_LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.clock = clock
        self.count = 0  # rejections not reported yet
        self.reported = 0  # lines written
        self._last = -float("inf")

    def rejected(self, method: str) -> None:
        self.count += 1
        now = self.clock()
        if now - self._last >= self.interval_s:
            log.warning(
                "rejected %d unauthenticated call(s) since the last report (latest to %s); at most one line per %g s",
                self.count,
                method,
                self.interval_s,
            )
            self.count, self._last = 0, now
            self.reported += 1


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without the right bearer token with UNAUTHENTICATED (constant-time compare)."""

    def __init__(self, token: str | TokenSource, rejections: RejectionLog | None = None) -> None:
        self.source = token if isinstance(token, TokenSource) else TokenSource(token=token)
        self.rejections = rejections or RejectionLog()

    @property
    def _expected(self) -> bytes:
        return (self.source.token or "").encode("utf-8")

    def _authorized(self, metadata: tuple[tuple[str, str | bytes], ...] | None) -> bool:
        for key, value in metadata or ():
            if key != "authorization":
                continue
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            if text[: len(_BEARER)].lower() == _BEARER:
                return hmac.compare_digest(text[len(_BEARER) :].strip().encode("utf-8"), self._expected)
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or self._authorized(handler_call_details.invocation_metadata):  # type: ignore[attr-defined]
            return handler
        self.rejections.rejected(handler_call_details.method)  # type: ignore[attr-defined]
        return _deny(handler)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach ("localhost", 127.0.0.0/8, ::1, unix sockets)."""
    host = host.strip().strip("[]")
    if host.startswith("unix:") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "0.0.0.0" is an address; a host name may resolve anywhere


def exposure_warnings(host: str, tls: bool, token: bool) -> list[str]:
    """What an operator should hear about a bind other machines can reach (logged once at start)."""
    if is_loopback(host):
        return []
    out = []
    if not tls:
        out.append(
            f"listening on {host} without TLS: audio, text and any token cross the network in clear "
            "(set server.tls_cert/tls_key)"
        )
    if not token:
        out.append(
            f"listening on {host} without a token: anyone who reaches the port can use every method "
            "(set server.token_file)"
        )
    return out


_DENIED = "missing or wrong 'authorization: Bearer <token>' metadata"


def _deny(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    return refusing(handler, grpc.StatusCode.UNAUTHENTICATED, _DENIED)


def refusing(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that fails every call with ``code``."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # pragma: no cover  (makes this an async generator)

    de, ser = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, de, ser)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, de, ser)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, de, ser)
    return grpc.unary_unary_rpc_method_handler(unary, de, ser)


class DrainGate(grpc.aio.ServerInterceptor):
    """While the daemon drains, every new call except health checks fails with UNAVAILABLE.

    The gRPC server itself keeps accepting until the drain is over: a call that arrives
    while grpc-core shuts down can end CANCELLED, a code clients do not retry. UNAVAILABLE
    is the code gRPC retry policies and balancers treat as "try another instance"."""

    MESSAGE = "npc-voice is shutting down (draining); retry on another instance"

    def __init__(self) -> None:
        self.closed = False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None or not self.closed or method.startswith("/grpc.health.v1.Health/"):
            return handler
        return refusing(handler, grpc.StatusCode.UNAVAILABLE, self.MESSAGE)
