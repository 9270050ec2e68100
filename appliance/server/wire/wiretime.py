"""Which encoding of times a client reads: integer nanoseconds, or RFC 3339 text.

Stored and computed times are integer nanoseconds since the epoch, and that is what our own
clients and Stream's Python SDK (``getstream``) decode. Stream's client SDKs
(``@stream-io/video-client`` and the React, React Native, Android and iOS SDKs built on the same
protocol) declare every time as an RFC 3339 string: an integer becomes ``Invalid Date`` in their
call state. They name themselves in ``X-Stream-Client`` (a REST header, and a query parameter of
the WebSocket URL): ``stream-video-js-v1.60.0|client_bundle=…``, while ``getstream`` sends
``stream-python-client-…``. A client whose name starts with ``stream-video-`` gets RFC 3339.

``rfc3339_times`` rewrites a response or event on the way out: every ``*_at`` integer and the
per-user times of ``accepted_by``/``rejected_by``/``missed_by``. ``custom`` objects are a
client's own data and are left alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

STREAM_VIDEO_CLIENT_PREFIX = "stream-video-"
# Bounded: a header of any length is only looked at this far.
_NAME_CHARS = 64
_BY_USER = frozenset({"accepted_by", "rejected_by", "missed_by"})
_NS = 1_000_000_000

_rfc3339: ContextVar[bool] = ContextVar("rfc3339_times", default=False)


def wants_rfc3339(client_name: str | None) -> bool:
    """Does the client that sent this ``X-Stream-Client`` value read times as RFC 3339?"""
    return bool(client_name) and client_name[:_NAME_CHARS].lower().startswith(  # type: ignore[index]
        STREAM_VIDEO_CLIENT_PREFIX
    )


@contextmanager
def responses_in_rfc3339(enabled: bool) -> Iterator[None]:
    """While handling one request: JSON responses rendered in this context use RFC 3339."""
    token = _rfc3339.set(enabled)
    try:
        yield
    finally:
        _rfc3339.reset(token)


def current_wants_rfc3339() -> bool:
    return _rfc3339.get()


def rfc3339(ns: int) -> str:
    """``1733400000123456789`` → ``"2024-12-05T12:00:00.123456789Z"`` (JavaScript's ``Date``
    reads it to the millisecond; nothing is rounded away for the other digits)."""
    seconds, rest = divmod(ns, _NS)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest:09d}Z"


def _time(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return rfc3339(value)
    return value


def rfc3339_times(value: Any) -> Any:
    """A copy of ``value`` with its times as RFC 3339 text (see the module docstring)."""
    if isinstance(value, list):
        return [rfc3339_times(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "custom":
            out[key] = item
        elif isinstance(key, str) and key.endswith("_at"):
            out[key] = _time(item)
        elif key in _BY_USER and isinstance(item, dict):
            out[key] = {k: _time(v) for k, v in item.items()}
        else:
            out[key] = rfc3339_times(item)
    return out
