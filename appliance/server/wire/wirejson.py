"""JSON on the wire: what comes in is strict JSON, what goes out never carries NaN or Infinity.

Python's ``json`` reads ``NaN``, ``Infinity`` and ``-Infinity`` (which are not JSON) and writes
them back. Stored, such a value makes SQLite's JSON functions fail on the row (every query that
filters on custom data answers 500) and a browser's ``JSON.parse`` drop the whole frame (a ring
nobody hears). ``loads`` refuses them with a 400 naming the field (``data.custom.v``), and lone
UTF-16 surrogates too (no character; the database refuses them). ``dumps`` never writes them: a
value stored before they were refused goes out as ``null``, with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from starlette.responses import JSONResponse

from appliance.errors import InvalidRequest
from appliance.server.context import ServerContext
from appliance.server.wire.wiretime import current_wants_rfc3339, rfc3339_times

log = logging.getLogger(__name__)

# Cheap pre-checks: most texts contain neither, and need no second look.
NON_FINITE_HINT = re.compile(r"NaN|Infinity")
NON_FINITE_HINT_BYTES = re.compile(rb"NaN|Infinity")
# A JSON \uD800-\uDFFF escape (not an escaped backslash followed by "ud800"): fine in a pair.
SURROGATE_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u[dD][89a-fA-F]")
SURROGATE_ESCAPE_BYTES = re.compile(rb"(?<!\\)(?:\\\\)*\\u[dD][89a-fA-F]")


class _NonFinite:
    """Stands for a NaN/Infinity constant while the text is parsed, so its place can be named."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _path(parts: list[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + p
    return out


def non_finite_path(value: Any, parts: list[str | int] | None = None) -> tuple[str, str] | None:
    """Where the first NaN/Infinity (parsed or a float) sits in ``value``, and its spelling."""
    parts = parts or []
    if isinstance(value, _NonFinite):
        return _path(parts), value.name
    if isinstance(value, float) and not math.isfinite(value):
        return _path(parts), repr(value)
    if isinstance(value, dict):
        for key, item in value.items():
            found = non_finite_path(item, [*parts, str(key)])
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = non_finite_path(item, [*parts, i])
            if found:
                return found
    return None


def refuse_non_finite(value: Any, where: str = "") -> None:
    """400 naming the field of the first NaN/Infinity in already parsed ``value``."""
    found = non_finite_path(value)
    if found is None:
        return
    path, name = found
    field = ".".join(p for p in (where, path) if p) or "body"
    raise InvalidRequest(
        f"{field}: {name} is not a JSON number (NaN and Infinity are refused)", field=field
    )


def loads(text: str | bytes, where: str = "", *, name: str = "body") -> Any:
    """Strict JSON: ``InvalidRequest`` on any problem, naming ``where`` (the field the text
    came in, if any) or else the ``name`` of the whole text ("frame")."""
    field = where or None
    try:
        value = json.loads(text, parse_constant=_NonFinite)
    except ValueError as err:
        what = f"{where}: not valid JSON ({err})" if where else f"{name} is not valid JSON: {err}"
        raise InvalidRequest(what, field=field) from None
    except RecursionError:
        what = f"{where}: nested too deeply" if where else f"{name} is nested too deeply"
        raise InvalidRequest(what, field=field) from None
    check_parsed(text, value, where)
    return value


def check_parsed(text: str | bytes, value: Any, where: str = "") -> None:
    """The checks of ``loads`` on a text somebody else has parsed (cheap when all is well)."""
    hint = NON_FINITE_HINT_BYTES if isinstance(text, bytes) else NON_FINITE_HINT
    if hint.search(text):  # type: ignore[arg-type]
        refuse_non_finite(value, where)
    escape = SURROGATE_ESCAPE_BYTES if isinstance(text, bytes) else SURROGATE_ESCAPE
    if escape.search(text):  # type: ignore[arg-type]
        try:
            json.dumps(value, ensure_ascii=False, default=lambda _: None).encode("utf-8")
        except UnicodeEncodeError:
            prefix = f"{where}: " if where else ""
            raise InvalidRequest(
                f"{prefix}strings may not contain lone UTF-16 surrogates (\\ud800-\\udfff)",
                field=where or None,
            ) from None


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any, *, ensure_ascii: bool = True) -> str:
    """Compact JSON that a strict parser reads: NaN/Infinity (stored by an older version) → null."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=ensure_ascii)
    except ValueError:
        found = non_finite_path(value)
        log.warning("NaN/Infinity at %s sent as null", found[0] if found else "?")
        return json.dumps(
            _finite(value), separators=(",", ":"), allow_nan=False, ensure_ascii=ensure_ascii
        )


class StrictJSONResponse(JSONResponse):
    """The API's responses: never NaN or Infinity (a stored one is answered as null, not a 500)."""

    def render(self, content: Any) -> bytes:
        if current_wants_rfc3339():
            content = rfc3339_times(content)
        return dumps(content, ensure_ascii=False).encode("utf-8")


def check_custom(ctx: ServerContext, custom: dict[str, Any] | None, field: str) -> None:
    """``custom`` data (of a call, member or user) is at most ``limits.max_custom_bytes``
    as compact JSON; a 400 naming ``field`` otherwise."""
    if custom is None:
        return
    size = len(json.dumps(custom, separators=(",", ":")).encode())
    if size > ctx.settings.limits.max_custom_bytes:
        raise InvalidRequest(
            f"custom data is {size} bytes, over the limit of {ctx.settings.limits.max_custom_bytes}",
            field=field,
        )
