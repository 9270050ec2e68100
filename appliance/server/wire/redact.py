"""No token in any log line: a filter on the web server's loggers that blanks them out.

The console's sign-in link carries its token in the query (``/?api_key=…&token=…``) and uvicorn's
access log writes every request line, query included. ``install()`` puts ``TokenRedactor`` on
uvicorn's loggers (``uvicorn.access`` and ``uvicorn.error``, which logs WebSocket requests). A
filter on the logger acts on every record created there, whichever handlers print it: it works
when uvicorn configures logging itself and when it is run with ``log_config=None`` and the
records propagate to ours. Tokens are found by name in a query (``token=``, ``access_token=``,
``authorization=``, ``jwt=``) and by shape anywhere (a JWT: three base64url parts, the first
``eyJ``, i.e. ``{"``). A URL in an ``id=`` query (a push subscription's endpoint) is blanked too.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[redacted]"
LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")

_QUERY_TOKEN = re.compile(r"(?i)([?&;](?:access_token|token|authorization|jwt)=)[^&\s\"']*")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# A push subscription's endpoint (``DELETE /api/v2/devices?id=https://…``) is the capability
# to push to that phone.
_QUERY_URL = re.compile(r"(?i)([?&;]id=)https?(?::|%3A)[^&\s\"']*")


def redact(text: str) -> str:
    if "=" not in text and "eyJ" not in text:
        return text
    text = _QUERY_URL.sub(r"\1" + REDACTED, _QUERY_TOKEN.sub(r"\1" + REDACTED, text))
    return _JWT.sub(REDACTED, text)


def _clean(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class TokenRedactor(logging.Filter):
    """Rewrites a record's message and string arguments in place; never drops a record.

    The arguments stay a tuple of the same length: uvicorn's access formatter unpacks them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_clean(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _clean(v) for k, v in record.args.items()}
        return True

    def __repr__(self) -> str:
        return "TokenRedactor()"


def install() -> None:
    """Put the filter on uvicorn's loggers (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TokenRedactor) for f in logger.filters):
            logger.addFilter(TokenRedactor())
