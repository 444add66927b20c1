"""Domain errors -> gRPC status codes, in one place.

Every servicer method runs its body inside ``async with grpc_errors(context):``; the table
below is the whole mapping. Anything not listed is a bug: it is logged with its traceback and
reported as INTERNAL without leaking details.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from npc_voice.config import CharacterIdError, UnknownCharacterError
from npc_voice.engine.api import CapacityError, StateFormatError, UnknownVoiceError
from npc_voice.model.api import TextError

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request field the server itself rejects (empty text, bad rate, override out of range)."""


# First match wins; order subclasses before their bases.
STATUS_OF: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (UnknownCharacterError, grpc.StatusCode.NOT_FOUND),
    (UnknownVoiceError, grpc.StatusCode.NOT_FOUND),
    (CharacterIdError, grpc.StatusCode.INVALID_ARGUMENT),
    (RequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (TextError, grpc.StatusCode.INVALID_ARGUMENT),
    (StateFormatError, grpc.StatusCode.INVALID_ARGUMENT),
    (CapacityError, grpc.StatusCode.RESOURCE_EXHAUSTED),
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
    except _MAPPED as e:
        code = status_of(e)
        assert code is not None
        log.info("%s rejected: %s %s", method, code.name, message_of(e))
        await context.abort(code, message_of(e))
    except grpc.aio.AbortError:
        raise
    except Exception:
        log.exception("%s failed with an unexpected error", method)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method or 'the daemon'}; see the daemon log")
