"""The one WebSocket of a client (``/api/v2/connect``): events in, signals out, forever.

Lifecycle: connect → first frame ``{token, user_details: {id}}`` → ``connection.ok
{connection_id, me}`` → read frames until the socket drops → ``connection.lost`` → wait a
jittered, exponentially growing delay (injected clock and random) → connect again, without end,
until :meth:`Connection.close`. After every ``connection.ok`` the ``on_connected`` hook runs
(the client's resync). A refused token asks the token-refresh hook for a new one before the next
attempt.

Heartbeats: a ``health.check`` frame every ``heartbeat_interval`` seconds; when nothing at all
has arrived for ``dead_after`` seconds the socket is declared dead and closed (a Wi-Fi that
silently stopped passing packets never closes a TCP socket by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from appliance.calls import events as ev
from appliance.client.backoff import Backoff
from appliance.client.events import CONNECTION_LOST, Event, EventHub
from appliance.client.rest import RestTransport, tls_context
from appliance.clock import Clock, SystemClock
from appliance.errors import APIError, AuthenticationError, ServerUnavailable

logger = logging.getLogger(__name__)

OnConnected = Callable[[bool], Coroutine[Any, Any, None]]
Admit = Callable[[Event], bool]


def websocket_url(base_url: str, api_key: str) -> str:
    scheme, rest = base_url.rstrip("/").split("://", 1)
    ws_scheme = "wss" if scheme == "https" else "ws"
    return f"{ws_scheme}://{rest}/api/v2/connect?api_key={api_key}"


class Connection:
    def __init__(
        self,
        rest: RestTransport,
        hub: EventHub,
        *,
        user_id: str | None,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        heartbeat_interval: float = 10.0,
        dead_after: float | None = None,
        connect_timeout: float = 10.0,
        ca_file: str | None = None,
        on_connected: OnConnected | None = None,
        admit: Admit | None = None,
    ) -> None:
        self.rest = rest
        self.hub = hub
        self.user_id = user_id
        self.clock = clock or SystemClock()
        self.backoff = backoff or Backoff()
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after or 3 * heartbeat_interval
        self.connect_timeout = connect_timeout
        self.on_connected = on_connected
        self.admit = admit
        self.url = websocket_url(rest.base_url, rest.api_key)
        self._ssl: ssl.SSLContext | None = (
            tls_context(ca_file) if self.url.startswith("wss:") else None
        )
        self.connection_id: str | None = None
        self.connects = 0
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_rx = 0.0
        self._was_online = False
        self.last_error: Exception | None = None
        # The server's clock (``created_at``, ns) on the last frame received: where a resync
        # after a drop starts looking for rings missed while away.
        self.server_time_ns: int | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Start connecting in the background (idempotent)."""
        if self._task is None and not self._closing:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"appliance-client-ws-{self.user_id}"
            )

    async def wait_connected(self, wait: float | None = None) -> str:
        """Wait for ``connection.ok``; returns the connection id."""
        self.start()
        try:
            async with asyncio.timeout(wait):
                await self._connected.wait()
        except TimeoutError as err:
            detail = f" (last error: {self.last_error})" if self.last_error else ""
            raise ServerUnavailable(f"{self!r}: not connected after {wait} s{detail}") from err
        assert self.connection_id is not None
        return self.connection_id

    async def send(self, frame: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or not self.connected:
            raise ServerUnavailable(f"{self!r}: not connected, cannot send {frame.get('type')}")
        try:
            await ws.send(json.dumps(frame))
        except websockets.ConnectionClosed as err:
            raise ServerUnavailable(f"{self!r}: connection closed while sending") from err

    async def send_signal(self, call_cid: str, to: str, signal: dict[str, Any]) -> None:
        """Send a signaling envelope (docs/protocol.md) to the participant session ``to``."""
        await self.send({"type": "signal", "call_cid": call_cid, "to": to, "signal": signal})

    async def close(self) -> None:
        """Stop for good (idempotent)."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected.clear()

    async def _run(self) -> None:
        while not self._closing:
            self._was_online = False
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except AuthenticationError as err:
                self.last_error = err
                logger.warning("%r: token refused (%s)", self, err)
                try:
                    await self.rest.refresh_token(stale=self.rest.token)
                except Exception:
                    logger.exception("%r: token refresh hook failed", self)
            except (OSError, TimeoutError, websockets.WebSocketException, APIError) as err:
                self.last_error = err
                logger.info("%r: connect failed (%s)", self, err)
            except Exception as err:
                self.last_error = err
                logger.exception("%r: unexpected failure", self)
            if self._closing:
                break
            if self._was_online:
                lost = Event(type=CONNECTION_LOST, connection_id=self.connection_id)
                if self.admit is None or self.admit(lost):  # the ring ledger notes it too
                    self.hub.emit(lost)
            delay = self.backoff.next_delay()
            logger.info(
                "%r: reconnecting in %.2f s (attempt %d)", self, delay, self.backoff.attempt
            )
            await self.clock.sleep(delay)

    async def _session(self) -> None:
        """One connection, until it drops; ``_was_online`` says whether it got to ``connection.ok``."""
        async with connect(
            self.url,
            ssl=self._ssl,
            open_timeout=self.connect_timeout,
            close_timeout=2.0,
            max_size=4 * 1024 * 1024,
        ) as ws:
            token = await self.rest.fresh_token()
            await ws.send(json.dumps({"token": token, "user_details": {"id": self.user_id}}))
            async with asyncio.timeout(self.connect_timeout):
                first = json.loads(await ws.recv())
            if first.get("type") != ev.CONNECTION_OK:
                raise _refusal(first)
            self._ws = ws
            self._was_online = True
            self._note_server_time(first)
            self.connection_id = str(first.get("connection_id"))
            self._last_rx = self.clock.monotonic()
            reconnected = self.connects > 0
            self.connects += 1
            self.backoff.reset()
            self.last_error = None
            logger.info(
                "%r: offline -> online (%s)", self, "reconnected" if reconnected else "connected"
            )
            self._connected.set()
            heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(ws))
            hook: asyncio.Task[None] | None = None
            try:
                self.hub.emit(Event.parse({**first, "reconnected": reconnected}))
                if self.on_connected is not None:
                    hook = asyncio.get_running_loop().create_task(self.on_connected(reconnected))
                    hook.add_done_callback(self._hook_done)
                async for raw in ws:
                    self._handle(raw)
            except websockets.ConnectionClosed:
                pass
            finally:
                self._connected.clear()
                self._ws = None
                for task in (heartbeat, hook):
                    if task is not None:
                        task.cancel()
                logger.info("%r: online -> offline", self)

    def _hook_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("%r: on_connected failed", self, exc_info=task.exception())

    def _handle(self, raw: str | bytes) -> None:
        self._last_rx = self.clock.monotonic()
        try:
            frame = json.loads(raw)
        except ValueError:
            logger.warning("%r: dropped a frame that is not JSON", self)
            return
        if not isinstance(frame, dict):
            return
        self._note_server_time(frame)
        if frame.get("type") == ev.HEALTH_CHECK:
            return
        event = Event.parse(frame)
        if event.type == ev.ERROR:
            logger.warning("%r: server error frame: %s", self, frame)
        if self.admit is not None and not self.admit(event):
            return
        self.hub.emit(event)

    def _note_server_time(self, frame: dict[str, Any]) -> None:
        stamp = frame.get("created_at")
        if isinstance(stamp, int) and not isinstance(stamp, bool):
            self.server_time_ns = stamp

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await self.clock.sleep(self.heartbeat_interval)
            silent = self.clock.monotonic() - self._last_rx
            if silent > self.dead_after:
                logger.warning("%r: nothing received for %.0f s, closing", self, silent)
                await ws.close()
                return
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(
                    json.dumps({"type": ev.HEALTH_CHECK, "connection_id": self.connection_id})
                )

    def __repr__(self) -> str:
        state = "online" if self.connected else "offline"
        return f"Connection(user={self.user_id}, {state}, id={self.connection_id})"


def _refusal(frame: dict[str, Any]) -> APIError:
    nested = frame.get("error")
    error: dict[str, Any] = nested if isinstance(nested, dict) else frame
    message = str(error.get("message") or f"unexpected first frame {frame.get('type')!r}")
    status = error.get("StatusCode") or error.get("status_code")
    if status == 401 or error.get("code") in (5, 40, 43):
        return AuthenticationError(message)
    return ServerUnavailable(message)
