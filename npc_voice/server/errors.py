"""Domain errors -> gRPC status codes, in one place.

Every servicer method runs its body inside ``async with grpc_errors(context):``; the table
below is the whole mapping. Anything not listed is a bug: it is logged with its traceback and
reported as INTERNAL without leaking details.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from npc_voice.config import CharacterIdError, UnknownCharacterError
from npc_voice.contracts import TextError
from npc_voice.engine.api import (
    CapacityError,
    EngineUnavailableError,
    StateFormatError,
    StepError,
    UnknownVoiceError,
)

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request field the server itself rejects (empty text, bad rate, override out of range)."""


class LimitError(Exception):
    """A per-client limit of the ``server:`` config was reached (contexts, queued text or audio)."""


class SlowReaderError(LimitError):
    """The client stopped reading: a response could not be written within slow_reader_timeout_s."""


class CallEndedError(Exception):
    """A response could not be written: the client cancelled or went away. Nothing to report to it."""


# How long an abort may wait to queue its status. A status goes out behind the responses the
# client has not read yet: for a client that stopped reading, awaiting it would never return.
ABORT_WAIT_S = 1.0


# First match wins; order subclasses before their bases.
STATUS_OF: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (UnknownCharacterError, grpc.StatusCode.NOT_FOUND),
    (UnknownVoiceError, grpc.StatusCode.NOT_FOUND),
    (CharacterIdError, grpc.StatusCode.INVALID_ARGUMENT),
    (RequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (TextError, grpc.StatusCode.INVALID_ARGUMENT),
    (StateFormatError, grpc.StatusCode.INVALID_ARGUMENT),
    (CapacityError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (LimitError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (EngineUnavailableError, grpc.StatusCode.UNAVAILABLE),  # stopping, or the engine process restarts
    (StepError, grpc.StatusCode.INTERNAL),  # a known fault (logged where it happened), only its streams fail
)


def status_of(exc: BaseException) -> grpc.StatusCode | None:
    for kind, code in STATUS_OF:
        if isinstance(exc, kind):
            return code
    return None


def message_of(exc: BaseException) -> str:
    # UnknownCharacterError is a LookupError: str() of a KeyError-like quotes its argument.
    return str(exc.args[0]) if exc.args else type(exc).__name__


_MAPPED = tuple(kind for kind, _ in STATUS_OF)


@asynccontextmanager
async def grpc_errors(context: grpc.aio.ServicerContext, method: str = "") -> AsyncIterator[None]:
    """Turn domain exceptions raised in the body into ``context.abort(code, message)``."""
    try:
        yield
    except CallEndedError as e:  # the client is gone (cancel, deadline, disconnect): nobody reads a status,
        remaining = context.time_remaining()  # but metrics and logs should say what happened
        expired = remaining is not None and remaining <= 0
        context.set_code(grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED)
        log.debug("%s ended by the client: %s", method, e)
    except _MAPPED as e:
        code = status_of(e)
        assert code is not None
        log.info("%s rejected: %s %s", method, code.name, message_of(e))
        await abort(context, code, message_of(e))
    except grpc.aio.AbortError:
        raise
    except Exception:
        log.exception("%s failed with an unexpected error", method)
        message = f"internal error in {method or 'the daemon'}; see the daemon log"
        await abort(context, grpc.StatusCode.INTERNAL, message)


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    """``context.abort`` that gives up waiting after ABORT_WAIT_S.

    Raises AbortError as ``context.abort`` does; returns only when the status is queued behind
    responses a client has not read: the handler then simply returns (the client sees the status
    if it ever reads on; the connection's keepalive or max age ends it otherwise)."""
    try:
        await asyncio.wait_for(context.abort(code, message), ABORT_WAIT_S)
    except asyncio.TimeoutError:
        log.info("status %s queued behind unread responses: the client is not reading", code.name)
