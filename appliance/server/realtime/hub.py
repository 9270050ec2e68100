"""The event hub: this replica's connections, event fan-out, presence.

``Hub.publish_batch`` delivers what an outbox (``lifecycle/outbox.py``) collected; the hub
itself publishes only presence changes, and the relay (``signaling.py``) signals. An event
goes to every connection of the members (and live participants) of a call, and of named
users — ring events need no prior watch. With a PostgreSQL store the same publication reaches the other replicas
through ``pgnotify.Fanout`` and every replica resolves the ``Target`` against its own
connections. Presence: a user is online while any connection is up; ``user.presence.changed``
goes to the users who share a call with them. The WebSocket itself is ``connection.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import WebSocket
from sqlalchemy import select, union

from appliance.calls import events as ev
from appliance.server.context import ServerContext, now_ns
from appliance.server.realtime.connection import (
    CLOSE_GOING_AWAY,
    CLOSE_SILENT,
    Connection,
    Endpoint,
    encode,
)
from appliance.server.realtime.presence import Presence
from appliance.server.realtime.tokenwatch import TokenWatch
from appliance.server.store.arrays import one_of
from appliance.server.store.schema import call_members, participants, users
from appliance.server.wire.serialize import user_response

log = logging.getLogger(__name__)

CHUNK = 500
# A user with at most this many call-mates has their presence change sent to those of them who
# are online, named (no replica runs a query); with more, each replica resolves ``sharing_with``.
MATES_NAMED = 500
REPLICA_PREFIX = 12
# Stream's client SDKs ping 25 s after the last health.check they received.
STREAM_SDK_PING_SECONDS = 25.0

FrameHandler = Callable[[Connection, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Target:
    """Who an event is for; each replica resolves it against its own connections."""

    call_cid: str | None = None
    user_ids: tuple[str, ...] = ()
    connection_ids: tuple[str, ...] = ()
    sharing_with: str | None = None  # users who share at least one call with this user
    # With connection_ids: deliver only to connections of this user (a participant's binding).
    connection_user: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "call_cid": self.call_cid,
            "user_ids": list(self.user_ids),
            "connection_ids": list(self.connection_ids),
            "sharing_with": self.sharing_with,
            "connection_user": self.connection_user,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Target:
        return cls(
            call_cid=data.get("call_cid"),
            user_ids=tuple(data.get("user_ids") or ()),
            connection_ids=tuple(data.get("connection_ids") or ()),
            sharing_with=data.get("sharing_with"),
            connection_user=data.get("connection_user"),
        )


class Hub:
    """Connections of this replica, event delivery and presence."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.replica_id = uuid.uuid4().hex
        self.connections: dict[str, Connection] = {}
        self.by_user: dict[str, set[str]] = {}
        self.presence = Presence()
        self.handlers: dict[str, FrameHandler] = {}
        # Called with a closed connection (sessions.py starts the participant grace period).
        self.on_close: list[Callable[[Connection], Awaitable[None]]] = []
        # Called after connection.ok (the ringer re-sends pending rings).
        self.on_open: list[Callable[[Connection], Awaitable[None]]] = []
        # Set by pgnotify when the store is PostgreSQL: sends a publication to other replicas.
        self.remote: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        # Set by pgnotify too: sends a control message (``{"kind": "revoke", …}``) to them.
        self.broadcast: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        # Ends sockets with their tokens (expiry, revocation); hooked in by realtime.start.
        self.tokens = TokenWatch(ctx, self)
        # Told when a user's first local connection opens (True) or last one closes (False).
        self.presence_listeners: list[Callable[[str, bool], Awaitable[None]]] = []
        # Told of every event published by this replica (not those relayed from others), after
        # its frames are queued for this replica's sockets; must not block (webhooks.py queues).
        self.published: list[Callable[[dict[str, Any]], None]] = []
        self._health_task: asyncio.Task[None] | None = None
        self.endpoint = Endpoint(self)

    @property
    def health_seconds(self) -> float:
        return float(self.ctx.settings.ws_health_seconds)

    @property
    def max_frame_bytes(self) -> int:
        return int(self.ctx.settings.ws_max_frame_bytes)

    def new_connection_id(self) -> str:
        """``<replica prefix>-<uuid>``: which replica holds a connection can be told from its id."""
        return f"{self.replica_prefix}-{uuid.uuid4()}"

    @property
    def replica_prefix(self) -> str:
        return self.replica_id[:REPLICA_PREFIX]

    def __repr__(self) -> str:
        return f"Hub({self.replica_id[:8]}, {len(self.connections)} connections)"

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._health_task = asyncio.create_task(self._health_loop(), name="hub-health")

    async def drain(self, seconds: float) -> None:
        """Close every connection (``1001``, as on stop), spread evenly over ``seconds``: a
        stopping replica hands its devices to the others at a pace they can take in (each
        handshake is a few queries; a third of a fleet at once waited its turn for 10-20 s)."""
        conns = list(self.connections.values())
        if not conns:
            return
        log.info("%r: draining %d connections over %.0f s", self, len(conns), seconds)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i, conn in enumerate(conns):
            delay = started + seconds * i / len(conns) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            conn.close(CLOSE_GOING_AWAY, "server stopping")

    async def stop(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        for conn in list(self.connections.values()):
            conn.close(CLOSE_GOING_AWAY, "server stopping")

    # -- publishing ---------------------------------------------------------------------

    async def publish_to(self, event: dict[str, Any], target: Target) -> None:
        event.setdefault("created_at", now_ns(self.ctx.clock))
        if target.call_cid is not None:
            event.setdefault("call_cid", target.call_cid)
        await self.deliver_local(event, target)
        self._tell_published(event)
        if self.remote is not None:
            try:
                await self.remote(
                    {"origin": self.replica_id, "event": event, "target": target.to_json()}
                )
            except Exception:
                log.exception("%r: fan-out of %s to other replicas failed", self, event.get("type"))

    def _tell_published(self, event: dict[str, Any]) -> None:
        for listener in self.published:
            try:
                listener(event)
            except Exception:
                log.exception("%r: listener of %s failed", self, event.get("type"))

    async def deliver_remote(self, message: dict[str, Any]) -> None:
        """A publication from another replica (via pgnotify): one event, or several (``items``:
        a batch, in order; a target shared by several is resolved once)."""
        if message.get("origin") == self.replica_id:
            return
        items = message.get("items")
        if items is None:
            await self.deliver_local(message["event"], Target.from_json(message["target"]))
            return
        cache: dict[Target, set[str]] = {}
        for item in items:
            await self.deliver_local(item["event"], Target.from_json(item["target"]), cache)

    async def publish_batch(self, items: list[tuple[dict[str, Any], Target]]) -> None:
        """Publish several events in order; a target shared by several is resolved once.

        The other replicas get the whole batch in one notification, sent while this replica
        delivers to its own sockets (a ring's ``call.created``, ``call.session_started`` and
        ``call.ring`` cost one NOTIFY, and its remote callees do not wait for the local ones)."""
        cache: dict[Target, set[str]] = {}
        stamp = now_ns(self.ctx.clock)
        for event, target in items:
            event.setdefault("created_at", stamp)
            if target.call_cid is not None:
                event.setdefault("call_cid", target.call_cid)
        sending: asyncio.Future[None] | None = None
        if self.remote is not None:
            message = {
                "origin": self.replica_id,
                "items": [{"event": e, "target": t.to_json()} for e, t in items],
            }
            sending = asyncio.ensure_future(self.remote(message))
            # Let the NOTIFY reach the wire before the local writes: writing to a socket does
            # not yield, so without this the other replicas' callees waited for every local one.
            await asyncio.sleep(0)
        for event, target in items:
            await self.deliver_local(event, target, cache)
            self._tell_published(event)
        if sending is not None:
            try:
                await sending
            except Exception:
                log.exception("%r: fan-out of %s failed", self, [e.get("type") for e, _ in items])

    async def deliver_local(
        self,
        event: dict[str, Any],
        target: Target,
        cache: dict[Target, set[str]] | None = None,
    ) -> int:
        if not self.connections:
            return 0
        conns = [
            self.connections[c]
            for c in target.connection_ids
            if c in self.connections
            and target.connection_user in (None, self.connections[c].user_id)
        ]
        users_here = set(self.by_user)
        wanted = users_here.intersection(target.user_ids)
        rest = users_here - wanted
        if rest and (target.call_cid is not None or target.sharing_with is not None):
            reached = cache.get(target) if cache is not None else None
            if reached is None:
                reached = await self._resolve(target, rest)
                if cache is not None:
                    cache[target] = reached
            wanted |= reached & rest
        seen = {c.id for c in conns}
        for user_id in wanted:
            for conn_id in self.by_user.get(user_id, ()):
                if conn_id not in seen:
                    seen.add(conn_id)
                    conns.append(self.connections[conn_id])
        cid = event.get("call_cid")
        if cid is not None:
            conns = [c for c in conns if c.call_cids is None or cid in c.call_cids]
        texts: dict[bool, str] = {}
        for conn in conns:
            text = texts.get(conn.stream_sdk)
            if text is None:
                text = texts[conn.stream_sdk] = encode(event, rfc3339=conn.stream_sdk)
            conn.send_text(text)
        log.debug("%s to %d connections", event.get("type"), len(conns))
        return len(conns)

    async def _resolve(self, target: Target, candidates: set[str]) -> set[str]:
        """Which of ``candidates`` (users connected here) the target reaches: one query each
        ``CHUNK`` candidates (members or live participants of the call, or call-mates)."""
        found: set[str] = set()
        pool = sorted(candidates)
        async with self.ctx.store.connect() as conn:
            for i in range(0, len(pool), CHUNK):
                chunk = pool[i : i + CHUNK]
                parts = []
                if target.call_cid is not None:
                    parts.append(
                        select(call_members.c.user_id).where(
                            call_members.c.call_cid == target.call_cid,
                            one_of(conn, call_members.c.user_id, chunk),
                        )
                    )
                    parts.append(
                        select(participants.c.user_id).where(
                            participants.c.call_cid == target.call_cid,
                            participants.c.left_at.is_(None),
                            one_of(conn, participants.c.user_id, chunk),
                        )
                    )
                if target.sharing_with is not None:
                    mine = select(call_members.c.call_cid).where(
                        call_members.c.user_id == target.sharing_with
                    )
                    parts.append(
                        select(call_members.c.user_id).where(
                            call_members.c.call_cid.in_(mine),
                            one_of(conn, call_members.c.user_id, chunk),
                        )
                    )
                q = parts[0] if len(parts) == 1 else union(*parts)
                found.update((await conn.execute(q)).scalars())
        if target.sharing_with is not None:
            found.discard(target.sharing_with)
        return found

    # -- connections --------------------------------------------------------------------

    async def serve(self, websocket: WebSocket) -> None:
        """Run one WebSocket from accept to close."""
        await self.endpoint.serve(websocket)

    async def register(self, conn: Connection) -> None:
        me = await self._user_dict(conn.user_id, online=True)
        # No await from here to connection.ok: no event can be queued before it.
        self.connections[conn.id] = conn
        first = not self.by_user.get(conn.user_id)
        self.by_user.setdefault(conn.user_id, set()).add(conn.id)
        self.presence.add_local(conn.user_id)
        log.info("%r connected", conn)
        conn.send(
            {
                "type": ev.CONNECTION_OK,
                "connection_id": conn.id,
                "me": me,
                "created_at": now_ns(self.ctx.clock),
            }
        )
        if first:
            await self._tell_presence(conn.user_id, True)
            await self._presence_changed(conn.user_id, me)
        for hook in self.on_open:
            try:
                await hook(conn)
            except Exception:
                log.exception("%r: open hook failed", conn)

    async def unregister(self, conn: Connection) -> None:
        self.connections.pop(conn.id, None)
        ids = self.by_user.get(conn.user_id)
        if ids is not None:
            ids.discard(conn.id)
            if not ids:
                del self.by_user[conn.user_id]
        self.presence.remove_local(conn.user_id)
        log.info("%r closed", conn)
        for hook in self.on_close:
            try:
                await hook(conn)
            except Exception:
                log.exception("%r: close hook failed", conn)
        if conn.user_id not in self.by_user:
            await self._tell_presence(conn.user_id, False)
        if conn.user_id not in self.by_user and not self.presence.is_online(conn.user_id):
            with contextlib.suppress(Exception):
                await self._presence_changed(conn.user_id, None)
        conn.unregistered = True

    async def _tell_presence(self, user_id: str, online: bool) -> None:
        for listener in self.presence_listeners:
            try:
                await listener(user_id, online)
            except Exception:
                log.exception("%r: presence of %s not announced", self, user_id)

    async def _presence_changed(self, user_id: str, me: dict[str, Any] | None) -> None:
        """``user.presence.changed`` to the user's call-mates, named: one query here, none on
        the other replicas; nothing at all (no user read, no NOTIFY) for a user who shares no
        call, e.g. an idle device."""
        mates = await self._call_mates(user_id)
        if mates is None:
            target = Target(sharing_with=user_id)
        elif not mates:
            return
        else:
            target = Target(user_ids=tuple(sorted(mates)))
        if me is None:
            me = await self._user_dict(user_id)
        await self.publish_to({"type": ev.USER_PRESENCE_CHANGED, "user": me}, target)

    async def _call_mates(self, user_id: str) -> set[str] | None:
        """Users sharing a call with ``user_id`` (members), or ``None`` past ``MATES_NAMED``."""
        mine = select(call_members.c.call_cid).where(call_members.c.user_id == user_id)
        q = (
            select(call_members.c.user_id)
            .where(call_members.c.call_cid.in_(mine), call_members.c.user_id != user_id)
            .distinct()
            .limit(MATES_NAMED + 1)
        )
        async with self.ctx.store.connect() as db:
            mates = set((await db.execute(q)).scalars())
        return None if len(mates) > MATES_NAMED else mates

    async def _user_dict(self, user_id: str, online: bool | None = None) -> dict[str, Any]:
        async with self.ctx.store.connect() as db:
            row = (await db.execute(select(users).where(users.c.id == user_id))).mappings().first()
        if online is None:
            online = self.presence.is_online(user_id)
        return user_response(dict(row) if row else None, user_id, online)

    def silence_limit(self, conn: Connection) -> float:
        """How long ``conn`` may send nothing before it is taken for dead: three health intervals,
        or for a Stream SDK (which pings only every 25 s) its ping period and two intervals."""
        interval = self.health_seconds
        if conn.stream_sdk:
            return STREAM_SDK_PING_SECONDS + 2 * interval
        return 3 * interval

    async def _health_loop(self) -> None:
        """``health.check`` to every connection but a Stream SDK's (it pings, we answer); close
        those silent too long (``silence_limit``; any frame counts) with 4008, a code on which
        Stream's SDKs reconnect (1000 they take as final).

        Transport liveness runs on the event loop's own clock, not the injected one: moving a
        test's ManualClock across a ring timeout must not look like every client went silent.
        """
        loop = asyncio.get_running_loop()
        while True:
            interval = self.health_seconds
            await asyncio.sleep(interval)
            now = loop.time()
            stamp = now_ns(self.ctx.clock)
            for conn in list(self.connections.values()):
                silent = now - conn.last_seen
                if silent > self.silence_limit(conn):
                    log.info("%r silent for %.0f s: closing", conn, silent)
                    conn.close(CLOSE_SILENT, "no frame from the client: health check failed")
                    continue
                if not conn.stream_sdk:
                    conn.send(
                        {"type": ev.HEALTH_CHECK, "connection_id": conn.id, "created_at": stamp}
                    )
