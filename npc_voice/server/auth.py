"""Shared-secret authentication: `authorization: Bearer <token>` on every call.

When a token is configured, EVERY method needs it — NpcVoice, grpc.health.v1.Health and
server reflection alike (a daemon reachable from elsewhere should not even reveal its API
to strangers). Without a token configured nothing is checked (loopback use).
The token is read from a file or an environment variable and never logged.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger(__name__)

_BEARER = "bearer "


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


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without the right bearer token with UNAUTHENTICATED (constant-time compare)."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode("utf-8")

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
        log.info("rejected unauthenticated call to %s", handler_call_details.method)  # type: ignore[attr-defined]
        return _deny(handler)


_DENIED = "missing or wrong 'authorization: Bearer <token>' metadata"


def _deny(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that fails with UNAUTHENTICATED."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)
        yield  # pragma: no cover  (makes this an async generator)

    de, ser = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, de, ser)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, de, ser)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, de, ser)
    return grpc.unary_unary_rpc_method_handler(unary, de, ser)
