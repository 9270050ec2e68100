"""One WebSocket from accept to close: the auth frame, the reader, the writer, frame dispatch.

The first frame must be ``{token, user_details: {id}}`` (within 10 s); the answer is
``connection.ok {connection_id, me}`` or ``connection.error`` and a close (1008, or 1009 for an
oversized frame). ``user_details`` may also carry the user's own ``name``, ``image`` and
``custom``: they are saved, as Stream does (never ``role`` or ``teams``, which are not read).
After that every text frame is JSON with a ``type``: ``health.check`` is answered here (also
in the form Stream's JavaScript SDK sends it, a one-element array ``[{"type": "health.check",
"client_id"}]``), the rest goes to the hub's handlers (``signal``, ``participant.attach``). Any
frame counts as a sign of life. A bad frame is answered with an error frame and the connection
stays; a frame over the size limit closes it (1009).

A Stream client SDK (``X-Stream-Client`` query parameter ``stream-video-…``) gets RFC 3339 times
(``wiretime.py``) and paces health checks itself: it pings 25 s after the last ``health.check``
it received, so the hub sends it none unprompted (they would reset its timer and it would never
ping) and only answers its pings.

Each connection has a bounded send queue drained by its own writer task, so a slow client never
blocks a publisher; a client that falls that far behind is disconnected.

Admission: at most ``ADMIT_CONCURRENT`` handshakes (token check, user read, registration and its
open hooks: a few queries each) run at once on a replica, counted from the auth frame's arrival.
A handshake that waits ``ADMIT_WAIT_SECONDS`` for its turn, or meets a database too busy to
answer, is refused with ``connection.error`` (503) and close 1013 (try again later): clients
answer with their jittered backoff. A reconnect storm (a proxy restart: every device at once)
queued thousands of handshakes on the pool's 30 connections; they timed out on both sides, the
devices retried at once, and ``/healthz`` starved with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from appliance.calls import events as ev
from appliance.errors import (
    APIError,
    AuthenticationError,
    InvalidRequest,
    PayloadTooLarge,
    PermissionDenied,
    ServerUnavailable,
)
from appliance.server.auth import authenticate
from appliance.server.context import now_ns
from appliance.server.store.schema import users
from appliance.server.store.users import UserRequest, upsert_user
from appliance.server.wire import wirejson
from appliance.server.wire.serialize import slim_event
from appliance.server.wire.wiretime import rfc3339_times, wants_rfc3339

if TYPE_CHECKING:
    from appliance.server.context import ServerContext

log = logging.getLogger(__name__)

SEND_QUEUE_FRAMES = 1000
AUTH_TIMEOUT_SECONDS = 10.0
# Below the database pool (10 + 20 overflow): REST requests and close hooks keep connections.
ADMIT_CONCURRENT = 16
# Below the clients' own 10 s wait for connection.ok: refused, not timed out.
ADMIT_WAIT_SECONDS = 8.0
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN_LATER = 1013
# The server is stopping, and a client that stayed silent too long: any code but 1000, which
# Stream's client SDKs take as final (they would not reconnect until their own watchdog fires).
CLOSE_GOING_AWAY = 1001
CLOSE_SILENT = 4008
# What a client may change of its own user on connect (as with POST /api/v2/users).
USER_DETAILS = ("name", "image", "custom")


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
    # A token pinned to some calls (``call_cids``) hears only those calls' events.
    call_cids: tuple[str, ...] | None = None
    close_code: int = 1000
    close_reason: str = ""
    # Set once the hub has forgotten the connection and run its close hooks.
    unregistered: bool = False
    # The token's ``iat`` and ``exp`` (seconds): the socket ends with its token (tokenwatch.py).
    token_iat: float | None = None
    token_exp: float | None = None
    # A Stream client SDK: RFC 3339 times, and it sends the health checks (module docstring).
    stream_sdk: bool = False

    def send(self, frame: dict[str, Any]) -> bool:
        """Queue a frame; ``False`` (and the connection is closed) when the client lags too far."""
        return self.send_text(encode(frame, rfc3339=self.stream_sdk))

    def send_text(self, text: str) -> bool:
        """Queue an encoded frame (one encoding shared by every recipient of an event)."""
        if self.closed:
            return False
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("%r is %d frames behind: disconnecting it", self, SEND_QUEUE_FRAMES)
            self.drop(
                APIError(
                    f"this connection fell {SEND_QUEUE_FRAMES} frames behind (not reading): closed",
                    status_code=429,
                ),
                CLOSE_TRY_AGAIN_LATER,
            )
            return False
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self.close_code = code
            self.close_reason = reason
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)

    def drop(self, err: APIError, code: int = CLOSE_POLICY) -> None:
        """End the connection for a reason the client is told: an error frame naming it (as
        ``connection.error``, like a refused first frame), then a close with ``code``.
        Frames still queued are discarded: they are stale, and a client that stopped reading
        would otherwise never reach the close."""
        if self.closed:
            return
        while not self.queue.empty():
            self.queue.get_nowait()
        self.send(refusal_frame(err))
        self.close(code, err.message[:120])

    def require_call(self, cid: str, field: str = "call_cid") -> None:
        """A connection opened with a token pinned to calls (``call_cids``) acts on those only."""
        if self.call_cids is not None and cid not in self.call_cids:
            pinned = ", ".join(self.call_cids) or "(none)"
            raise PermissionDenied(
                f"this connection's token is limited to calls {pinned}", field=field, cid=cid
            )

    def __repr__(self) -> str:
        return f"Connection({self.id[:8]} user={self.user_id})"


def encode(frame: dict[str, Any], *, rfc3339: bool = False) -> str:
    """A frame as sent: strict JSON, users in it slimmed (``serialize.slim_event``), times as
    RFC 3339 text for a Stream client SDK."""
    slim = slim_event(frame)
    return wirejson.dumps(rfc3339_times(slim) if rfc3339 else slim)


def refusal_frame(err: APIError) -> dict[str, Any]:
    """``connection.error``: why this server will not (or no longer) serve the connection. The
    code sits only inside ``error`` (as with Stream): Stream's SDK takes a frame with a
    top-level ``code`` for a WebSocket close event and misreads it."""
    frame = error_frame(err)
    frame["type"] = ev.CONNECTION_ERROR
    frame["error"] = {k: frame[k] for k in ("code", "message", "StatusCode", "details")}
    del frame["code"]
    return frame


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


class HubPort(Protocol):
    """What the endpoint and the token watch (``tokenwatch.py``) use of the hub (``hub.py``
    implements it); a protocol, so that this module does not import the hub that imports it."""

    @property
    def ctx(self) -> ServerContext: ...
    @property
    def connections(self) -> Mapping[str, Connection]: ...
    @property
    def by_user(self) -> Mapping[str, set[str]]: ...
    @property
    def handlers(self) -> Mapping[str, Callable[[Connection, dict[str, Any]], Awaitable[None]]]: ...
    @property
    def broadcast(self) -> Callable[[dict[str, Any]], Awaitable[None]] | None: ...
    @property
    def max_frame_bytes(self) -> int: ...
    def new_connection_id(self) -> str: ...
    async def register(self, conn: Connection) -> None: ...
    async def unregister(self, conn: Connection) -> None: ...


class Endpoint:
    """Serves WebSockets for one hub."""

    def __init__(self, hub: HubPort) -> None:
        self.hub = hub
        self._admission = asyncio.Semaphore(ADMIT_CONCURRENT)
        # Handshakes refused for want of a turn or of the database (tests, logs).
        self.turned_away = 0

    def __repr__(self) -> str:
        return f"Endpoint({self.hub!r})"

    async def serve(self, websocket: WebSocket) -> None:
        """Run one WebSocket from accept to close."""
        await websocket.accept()
        # Holds the handshake's turn (``_admit``) until the connection is registered.
        admission = contextlib.AsyncExitStack()
        try:
            try:
                conn = await self._authenticate(websocket, admission)
            except (WebSocketDisconnect, RuntimeError):
                return
            if conn is None:
                return
            writer = asyncio.create_task(self._writer(conn), name=f"ws-writer-{conn.id[:8]}")
            try:
                try:
                    await self.hub.register(conn)
                except SQLAlchemyError as err:
                    self.turned_away += 1
                    conn.drop(
                        ServerUnavailable(
                            f"the server is busy ({type(err).__name__}): try again later"
                        ),
                        CLOSE_TRY_AGAIN_LATER,
                    )
                    return
                await admission.aclose()
                await self._reader(conn)
            finally:
                await admission.aclose()
                conn.close()
                await self.hub.unregister(conn)
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(writer, 5.0)
        finally:
            await admission.aclose()

    @contextlib.asynccontextmanager
    async def _admit(self) -> AsyncIterator[None]:
        """A turn among ``ADMIT_CONCURRENT`` handshakes, waited for ``ADMIT_WAIT_SECONDS``."""
        try:
            await asyncio.wait_for(self._admission.acquire(), ADMIT_WAIT_SECONDS)
        except TimeoutError:
            self.turned_away += 1
            raise ServerUnavailable(
                f"the server is busy with other connections: try again later "
                f"(no turn within {ADMIT_WAIT_SECONDS:.0f} s)"
            ) from None
        try:
            yield
        finally:
            self._admission.release()

    async def _authenticate(
        self, websocket: WebSocket, admission: contextlib.AsyncExitStack
    ) -> Connection | None:
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
            if len(text) > self.hub.max_frame_bytes:
                raise PayloadTooLarge(
                    f"frame of {len(text)} bytes exceeds {self.hub.max_frame_bytes}"
                )
            frame = _parse(text)
            token = frame.get("token")
            if not isinstance(token, str) or not token:
                raise AuthenticationError("the first frame must carry a token", field="token")
            details = frame.get("user_details") or {}
            if not isinstance(details, dict):
                raise InvalidRequest("user_details must be an object", field="user_details")
            await admission.enter_async_context(self._admit())
            who = await authenticate(self.hub.ctx, token, api_key)
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
            await self._save_details(user_id, details)
        except SQLAlchemyError as err:
            self.turned_away += 1
            busy = ServerUnavailable(f"the server is busy ({type(err).__name__}): try again later")
            await self._refuse(websocket, busy)
            return None
        except APIError as err:
            await self._refuse(websocket, err)
            return None
        conn = Connection(
            id=self.hub.new_connection_id(),
            user_id=user_id,
            websocket=websocket,
            call_cids=who.call_cids,
            token_iat=_number(who.claims.get("iat")),
            token_exp=_number(who.claims.get("exp")),
            stream_sdk=wants_rfc3339(websocket.query_params.get("X-Stream-Client")),
        )
        conn.last_seen = asyncio.get_running_loop().time()
        return conn

    async def _refuse(self, websocket: WebSocket, err: APIError) -> None:
        log.info("WebSocket refused: %s", err.message)
        with contextlib.suppress(Exception):
            await websocket.send_text(encode(refusal_frame(err)))
            code = CLOSE_TOO_BIG if isinstance(err, PayloadTooLarge) else CLOSE_POLICY
            if isinstance(err, ServerUnavailable):
                code = CLOSE_TRY_AGAIN_LATER
            await websocket.close(code=code, reason=err.message[:120])

    async def _ensure_user(self, user_id: str) -> None:
        async with self.hub.ctx.store.connect() as db:
            found = (await db.execute(select(users.c.id).where(users.c.id == user_id))).first()
        if found is None:
            raise InvalidRequest(f"user {user_id!r} does not exist", field="user_details.id")

    async def _save_details(self, user_id: str, details: dict[str, Any]) -> None:
        """Store the user's own ``name``, ``image`` and ``custom`` from ``user_details`` (bounded
        as on ``POST /api/v2/users``); written only when they differ from what is stored."""
        given = {k: details[k] for k in USER_DETAILS if details.get(k) is not None}
        if not given:
            return
        try:
            wanted = UserRequest.model_validate({"id": user_id, **given})
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            field = f"user_details.{where}" if where else "user_details"
            raise InvalidRequest(f"{field}: {first.get('msg')}", field=field) from None
        wirejson.check_custom(self.hub.ctx, wanted.custom, "user_details.custom")
        ctx = self.hub.ctx
        async with ctx.store.begin() as db:
            row = (await db.execute(select(users).where(users.c.id == user_id))).mappings().first()
            if row is None or all(row[k] == getattr(wanted, k) for k in given):
                return
            await upsert_user(db, wanted, now_ns(ctx.clock))
        log.info("User(%s) details updated on connect: %s", user_id, ", ".join(sorted(given)))

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
            await conn.websocket.close(code=conn.close_code, reason=conn.close_reason)

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
            if len(text.encode()) > self.hub.max_frame_bytes:
                conn.send(
                    error_frame(
                        PayloadTooLarge(
                            f"frame of {len(text.encode())} bytes exceeds the limit of "
                            f"{self.hub.max_frame_bytes} bytes"
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
            frame = _parse(text, allow_ping_array=True)
            reply_to = frame.get("id")
            kind = frame.get("type")
            if kind == ev.HEALTH_CHECK:
                reply = {
                    "type": ev.HEALTH_CHECK,
                    "connection_id": conn.id,
                    "created_at": now_ns(self.hub.ctx.clock),
                }
                if reply_to is not None:
                    reply["reply_to"] = reply_to
                conn.send(reply)
                return
            handler = self.hub.handlers.get(kind) if isinstance(kind, str) else None
            if handler is None:
                known = ", ".join(sorted([ev.HEALTH_CHECK, *self.hub.handlers]))
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


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _parse(text: str, *, allow_ping_array: bool = False) -> dict[str, Any]:
    frame = wirejson.loads(text, name="frame")
    if (
        allow_ping_array
        and isinstance(frame, list)
        and len(frame) == 1
        and isinstance(frame[0], dict)
        and frame[0].get("type") == ev.HEALTH_CHECK
    ):
        # Stream's JavaScript SDK pings with [{"type": "health.check", "client_id": …}].
        frame = frame[0]
    if not isinstance(frame, dict):
        raise InvalidRequest("frame must be a JSON object")
    return frame
