"""Sends rings to phones through their browsers' push services (Web Push, RFC 8030/8291/8292).

``submit`` is called after a ring transaction committed and its events went to the WebSockets;
it only queues (bounded: ``MAX_QUEUED``; a full queue drops and logs), so a push never delays
the ring on the WebSocket. A worker task takes each ``RingPush`` and:

1. reads the users' subscriptions (one query);
2. claims it: one ``INSERT … ON CONFLICT DO NOTHING`` of a ``push_claims`` row per user who has
   a subscription, so with several replicas the one whose insert lands sends it (the others
   skip);
3. per subscription, in its own task: encrypts the payload (``http_ece``, aes128gcm, a fresh
   ephemeral key per message) and POSTs it with ``TTL``, ``Urgency``, ``Topic`` and the VAPID
   ``Authorization`` (signed once per push-service origin and cached, ``vapid.py``) through one
   shared ``aiohttp.ClientSession`` (keep-alive pool; at most ``push.max_concurrent_sends``
   requests in flight, redirects never followed). Not httpx, which the rest of the project
   uses: its connection pool scans every connection for every queued request, and 200 posts
   over 32 connections took 2.4-5.6 s with it against 0.3-0.6 s with aiohttp here.

Answers: 2xx done; 404/410 the subscription is gone (deleted); 429, 5xx, a timeout or a network
error are retried with exponential backoff (or the 429's ``Retry-After``) for as long as the
ring lasts (a "ring stopped" for a minute); anything else (400, 401, 403, 413) is logged and
dropped. A "ring stopped" for a user first ends that user's ring retries and waits for a ring
request in flight on the same subscription, so the two arrive in order. Nothing on this path
writes to the database but the claim (and the deletion of a gone subscription). Logs name
subscriptions by push-service host and a hash (``pushdevices.describe``), never by URL or key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import http_ece
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete

from appliance.server.context import ServerContext, now_ns
from appliance.server.outbound import pushdevices
from appliance.server.outbound.pushdevices import Subscription
from appliance.server.outbound.ringpush import RingPush, topic
from appliance.server.outbound.vapid import VapidKey, b64url_decode, insert_ignoring_duplicates
from appliance.server.settings import host_allowed
from appliance.server.store.schema import push_claims

log = logging.getLogger(__name__)

NS = 1_000_000_000
MAX_QUEUED = 10_000
STOPPED_RETRY_SECONDS = 60.0
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
CLAIMS_KEPT_SECONDS = 86_400
CLEANUP_EVERY_SECONDS = 3600.0
MAX_CACHED_KEYS = 10_000
_RETRY_STATUSES = frozenset({408, 425, 429})


@dataclass
class _Job:
    """One message to one subscription."""

    note: RingPush
    sub: Subscription
    topic: str
    deadline: int  # ns: no attempt starts after it
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # held while a request is out
    superseded: bool = False

    def __repr__(self) -> str:
        return f"Push({self.note.kind} {self.note.call_cid} to {self.sub!r})"


class PushSender:
    def __init__(self, ctx: ServerContext, key: VapidKey) -> None:
        self.ctx = ctx
        self.key = key
        self.settings = ctx.settings.push
        self.http: aiohttp.ClientSession | None = None
        self._queue: asyncio.Queue[RingPush] = asyncio.Queue(MAX_QUEUED)
        self._slots = asyncio.Semaphore(self.settings.max_concurrent_sends)
        self._rings: dict[tuple[str, str], _Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._last_cleanup = 0.0
        # Parsed subscription keys by endpoint (parsing checks the point: not per message).
        self._keys: dict[str, tuple[tuple[str, str], ec.EllipticCurvePublicKey, bytes]] = {}
        # counters (tests and the benchmark read them)
        self.sent = 0
        self.retried = 0
        self.failed = 0
        self.removed = 0
        self.dropped = 0
        self.skipped = 0  # claimed by another replica

    def __repr__(self) -> str:
        return (
            f"PushSender(sent={self.sent}, retried={self.retried}, failed={self.failed}, "
            f"removed={self.removed}, queued={self._queue.qsize()})"
        )

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.settings.max_concurrent_sends),
            timeout=aiohttp.ClientTimeout(total=self.settings.send_timeout_seconds),
            auto_decompress=False,
        )
        self._worker = asyncio.create_task(self._run(), name="push-sender")

    async def stop(self) -> None:
        tasks = [t for t in (self._worker, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.http is not None:
            await self.http.close()

    async def idle(self) -> None:
        """Return once everything submitted so far has been delivered or given up on."""
        await self._queue.join()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- intake --------------------------------------------------------------------------

    def submit(self, notes: Iterable[RingPush]) -> None:
        if not self.settings.enabled:
            return
        for note in notes:
            try:
                self._queue.put_nowait(note)
            except asyncio.QueueFull:
                self.dropped += 1
                log.warning("%r: queue full, %r dropped", self, note)

    async def _run(self) -> None:
        while True:
            note = await self._queue.get()
            try:
                self._spawn(self._handle(note))
            finally:
                self._queue.task_done()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, note: RingPush) -> None:
        # Let the WebSocket writers this ring just woke go first.
        await asyncio.sleep(0)
        try:
            async with self.ctx.store.connect() as db:
                subs = await pushdevices.of_users(db, note.user_ids)
            # Claims only for users with somewhere to push to (most members of a big call
            # may have none): no write for them.
            users = await self._claim(note, {sub.user_id for sub in subs})
            if not users:
                return
            subs = [sub for sub in subs if sub.user_id in users]
        except Exception:
            log.exception("%r: cannot read subscriptions", note)
            return
        allowed = self.settings.allowed_hosts
        refused = [sub for sub in subs if not host_allowed(sub.endpoint, allowed)]
        if refused:  # stored before push.allowed_hosts lost their host: never contacted
            log.warning("%r: %d subscriptions off push.allowed_hosts skipped", note, len(refused))
            subs = [sub for sub in subs if sub not in refused]
        now = now_ns(self.ctx.clock)
        if note.kind == "ring":
            deadline = note.expires_at
        else:
            deadline = now + int(STOPPED_RETRY_SECONDS * NS)
        payload = note.payload(now)
        secret = self.ctx.settings.secret
        topics = {u: topic(secret, note.call_cid, u) for u in users}
        for sub in subs:
            job = _Job(note, sub, topics[sub.user_id], deadline)
            self._spawn(self._deliver(job, payload))

    async def _claim(self, note: RingPush, user_ids: set[str]) -> set[str]:
        """The users of ``user_ids`` this replica sends ``note`` to (all of them, unless
        another replica claimed some already)."""
        now = now_ns(self.ctx.clock)
        rows = [
            {
                "session_id": note.session_id,
                "user_id": u,
                "kind": note.kind,
                "ring_at": note.ring_at,
                "created_at": now,
            }
            for u in sorted(user_ids)
        ]
        if not rows:
            return set()
        stmt = insert_ignoring_duplicates(self.ctx.store.engine.dialect.name, push_claims)
        claimed: set[str] = set()
        async with self.ctx.store.begin() as db:
            for i in range(0, len(rows), 500):
                result = await db.execute(
                    stmt.values(rows[i : i + 500]).returning(push_claims.c.user_id)
                )
                claimed.update(result.scalars())
            if self.ctx.clock.monotonic() - self._last_cleanup > CLEANUP_EVERY_SECONDS:
                self._last_cleanup = self.ctx.clock.monotonic()
                await db.execute(
                    delete(push_claims).where(
                        push_claims.c.created_at < now - CLAIMS_KEPT_SECONDS * NS
                    )
                )
        self.skipped += len(rows) - len(claimed)
        return claimed

    # --- delivery ------------------------------------------------------------------------

    async def _deliver(self, job: _Job, payload: bytes) -> None:
        key = (job.topic, job.sub.endpoint)
        if job.note.kind == "ring":
            previous = self._rings.get(key)
            if previous is not None:
                previous.superseded = True
            self._rings[key] = job
        else:
            ring = self._rings.pop(key, None)
            if ring is not None:
                ring.superseded = True
                async with ring.lock:  # a ring request in flight lands first
                    pass
        try:
            body = self._encrypt(payload, job.sub)
        except Exception:
            log.exception("%r: cannot encrypt (bad subscription keys?)", job)
            self.failed += 1
            return
        try:
            await self._attempts(job, body)
        finally:
            if self._rings.get(key) is job:
                del self._rings[key]

    def _encrypt(self, payload: bytes, sub: Subscription) -> bytes:
        """RFC 8291 ``aes128gcm`` for ``sub``, with a fresh ephemeral key pair."""
        keys = self._keys.get(sub.endpoint)
        if keys is None or keys[0] != (sub.p256dh, sub.auth):
            point = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), b64url_decode(sub.p256dh)
            )
            keys = ((sub.p256dh, sub.auth), point, b64url_decode(sub.auth))
            if len(self._keys) >= MAX_CACHED_KEYS:
                self._keys.pop(next(iter(self._keys)))
            self._keys[sub.endpoint] = keys
        result: bytes = http_ece.encrypt(
            payload,
            private_key=ec.generate_private_key(ec.SECP256R1()),
            dh=keys[1],
            auth_secret=keys[2],
            version="aes128gcm",
        )
        return result

    async def _attempts(self, job: _Job, body: bytes) -> None:
        attempt = 0
        clock = self.ctx.clock
        while not job.superseded:
            now = now_ns(clock)
            ttl = job.note.ttl(now)
            if now >= job.deadline or (job.note.kind == "ring" and ttl <= 0):
                log.info("%r: given up, the ring is over", job)
                self.failed += 1
                return
            async with self._slots, job.lock:
                if job.superseded:
                    return
                status, retry_after = await self._post(job, body, ttl)
            if 200 <= status < 300:
                self.sent += 1
                return
            if status in (404, 410):
                await self._forget(job)
                return
            if not (status == 0 or status in _RETRY_STATUSES or status >= 500):
                log.warning("%r: push service answered %d; not retried", job, status)
                self.failed += 1
                return
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            if now_ns(clock) + int(delay * NS) >= job.deadline:
                log.info("%r: answered %d, no time left to retry", job, status)
                self.failed += 1
                return
            log.info("%r: answered %d, retry in %.1f s", job, status, delay)
            self.retried += 1
            attempt += 1
            await clock.sleep(delay)

    @staticmethod
    def _backoff(attempt: int) -> float:
        base = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2**attempt)
        return base * random.uniform(0.8, 1.2)

    async def _post(self, job: _Job, body: bytes, ttl: int) -> tuple[int, float | None]:
        """The answer's status (0: no answer) and its ``Retry-After`` in seconds."""
        headers = {
            "Authorization": self.key.authorization(job.sub.origin),
            "TTL": str(ttl),
            "Urgency": job.note.urgency,
            "Topic": job.topic,
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
        }
        assert self.http is not None, "start() first"
        try:
            async with self.http.post(
                job.sub.endpoint, data=body, headers=headers, allow_redirects=False
            ) as r:
                return r.status, _retry_after(r.headers.get("retry-after"))
        except (aiohttp.ClientError, TimeoutError) as err:
            log.info("%r: %s", job, type(err).__name__)
            return 0, None

    async def _forget(self, job: _Job) -> None:
        """The push service says the subscription is gone (the browser unsubscribed)."""
        try:
            async with self.ctx.store.begin() as db:
                await pushdevices.remove(db, job.sub.endpoint)
        except Exception:
            log.exception("%r: cannot delete the gone subscription", job)
            return
        self.removed += 1
        log.info("%r: the subscription is gone: deleted", job)


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (an HTTP date is treated as a short wait)."""
    if value is None:
        return None
    try:
        return max(0.0, min(float(value), BACKOFF_MAX_SECONDS))
    except ValueError:
        return BACKOFF_FIRST_SECONDS
