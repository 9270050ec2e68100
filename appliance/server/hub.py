"""The event hub: one ``Connection`` per WebSocket, event fan-out, presence.

A client opens ``/api/v2/connect?api_key=KEY`` and sends ``{token, user_details: {id}}`` as
its first frame; the hub answers ``connection.ok {connection_id, me}``. From then on the hub
delivers the events of every call the user is a member (or a participant) of — ring events
need no prior watch — and routes the client's frames (``health.check``, ``signal``,
``participant.attach``) to their handlers. ``Hub.publish`` implements the ``EventBus`` of
``context.py``; with a PostgreSQL store the same publication reaches the other replicas
through ``pgnotify.Fanout`` and every replica resolves its own recipients.

Each connection has a bounded send queue drained by its own writer task, so a slow client
never blocks a publisher; a client that falls that far behind is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from sqlalchemy import select

from appliance.calls import events as ev
from appliance.errors import APIError, AuthenticationError, InvalidRequest, PayloadTooLarge
from appliance.server.auth import authenticate
from appliance.server.context import ServerContext, now_ns
from appliance.server.presence import Presence
from appliance.server.schema import call_members, participants, users
from appliance.server.serialize import user_response

log = logging.getLogger(__name__)

SEND_QUEUE_FRAMES = 1000
AUTH_TIMEOUT_SECONDS = 10.0
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CHUNK = 500

FrameHandler = Callable[["Connection", dict[str, Any]], Awaitable[None]]


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


@dataclass(eq=False)
class Connection:
    """One WebSocket of one user."""

    id: str
    user_id: str
    websocket: WebSocket
    queue: asyncio.Queue[str | None] = field(
        default_factory=lambda: asyncio.Queue(SEND_QUEUE_FRAMES)
    )
    last_seen: float = 0.0
    closed: bool = False
    close_code: int = 1000
    # Set once the hub has forgotten the connection and run its close hooks.
    unregistered: bool = False

    def send(self, frame: dict[str, Any]) -> bool:
        """Queue a frame; ``False`` (and the connection is closed) when the client lags too far."""
        if self.closed:
            return False
        try:
            self.queue.put_nowait(json.dumps(frame, separators=(",", ":")))
        except asyncio.QueueFull:
            log.warning("%r is %d frames behind: disconnecting it", self, SEND_QUEUE_FRAMES)
            self.close()
            return False
        return True

    def close(self, code: int = 1000) -> None:
        if not self.closed:
            self.closed = True
            self.close_code = code
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)

    def __repr__(self) -> str:
        return f"Connection({self.id[:8]} user={self.user_id})"


def error_frame(err: APIError, **context: Any) -> dict[str, Any]:
    """The WebSocket form of an API error: ``{"type": "error", code, message, StatusCode, ...}``."""
    frame: dict[str, Any] = {
        "type": ev.ERROR,
        "code": err.code,
        "message": err.message,
        "StatusCode": err.status_code,
        "details": list(err.details),
    }
    if err.field:
        frame["field"] = err.field
    frame.update({k: v for k, v in context.items() if v is not None})
    return frame


class Hub:
    """Connections of this replica, event delivery and presence (the server's ``EventBus``)."""

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
        # Told when a user's first local connection opens (True) or last one closes (False).
        self.presence_listeners: list[Callable[[str, bool], Awaitable[None]]] = []
        self._health_task: asyncio.Task[None] | None = None

    @property
    def health_seconds(self) -> float:
        return float(getattr(self.ctx.settings, "ws_health_seconds", 10.0))

    @property
    def max_frame_bytes(self) -> int:
        return int(getattr(self.ctx.settings, "ws_max_frame_bytes", 131_072))

    def __repr__(self) -> str:
        return f"Hub({self.replica_id[:8]}, {len(self.connections)} connections)"

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._health_task = asyncio.create_task(self._health_loop(), name="hub-health")

    async def stop(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        for conn in list(self.connections.values()):
            conn.close()

    # -- publishing ---------------------------------------------------------------------

    async def publish(
        self,
        event: dict[str, Any],
        *,
        call_cid: str | None = None,
        user_ids: Iterable[str] | None = None,
    ) -> None:
        await self.publish_to(event, Target(call_cid=call_cid, user_ids=tuple(user_ids or ())))

    async def publish_to(self, event: dict[str, Any], target: Target) -> None:
        event.setdefault("created_at", now_ns(self.ctx.clock))
        if target.call_cid is not None:
            event.setdefault("call_cid", target.call_cid)
        await self.deliver_local(event, target)
        if self.remote is not None:
            try:
                await self.remote(
                    {"origin": self.replica_id, "event": event, "target": target.to_json()}
                )
            except Exception:
                log.exception("%r: fan-out of %s to other replicas failed", self, event.get("type"))

    async def deliver_remote(self, message: dict[str, Any]) -> None:
        """A publication from another replica (via pgnotify)."""
        if message.get("origin") == self.replica_id:
            return
        await self.deliver_local(message["event"], Target.from_json(message["target"]))

    async def deliver_local(self, event: dict[str, Any], target: Target) -> int:
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
            wanted |= await self._resolve(target, rest)
        seen = {c.id for c in conns}
        for user_id in wanted:
            for conn_id in self.by_user.get(user_id, ()):
                if conn_id not in seen:
                    seen.add(conn_id)
                    conns.append(self.connections[conn_id])
        for conn in conns:
            conn.send(event)
        log.debug("%s to %d connections", event.get("type"), len(conns))
        return len(conns)

    async def _resolve(self, target: Target, candidates: set[str]) -> set[str]:
        """Which of ``candidates`` (users connected here) the target reaches."""
        found: set[str] = set()
        pool = sorted(candidates)
        async with self.ctx.store.connect() as conn:
            for i in range(0, len(pool), CHUNK):
                chunk = pool[i : i + CHUNK]
                if target.call_cid is not None:
                    q = select(call_members.c.user_id).where(
                        call_members.c.call_cid == target.call_cid,
                        call_members.c.user_id.in_(chunk),
                    )
                    found.update((await conn.execute(q)).scalars())
                    q = select(participants.c.user_id).where(
                        participants.c.call_cid == target.call_cid,
                        participants.c.left_at.is_(None),
                        participants.c.user_id.in_(chunk),
                    )
                    found.update((await conn.execute(q)).scalars())
                if target.sharing_with is not None:
                    mine = select(call_members.c.call_cid).where(
                        call_members.c.user_id == target.sharing_with
                    )
                    q = (
                        select(call_members.c.user_id)
                        .where(call_members.c.call_cid.in_(mine))
                        .where(call_members.c.user_id.in_(chunk))
                        .distinct()
                    )
                    found.update((await conn.execute(q)).scalars())
        if target.sharing_with is not None:
            found.discard(target.sharing_with)
        return found

    # -- one WebSocket ------------------------------------------------------------------

    async def serve(self, websocket: WebSocket) -> None:
        """Run one WebSocket from accept to close."""
        await websocket.accept()
        try:
            conn = await self._authenticate(websocket)
        except (WebSocketDisconnect, RuntimeError):
            return
        if conn is None:
            return
        writer = asyncio.create_task(self._writer(conn), name=f"ws-writer-{conn.id[:8]}")
        try:
            await self._register(conn)
            await self._reader(conn)
        finally:
            conn.close()
            await self._unregister(conn)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(writer, 5.0)

    async def _authenticate(self, websocket: WebSocket) -> Connection | None:
        api_key = websocket.query_params.get("api_key")
        try:
            text = await asyncio.wait_for(websocket.receive_text(), AUTH_TIMEOUT_SECONDS)
        except TimeoutError:
            await self._refuse(websocket, AuthenticationError("no auth frame within 10 s"))
            return None
        except KeyError:
            # A binary frame: receive_text() finds no "text" key.
            await self._refuse(websocket, InvalidRequest("the auth frame must be text JSON"))
            return None
        try:
            if len(text) > self.max_frame_bytes:
                raise PayloadTooLarge(f"frame of {len(text)} bytes exceeds {self.max_frame_bytes}")
            frame = _parse(text)
            token = frame.get("token")
            if not isinstance(token, str) or not token:
                raise AuthenticationError("the first frame must carry a token", field="token")
            details = frame.get("user_details") or {}
            if not isinstance(details, dict):
                raise InvalidRequest("user_details must be an object", field="user_details")
            who = await authenticate(self.ctx, token, api_key)
            user_id = who.user_id
            asked = details.get("id")
            if asked is not None and not isinstance(asked, str):
                raise InvalidRequest("user_details.id must be a string", field="user_details.id")
            if user_id is None:
                # A server token connects on behalf of the user it names (tools, benchmarks).
                if not asked:
                    raise InvalidRequest(
                        "a server token must name the user in user_details.id",
                        field="user_details.id",
                    )
                user_id = asked
                await self._ensure_user(user_id)
            elif asked and asked != user_id:
                raise AuthenticationError(
                    f"user_details.id {asked!r} does not match the token's user {user_id!r}",
                    field="user_details.id",
                )
        except APIError as err:
            await self._refuse(websocket, err)
            return None
        conn = Connection(id=str(uuid.uuid4()), user_id=user_id, websocket=websocket)
        conn.last_seen = asyncio.get_running_loop().time()
        return conn

    async def _refuse(self, websocket: WebSocket, err: APIError) -> None:
        log.info("WebSocket refused: %s", err.message)
        with contextlib.suppress(Exception):
            frame = error_frame(err)
            frame["type"] = ev.CONNECTION_ERROR
            frame["error"] = {k: frame[k] for k in ("code", "message", "StatusCode", "details")}
            await websocket.send_text(json.dumps(frame))
            code = CLOSE_TOO_BIG if isinstance(err, PayloadTooLarge) else CLOSE_POLICY
            await websocket.close(code=code, reason=err.message[:120])

    async def _ensure_user(self, user_id: str) -> None:
        async with self.ctx.store.connect() as db:
            found = (await db.execute(select(users.c.id).where(users.c.id == user_id))).first()
        if found is None:
            raise InvalidRequest(f"user {user_id!r} does not exist", field="user_details.id")

    async def _register(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        first = not self.by_user.get(conn.user_id)
        self.by_user.setdefault(conn.user_id, set()).add(conn.id)
        self.presence.add_local(conn.user_id)
        log.info("%r connected", conn)
        me = await self._user_dict(conn.user_id)
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

    async def _unregister(self, conn: Connection) -> None:
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
                await self._presence_changed(conn.user_id, await self._user_dict(conn.user_id))
        conn.unregistered = True

    async def _tell_presence(self, user_id: str, online: bool) -> None:
        for listener in self.presence_listeners:
            try:
                await listener(user_id, online)
            except Exception:
                log.exception("%r: presence of %s not announced", self, user_id)

    async def _presence_changed(self, user_id: str, me: dict[str, Any]) -> None:
        await self.publish_to(
            {"type": ev.USER_PRESENCE_CHANGED, "user": me},
            Target(sharing_with=user_id),
        )

    async def _user_dict(self, user_id: str) -> dict[str, Any]:
        async with self.ctx.store.connect() as db:
            row = (await db.execute(select(users).where(users.c.id == user_id))).mappings().first()
        return user_response(dict(row) if row else None, user_id, self.presence.is_online(user_id))

    async def _writer(self, conn: Connection) -> None:
        while True:
            text = await conn.queue.get()
            if text is None:
                break
            try:
                await conn.websocket.send_text(text)
            except Exception:
                conn.closed = True
                break
        with contextlib.suppress(Exception):
            await conn.websocket.close(code=conn.close_code)

    async def _reader(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        while not conn.closed:
            try:
                message = await conn.websocket.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            conn.last_seen = loop.time()
            text = message.get("text")
            if text is None:
                conn.send(error_frame(InvalidRequest("frames must be text JSON, not binary")))
                continue
            if len(text.encode()) > self.max_frame_bytes:
                conn.send(
                    error_frame(
                        PayloadTooLarge(
                            f"frame of {len(text.encode())} bytes exceeds the limit of "
                            f"{self.max_frame_bytes} bytes"
                        )
                    )
                )
                conn.close(CLOSE_TOO_BIG)
                return
            await self._dispatch(conn, text)

    async def _dispatch(self, conn: Connection, text: str) -> None:
        reply_to: Any = None
        kind: Any = None
        try:
            frame = _parse(text)
            reply_to = frame.get("id")
            kind = frame.get("type")
            if kind == ev.HEALTH_CHECK:
                reply = {
                    "type": ev.HEALTH_CHECK,
                    "connection_id": conn.id,
                    "created_at": now_ns(self.ctx.clock),
                }
                if reply_to is not None:
                    reply["reply_to"] = reply_to
                conn.send(reply)
                return
            handler = self.handlers.get(kind) if isinstance(kind, str) else None
            if handler is None:
                known = ", ".join(sorted([ev.HEALTH_CHECK, *self.handlers]))
                raise InvalidRequest(f"unknown frame type {kind!r} (known: {known})", field="type")
            await handler(conn, frame)
        except APIError as err:
            conn.send(error_frame(err, reply_to=reply_to, frame_type=kind))
        except Exception:
            log.exception("%r: frame %r failed", conn, kind)
            conn.send(
                error_frame(
                    APIError("the server failed to handle this frame", status_code=500),
                    reply_to=reply_to,
                    frame_type=kind,
                )
            )

    async def _health_loop(self) -> None:
        """``health.check`` to every connection; close those silent for three intervals.

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
                if now - conn.last_seen > 3 * interval:
                    log.info("%r silent for %.0f s: closing", conn, now - conn.last_seen)
                    conn.close()
                    continue
                conn.send({"type": ev.HEALTH_CHECK, "connection_id": conn.id, "created_at": stamp})


def _parse(text: str) -> dict[str, Any]:
    try:
        frame = json.loads(text)
    except ValueError as err:
        raise InvalidRequest(f"frame is not valid JSON: {err}") from None
    if not isinstance(frame, dict):
        raise InvalidRequest("frame must be a JSON object")
    return frame
