"""``POST /api/v2/video/call_client_event``: the telemetry Stream's client SDKs send.

Stream's SDKs report a dozen or so client events per call (join steps, device errors, timings)
and retry up to five times on an error. The SDK sends them as a public endpoint
(``stream-auth-type: anonymous`` and no token while it connects), so this route asks for no
credentials, like ``/healthz``: it reads nothing and stores nothing. We keep no statistics:
the events are checked (at most ``MAX_EVENTS`` objects, the body under the request size
limit), counted, and answered 200.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from appliance.server.api.replies import ctx_of, reply

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v2/video", tags=["client events"])

MAX_EVENTS = 100


class ClientEventsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    events: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_EVENTS)


@router.post("/call_client_event")
async def call_client_event(body: ClientEventsRequest, request: Request) -> dict[str, Any]:
    """Accept and count a client's telemetry events (not stored)."""
    ctx = ctx_of(request)
    ctx.client_events += len(body.events)
    log.debug("%d client events", len(body.events))
    return reply(request, {})
