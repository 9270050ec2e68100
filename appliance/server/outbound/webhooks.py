"""Webhooks: every event of a call is POSTed, signed, to the receivers configured for its type.

The hub tells ``submit`` of each event this replica publishes (relayed ones are the publishing
replica's to send), after the event's frames are queued for the sockets; ``submit`` only puts
it in a bounded queue per receiver (``webhooks.max_queued``; a full one drops and counts), so
a receiver never delays a WebSocket. One task per receiver sends in order:

1. the body is the event as JSON (what a WebSocket client gets, with the full ``call``); the
   delivery id is a hash of the receiver's URL and the body;
2. claim (PostgreSQL, where replicas share the store): ``INSERT … ON CONFLICT DO NOTHING`` of a
   ``webhook_claims`` row with that id, so of several replicas handed the same delivery only the
   one whose insert lands posts it;
3. POST with Stream's headers: ``X-Signature`` (hex HMAC-SHA256 of the raw body with the API
   secret, what ``getstream``'s ``verify_webhook_signature`` checks), ``X-Webhook-Id``,
   ``X-Webhook-Attempt``, ``X-Api-Key``; redirects are not followed.

Answers: 2xx done; 429, 5xx, a timeout or a network error are retried with exponential backoff
(jittered, from ``retry_first_seconds``, at most 60 s apart) while ``retry_for_seconds`` since
the event last; anything else (400, 401, 403, 404, 3xx…) is logged and dropped. Logs name a
receiver by host and a hash of its URL, never the URL (it may carry a credential).

Deliveries wait in memory: those still queued or being retried when a replica stops or crashes
are lost (a receiver that must not miss one reconciles with the REST API, e.g. ``queryCalls``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import delete

from appliance.server.context import ServerContext, now_ns
from appliance.server.outbound.vapid import insert_ignoring_duplicates
from appliance.server.settings import WebhookHook, WebhookSettings, host_allowed
from appliance.server.store.schema import webhook_claims
from appliance.server.wire import wirejson
from appliance.server.wire.redact import REDACTED

log = logging.getLogger(__name__)

NS = 1_000_000_000
BACKOFF_MAX_SECONDS = 60.0
CLAIMS_KEPT_SECONDS = 86_400
CLEANUP_EVERY_SECONDS = 3600.0
OUTCOMES = ("sent", "retried", "failed", "dropped", "skipped")


def describe(url: str) -> str:
    """How logs name a receiver: host and a short hash of the URL."""
    return f"{urlsplit(url).hostname or '?'}#{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def signature(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class ReceiverUrlRedactor(logging.Filter):
    """httpx logs every request's URL at INFO; a receiver's path or query may be its credential.
    URLs on the allowed hosts keep only their scheme and host."""

    def __init__(self, allowed_hosts: list[str]) -> None:
        super().__init__()
        self.allowed_hosts = allowed_hosts

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean(a) for a in record.args)
        return True

    def _clean(self, value: Any) -> Any:
        text = str(value) if type(value).__name__ == "URL" else value
        if isinstance(text, str) and "://" in text and host_allowed(text, self.allowed_hosts):
            scheme, rest = text.split("://", 1)
            return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}/{REDACTED}"
        return value


@dataclass
class _Lane:
    hook: WebhookHook
    queue: asyncio.Queue[tuple[dict[str, Any], int]]
    name: str
    task: asyncio.Task[None] | None = None


class WebhookSender:
    def __init__(
        self, ctx: ServerContext, settings: WebhookSettings, http: httpx.AsyncClient | None = None
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self.http = http or httpx.AsyncClient(
            timeout=settings.timeout_seconds, follow_redirects=False, trust_env=False
        )
        self._lanes = [
            _Lane(h, asyncio.Queue(settings.max_queued), describe(h.url)) for h in settings.hooks
        ]
        self._counts = dict.fromkeys(OUTCOMES, 0)
        self._last_cleanup = 0.0
        # httpx logs each request's URL at INFO: a receiver's path and query lose their text.
        self._redactor = ReceiverUrlRedactor(settings.allowed_hosts)

    def __repr__(self) -> str:
        return f"WebhookSender({len(self._lanes)} receivers, {self._counts})"

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def queued(self) -> int:
        return sum(lane.queue.qsize() for lane in self._lanes)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        logging.getLogger("httpx").addFilter(self._redactor)
        for lane in self._lanes:
            lane.task = asyncio.create_task(self._run(lane), name=f"webhook {lane.name}")

    async def stop(self) -> None:
        tasks = [lane.task for lane in self._lanes if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.http.aclose()
        logging.getLogger("httpx").removeFilter(self._redactor)

    async def idle(self) -> None:
        """Return once every event submitted so far is delivered or given up on."""
        for lane in self._lanes:
            await lane.queue.join()

    # --- intake --------------------------------------------------------------------------

    def submit(self, event: dict[str, Any]) -> None:
        cid = event.get("call_cid")
        kind = event.get("type")
        if not isinstance(cid, str) or not isinstance(kind, str):
            return
        call_type = cid.split(":", 1)[0]
        now = now_ns(self.ctx.clock)
        for lane in self._lanes:
            if not lane.hook.wants(call_type, kind):
                continue
            try:
                lane.queue.put_nowait((event, now))
            except asyncio.QueueFull:
                self._counts["dropped"] += 1
                log.warning("webhook %s: queue full, %s of %s dropped", lane.name, kind, cid)

    async def _run(self, lane: _Lane) -> None:
        while True:
            event, queued_at = await lane.queue.get()
            try:
                await self._handle(lane, event, queued_at)
            except Exception:
                log.exception("webhook %s: %s not delivered", lane.name, event.get("type"))
                self._counts["failed"] += 1
            finally:
                lane.queue.task_done()

    async def _handle(self, lane: _Lane, event: dict[str, Any], queued_at: int) -> None:
        body = wirejson.dumps(event).encode("ascii")
        delivery = hashlib.sha256(lane.hook.url.encode() + b"\n" + body).hexdigest()[:40]
        if not await self._claim(delivery):
            self._counts["skipped"] += 1
            return
        await self._attempts(lane, event, body, delivery, queued_at)

    async def _claim(self, delivery: str) -> bool:
        if self.ctx.store.is_sqlite:
            # One process per SQLite file: nobody to share with, and the write lock is the
            # ring transactions' to have.
            return True
        now = now_ns(self.ctx.clock)
        stmt = insert_ignoring_duplicates(self.ctx.store.engine.dialect.name, webhook_claims)
        async with self.ctx.store.begin() as db:
            result = await db.execute(
                stmt.values(id=delivery, created_at=now).returning(webhook_claims.c.id)
            )
            won = result.first() is not None
            if self.ctx.clock.monotonic() - self._last_cleanup > CLEANUP_EVERY_SECONDS:
                self._last_cleanup = self.ctx.clock.monotonic()
                await db.execute(
                    delete(webhook_claims).where(
                        webhook_claims.c.created_at < now - CLAIMS_KEPT_SECONDS * NS
                    )
                )
        return won

    # --- delivery ------------------------------------------------------------------------

    async def _attempts(
        self, lane: _Lane, event: dict[str, Any], body: bytes, delivery: str, queued_at: int
    ) -> None:
        clock = self.ctx.clock
        deadline = queued_at + int(self.settings.retry_for_seconds * NS)
        what = f"webhook {lane.name}: {event.get('type')} of {event.get('call_cid')}"
        attempt = 1
        while True:
            status = await self._post(lane, body, delivery, attempt)
            if 200 <= status < 300:
                self._counts["sent"] += 1
                return
            if not (status == 0 or status == 429 or status >= 500):
                log.warning("%s: the receiver answered %d; not retried", what, status)
                self._counts["failed"] += 1
                return
            delay = self._backoff(attempt)
            if now_ns(clock) + int(delay * NS) > deadline:
                log.warning("%s: answered %d, given up after %d attempts", what, status, attempt)
                self._counts["failed"] += 1
                return
            log.info("%s: answered %d, retry in %.1f s", what, status, delay)
            self._counts["retried"] += 1
            attempt += 1
            await clock.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        first = self.settings.retry_first_seconds
        return min(BACKOFF_MAX_SECONDS, first * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)

    async def _post(self, lane: _Lane, body: bytes, delivery: str, attempt: int) -> int:
        """The answer's status; 0 when there was none (timeout, refused, reset)."""
        ctx = self.ctx
        headers = {
            "Content-Type": "application/json",
            "X-Signature": signature(body, ctx.settings.secret),
            "X-Webhook-Id": delivery,
            "X-Webhook-Attempt": str(attempt),
            "X-Api-Key": ctx.settings.api_key or "",  # ensure_secret filled it
            "User-Agent": "appliance-webhooks",
        }
        try:
            r = await self.http.post(lane.hook.url, content=body, headers=headers)
        except httpx.HTTPError as err:
            log.info("webhook %s: %s", lane.name, type(err).__name__)
            return 0
        return r.status_code
