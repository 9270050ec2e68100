"""The realtime layer's entry points, called by the app factory (``appliance/server/app.py``).

- ``install(app)`` adds the WebSocket endpoint ``/api/v2/connect`` (also served at
  ``/api/v2/video/connect``, where Stream's client SDKs look for it) and the session/ring routes
  (join, leave, ring, accept, reject, mark_ended);
- ``start(ctx, vapid_key)`` builds the hub, ring engine, signaling relay, deadline scheduler,
  Web Push sender (when the app loaded the VAPID key) and webhook sender (when receivers are
  configured), keeps them in ``ctx.realtime`` (``lifecycle/services.py``'s ``Services``), sets
  ``ctx.ringer`` and ``ctx.presence``, and starts the background tasks (health
  checks, deadlines, PostgreSQL fan-out when the store is PostgreSQL);
- ``stop(ctx)`` stops them and closes every WebSocket.

The WebSocket protocol is written down in ``docs/protocol.md`` and the README.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, WebSocket
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.errors import InvalidRequest
from appliance.server.api import routes_realtime
from appliance.server.context import ServerContext, now_ns
from appliance.server.lifecycle.closes import CloseBatcher
from appliance.server.lifecycle.deadlines import Handlers, Scheduler
from appliance.server.lifecycle.outbox import Outbox, Transactor
from appliance.server.lifecycle.participant import (
    attach,
    leave_participant,
    orphaned_after_crash,
)
from appliance.server.lifecycle.ringer import RingEngine
from appliance.server.lifecycle.ringtimeouts import RingTimeouts
from appliance.server.lifecycle.services import Services, services
from appliance.server.lifecycle.sessions import end_session
from appliance.server.metrics import LiveSources
from appliance.server.outbound.pushsender import PushSender
from appliance.server.outbound.vapid import VapidKey
from appliance.server.outbound.webhooks import WebhookSender
from appliance.server.realtime.connection import SEND_QUEUE_FRAMES, Connection
from appliance.server.realtime.hub import Hub
from appliance.server.realtime.signaling import SignalRelay
from appliance.server.store.schema import call_sessions, participants

log = logging.getLogger(__name__)

ATTACH = "participant.attach"


def install(app: FastAPI) -> None:
    """Add the realtime routes and the WebSocket endpoint to ``app``."""
    app.include_router(routes_realtime.router)
    app.add_api_websocket_route("/api/v2/connect", _connect)
    # Stream's client SDKs connect to ``<baseURL>/connect`` with baseURL ``…/api/v2/video``.
    app.add_api_websocket_route("/api/v2/video/connect", _connect)


async def _connect(websocket: WebSocket) -> None:
    ctx: ServerContext = websocket.app.state.ctx
    await services(ctx).hub.serve(websocket)


async def start(ctx: ServerContext, vapid_key: VapidKey | None = None) -> None:
    """Set ``ctx.ringer``/``ctx.presence``/``ctx.realtime`` and start the background tasks."""
    hub = Hub(ctx)
    tx = Transactor(ctx, hub)
    ringer = RingEngine(ctx, hub, tx)
    relay = SignalRelay(ctx, hub)

    async def participant_gone(pid: str) -> None:
        async def run(db: AsyncConnection, out: Outbox) -> None:
            now = now_ns(ctx.clock)
            row = (
                (
                    await db.execute(
                        select(participants).where(
                            participants.c.id == pid,
                            participants.c.left_at.is_(None),
                            participants.c.gone_at <= now,
                        )
                    )
                )
                .mappings()
                .first()
            )
            if row is not None:
                log.info("participant %s of %s: grace period over", pid, row["user_id"])
                await leave_participant(db, dict(row), now, out, ringer.caller_left)

        await tx(run)

    async def session_too_long(sid: str) -> None:
        async def run(db: AsyncConnection, out: Outbox) -> None:
            now = now_ns(ctx.clock)
            row = (
                (
                    await db.execute(
                        select(call_sessions).where(
                            call_sessions.c.id == sid,
                            call_sessions.c.ended_at.is_(None),
                            call_sessions.c.max_duration_at <= now,
                        )
                    )
                )
                .mappings()
                .first()
            )
            if row is not None:
                await end_session(db, dict(row), "max_duration", now, out)

        await tx(run)

    timeouts = RingTimeouts(ringer)
    scheduler = Scheduler(
        ctx,
        Handlers(
            attempt=timeouts.expire_attempt,
            callee=timeouts.expire_callee,
            participant=participant_gone,
            max_duration=session_too_long,
        ),
    )
    tx.wake = scheduler.wake
    hooks = None
    if ctx.settings.webhooks.hooks:
        hooks = WebhookSender(ctx, ctx.settings.webhooks)
        hub.published.append(hooks.submit)
    pusher = None
    if vapid_key is not None:
        pusher = PushSender(ctx, vapid_key)
        tx.push = pusher.submit

    async def on_attach(conn: Connection, frame: dict[str, Any]) -> None:
        cid = frame.get("call_cid")
        pid = frame.get("session_id")
        if not isinstance(cid, str) or not cid:
            raise InvalidRequest("participant.attach needs call_cid", field="call_cid")
        if not isinstance(pid, str) or not pid:
            raise InvalidRequest(
                "participant.attach needs session_id (your participant session id)",
                field="session_id",
            )
        conn.require_call(cid)

        async def run(db: AsyncConnection, out: Outbox) -> None:
            await attach(db, ctx, cid, pid, conn.user_id, conn.id, out)

        await tx(run)
        conn.send(
            {
                "type": "participant.attached",
                "call_cid": cid,
                "session_id": pid,
                "connection_id": conn.id,
                "reply_to": frame.get("id"),
                "created_at": now_ns(ctx.clock),
            }
        )

    # A closed connection's participants start their grace period, in batches (closes.py).
    closes = CloseBatcher(ctx, scheduler.wake)

    hub.handlers["signal"] = relay.handle
    hub.handlers[ATTACH] = on_attach
    hub.on_close.append(closes.closed)
    hub.on_close.append(hub.tokens.closed)
    hub.on_open.append(hub.tokens.opened)
    hub.on_open.append(ringer.resend_rings)

    svc = Services(
        hub=hub,
        tx=tx,
        ringer=ringer,
        relay=relay,
        scheduler=scheduler,
        closes=closes,
        vapid=vapid_key,
        push=pusher,
        webhooks=hooks,
    )
    ctx.realtime = svc
    ctx.presence = hub.presence
    ctx.ringer = ringer
    if ctx.store.is_sqlite:
        async with ctx.store.begin() as db:
            orphans = await orphaned_after_crash(db, ctx)
        if orphans:
            log.warning(
                "%d participants lost their connection in a crash: grace period started", orphans
            )
    else:
        # Replicas share PostgreSQL: events fan out through NOTIFY. Orphans are not guessed
        # here (a connection of another replica may be alive).
        from appliance.server.realtime.pgnotify import Fanout

        fanout = Fanout(ctx, hub)
        fanout.wake = scheduler.wake
        await fanout.start()
        svc.fanout = fanout
    if ctx.metrics is not None:
        ctx.metrics.live.watch(
            LiveSources(
                hub=hub,
                send_queue_frames=SEND_QUEUE_FRAMES,
                fanout=svc.fanout,
                push=pusher,
                webhooks=hooks,
            )
        )
    hub.start()
    closes.start()
    scheduler.start()
    if pusher is not None:
        pusher.start()
    if hooks is not None:
        hooks.start()
    log.info("realtime layer started: %r", hub)


async def stop(ctx: ServerContext) -> None:
    """Stop the background tasks and close every connection."""
    svc = ctx.realtime
    if not isinstance(svc, Services):
        return
    await svc.scheduler.stop()
    await svc.tx.drain(5.0)  # committed events still being published reach the others first
    if svc.push is not None:
        await svc.push.stop()
    if svc.webhooks is not None:
        await svc.webhooks.stop()
    await svc.hub.tokens.stop()
    if svc.fanout is not None:
        await svc.fanout.stop()
    await svc.hub.stop()
    await svc.closes.stop()  # after the hub closed every socket: their batch is flushed
    log.info("realtime layer stopped")
