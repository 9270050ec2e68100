"""What every route does on the way out: the ``duration`` field; and request timestamps.

Events leave through the outbox (``lifecycle/outbox.py``), never from here."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import Request
from pydantic import BeforeValidator, WithJsonSchema

from appliance.errors import InvalidRequest
from appliance.server.context import ServerContext

log = logging.getLogger(__name__)


def ctx_of(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


def reply(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """Add Stream's ``duration`` (server time spent, e.g. ``"1.52ms"``)."""
    started = getattr(request.state, "started", None)
    spent = (time.perf_counter() - started) * 1000 if started is not None else 0.0
    body["duration"] = f"{spent:.2f}ms"
    return body


def _request_time(value: Any) -> Any:
    """One rule for times in requests: a JSON integer is nanoseconds since the epoch, a string is
    RFC 3339. A fraction (``1700000000.5``) or a number in a string (``"1700000000"``) was read
    as seconds by the parser before; neither is either form, so both are refused."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, float) and value.is_integer() and not isinstance(value, bool):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_NS:
            raise ValueError("timestamp is out of range (1970 to 2262)")
        return value
    if isinstance(value, str):
        return value
    raise ValueError(
        'a time is RFC 3339 text ("2030-01-02T09:00:00Z") or integer nanoseconds since the epoch'
    )


# A time in a request body; ``to_ns`` turns an RFC 3339 string into nanoseconds.
RequestTime = Annotated[
    int | str | datetime | None,
    BeforeValidator(_request_time),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "description": "nanoseconds since the epoch"},
                {"type": "string", "format": "date-time"},
                {"type": "null"},
            ]
        }
    ),
]


def to_ns(value: datetime | int | str | None, field: str) -> int | None:
    """A request timestamp (RFC 3339 or integer nanoseconds) as integer nanoseconds."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidRequest("a timestamp must be RFC 3339 or integer nanoseconds", field=field)
    if isinstance(value, int):
        return _in_range(value, field)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest(f"{value!r} is not an RFC 3339 timestamp", field=field) from None
    if value.tzinfo is None:
        raise InvalidRequest("a timestamp needs a time zone (e.g. Z)", field=field)
    try:
        seconds = int(value.timestamp())
    except (OverflowError, OSError, ValueError):
        raise InvalidRequest("timestamp is out of range", field=field) from None
    return _in_range(seconds * 1_000_000_000 + value.microsecond * 1000, field)


# Nanoseconds in a signed 64-bit column: up to the year 2262.
MAX_NS = 2**63 - 1


def _in_range(ns: int, field: str) -> int:
    if not 0 <= ns <= MAX_NS:
        raise InvalidRequest("timestamp is out of range (1970 to 2262)", field=field)
    return ns
