"""Fan-out across server replicas through PostgreSQL ``LISTEN/NOTIFY``.

Every replica LISTENs on one channel. A publication (``{event, target}``) is sent once; each
replica resolves the target against its own WebSockets. Presence travels the same way: a
replica announces the users whose first/last local connection opened/closed, answers a
newcomer's ``hello`` with its full set, repeats it every ``PRESENCE_EVERY`` seconds, and says
``bye`` when it stops; a replica not heard from for three periods is forgotten (it crashed).

Presence goes through its own connection, coalesced: the changes of ``PRESENCE_FLUSH`` seconds
(a burst of reconnecting devices) leave as one ``presence`` message naming the users now online
and those now offline. Events have the other connection to themselves and never wait behind it.

Connection ids start with their replica's prefix. A replica that crashes says no ``bye`` and
its connections never close, so once a replica has been up for three presence periods it
gives the participants bound to connections of replicas nobody has heard from the grace period
a clean close would have given them (``sweep_orphans``).

Every message carries its wall-clock send time (``sent_at``); the receiver observes the lag in
``/metrics`` (``appliance_notify_lag_seconds``; machines' clocks must agree, e.g. by NTP).

NOTIFY payloads are limited to 8000 bytes. Messages are ASCII JSON and longer ones are cut
into numbered chunks sent in ONE statement (one transaction): PostgreSQL delivers the
notifications of a transaction together, so the receiver reassembles them without a side table.
The events a transaction produced (a ring's ``call.created``, ``call.session_started`` and
``call.ring``) travel as one message, and the receiver resolves a target they share once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import select, update

from appliance.server.context import ServerContext, now_ns
from appliance.server.realtime.hub import Hub
from appliance.server.store.health import psycopg_dsn
from appliance.server.store.schema import participants
from appliance.server.wire import wirejson
from appliance.server.wire.serialize import slim_event

log = logging.getLogger(__name__)

CHANNEL = "appliance_events"
# Room for the "<msg id>:<seq>:<total>:" header within NOTIFY's 8000-byte limit.
CHUNK_BYTES = 7800
PRESENCE_EVERY = 30.0
PRESENCE_FLUSH = 0.05
# Users named in one presence message at most (a message is one statement, chunked).
PRESENCE_BATCH = 2000
RECONNECT_SECONDS = 2.0


def chunks(text: str, size: int = CHUNK_BYTES) -> list[str]:
    """``text`` (ASCII) as NOTIFY payloads of at most ``size`` + header bytes."""
    msg_id = uuid.uuid4().hex[:12]
    parts = [text[i : i + size] for i in range(0, len(text), size)] or [""]
    return [f"{msg_id}:{n}:{len(parts)}:{part}" for n, part in enumerate(parts)]


class Reassembler:
    """Puts chunked payloads back together (per message id)."""

    def __init__(self) -> None:
        self._parts: dict[str, list[str | None]] = {}

    def feed(self, payload: str) -> str | None:
        msg_id, seq, total, data = payload.split(":", 3)
        n, count = int(seq), int(total)
        if count == 1:
            return data
        parts = self._parts.setdefault(msg_id, [None] * count)
        parts[n] = data
        if any(p is None for p in parts):
            return None
        del self._parts[msg_id]
        return "".join(p or "" for p in parts)


class _Notifier:
    """One autocommit connection that sends NOTIFY statements one at a time; reconnects once
    on an error, then gives up for this message."""

    def __init__(self, dsn: str, name: str) -> None:
        self.dsn = dsn
        self.name = name
        self.lock = asyncio.Lock()
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def execute(self, query: str, params: list[str]) -> None:
        async with self.lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = await psycopg.AsyncConnection.connect(
                            self.dsn, autocommit=True
                        )
                    await self._conn.execute(query, params)
                    return
                except psycopg.Error as err:
                    log.warning("%s: NOTIFY failed (attempt %d): %s", self.name, attempt, err)
                    await self.close()
            raise ConnectionError("cannot reach PostgreSQL to fan out")

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


class Fanout:
    def __init__(self, ctx: ServerContext, hub: Hub) -> None:
        self.ctx = ctx
        self.hub = hub
        self.dsn = psycopg_dsn(ctx.store.url)
        self.replica = hub.replica_id
        self._event_notify = _Notifier(self.dsn, f"Fanout({self.replica[:8]}) events")
        # Presence (changes, ``full``, ``hello``): a second connection, so events never queue
        # behind it; changes wait here (user → latest state is read at flush time).
        self._presence_notify = _Notifier(self.dsn, f"Fanout({self.replica[:8]}) presence")
        self._presence_pending: dict[str, None] = {}
        self._presence_due = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = asyncio.Event()
        self._reassembler = Reassembler()
        self._heard: dict[str, float] = {}
        self.received = 0
        # Re-plans the deadlines after orphans got their grace period (the wiring sets it).
        self.wake: Callable[[], None] = lambda: None
        self._started = 0.0

    def __repr__(self) -> str:
        return f"Fanout({self.replica[:8]}, received={self.received})"

    async def start(self) -> None:
        self._started = asyncio.get_running_loop().time()
        self.hub.remote = self.send_event
        self.hub.broadcast = self.send_control
        self.hub.presence_listeners.append(self._local_presence)
        self._tasks.append(asyncio.create_task(self._listen(), name="pgnotify-listen"))
        self._tasks.append(asyncio.create_task(self._announce(), name="pgnotify-presence"))
        self._tasks.append(asyncio.create_task(self._flush_presence(), name="pgnotify-flush"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 10.0)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        # After the presence flusher stopped: nothing of this replica's follows its bye.
        with contextlib.suppress(Exception):
            await self._send({"kind": "bye", "origin": self.replica}, presence=True)
        await self._event_notify.close()
        await self._presence_notify.close()

    # -- sending ------------------------------------------------------------------------

    async def send_event(self, message: dict[str, Any]) -> None:
        """One publication (``event``, ``target``) or a batch of them (``items``), sent as one
        notification (chunked if long)."""
        # Events as every socket would get them: smaller NOTIFYs.
        items = message.get("items")
        if items is not None:
            slim = [{**i, "event": slim_event(i["event"])} for i in items]
            await self._send({"kind": "event", **message, "items": slim})
            return
        await self._send({"kind": "event", **message, "event": slim_event(message["event"])})

    async def send_control(self, message: dict[str, Any]) -> None:
        await self._send({**message, "origin": self.replica})

    async def _local_presence(self, user_id: str, online: bool) -> None:
        """Queued; ``_flush_presence`` sends what the user's state is by then."""
        self._presence_pending[user_id] = None
        self._presence_due.set()

    async def _flush_presence(self) -> None:
        while True:
            await self._presence_due.wait()
            await asyncio.sleep(PRESENCE_FLUSH)
            self._presence_due.clear()
            pending = list(self._presence_pending)
            self._presence_pending.clear()
            local = self.hub.presence.local_user_ids()
            for i in range(0, len(pending), PRESENCE_BATCH):
                batch = pending[i : i + PRESENCE_BATCH]
                message = {
                    "kind": "presence",
                    "origin": self.replica,
                    "online": [u for u in batch if u in local],
                    "offline": [u for u in batch if u not in local],
                }
                try:
                    await self._send(message, presence=True)
                except Exception as err:
                    # The periodic ``full`` repairs the others' view.
                    log.warning("%r: presence of %d users not sent: %s", self, len(batch), err)

    async def _send(self, message: dict[str, Any], *, presence: bool = False) -> None:
        # Wall-clock send time: the receivers' /metrics show the lag (NOTIFY lag histogram).
        text = wirejson.dumps({**message, "sent_at": time.time()}, ensure_ascii=True)
        payloads = chunks(text)
        # One statement (one round trip, one implicit transaction: the chunks are delivered
        # together) however many chunks.
        query = "SELECT " + ", ".join(["pg_notify(%s, %s)"] * len(payloads))
        params = [x for payload in payloads for x in (CHANNEL, payload)]
        await (self._presence_notify if presence else self._event_notify).execute(query, params)

    # -- receiving ----------------------------------------------------------------------

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    await self._send({"kind": "hello", "origin": self.replica}, presence=True)
                    log.info("%r listening on %s", self, CHANNEL)
                    # Revocations sent while this replica was not listening.
                    await self.hub.tokens.recheck()
                    async for note in conn.notifies():
                        await self._on_payload(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("%r: LISTEN connection lost (%s); reconnecting", self, err)
                self._listening.clear()
                await asyncio.sleep(RECONNECT_SECONDS)

    async def _on_payload(self, payload: str) -> None:
        try:
            text = self._reassembler.feed(payload)
            if text is None:
                return
            message = json.loads(text)
        except (ValueError, TypeError) as err:
            log.warning("%r: unreadable notification dropped: %s", self, err)
            return
        origin = message.get("origin")
        if origin == self.replica:
            return
        self.received += 1
        kind = message.get("kind")
        figures = self.ctx.metrics
        if figures is not None:
            figures.notified(str(kind), message.get("sent_at"))
        loop = asyncio.get_running_loop()
        if isinstance(origin, str):
            self._heard[origin] = loop.time()
        presence = self.hub.presence
        try:
            if kind == "event":
                await self.hub.deliver_remote(message)
            elif kind == "presence" and "user_id" in message:  # one user (before batching)
                presence.set_remote(origin, message["user_id"], bool(message["online"]))
            elif kind == "presence":
                for user_id in message.get("online") or ():
                    presence.set_remote(origin, user_id, True)
                for user_id in message.get("offline") or ():
                    presence.set_remote(origin, user_id, False)
            elif kind == "full":
                presence.replace_remote(origin, set(message["users"]))
            elif kind == "hello":
                await self._send_full()
            elif kind == "revoke":
                self.hub.tokens.on_message(message)
            elif kind == "bye":
                presence.drop_replica(origin)
                self._heard.pop(origin, None)
        except Exception:
            log.exception("%r: %s notification from %s failed", self, kind, origin)

    async def _send_full(self) -> None:
        users = sorted(self.hub.presence.local_user_ids())
        await self._send({"kind": "full", "origin": self.replica, "users": users}, presence=True)

    async def _announce(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PRESENCE_EVERY)
            with contextlib.suppress(Exception):
                await self._send_full()
            with contextlib.suppress(Exception):
                await self.hub.tokens.recheck()
            now = loop.time()
            for origin, heard in list(self._heard.items()):
                if now - heard > 3 * PRESENCE_EVERY:
                    self.hub.presence.drop_replica(origin)
                    del self._heard[origin]
            if now - self._started > 3 * PRESENCE_EVERY:
                with contextlib.suppress(Exception):
                    await self.sweep_orphans()

    def live_replica_prefixes(self) -> set[str]:
        """This replica and every replica heard from within three presence periods."""
        now = asyncio.get_running_loop().time()
        alive = {self.hub.replica_prefix}
        alive.update(
            o[: len(self.hub.replica_prefix)]
            for o, heard in self._heard.items()
            if now - heard <= 3 * PRESENCE_EVERY
        )
        return alive

    async def sweep_orphans(self) -> int:
        """Participants bound to connections of a replica that is gone (crashed) get the grace
        period a clean close would have given them. Run only once this replica has been up for
        three presence periods, so every live replica has been heard from."""
        alive = self.live_replica_prefixes()
        ctx = self.ctx
        async with ctx.store.begin() as db:
            rows = await db.execute(
                select(participants.c.id, participants.c.connection_id).where(
                    participants.c.left_at.is_(None),
                    participants.c.gone_at.is_(None),
                    participants.c.connection_id.is_not(None),
                )
            )
            dead = [pid for pid, cid in rows if cid.split("-", 1)[0] not in alive]
            if dead:
                grace = int(float(ctx.settings.ws_grace_seconds) * 1_000_000_000)
                await db.execute(
                    update(participants)
                    .where(participants.c.id.in_(dead), participants.c.gone_at.is_(None))
                    .values(gone_at=now_ns(ctx.clock) + grace)
                )
        if dead:
            log.warning(
                "%r: %d participants of vanished replicas: grace period started", self, len(dead)
            )
            self.wake()
        return len(dead)
