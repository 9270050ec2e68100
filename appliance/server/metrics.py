"""``GET /metrics``: the server's figures in Prometheus text format (``prometheus_client``).

One ``CollectorRegistry`` per app (never the library's global one: several servers in one
process, as in the tests, each count their own). Two kinds of figures:

- counted where they happen (cheap increments): rings started/answered/missed/rejected and the
  ring-to-answer time, by call type (``Transactor`` hands over the outcomes a committed ring
  transaction recorded), request latency by route template (``RequestMetrics``, the ASGI
  middleware: the label is the route's path template such as ``/api/v2/video/call/{type}/{id}``,
  never the path with its ids), NOTIFY lag between replicas (``pgnotify.py`` stamps each
  message with its send time);
- read at scrape time from the objects that already keep them (``LiveCollector``): WebSocket
  connections and their send queues, the database pool, Web Push and webhook counters, the
  replicas heard from. Nothing extra runs on the hot path for these.

Who may read it: ``metrics.allow_from`` addresses and ``metrics.token`` (``settings.py``);
the API's own tokens never open it.
"""

from __future__ import annotations

import gc
import hmac
import ipaddress
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.errors import APIError, NotFound, PermissionDenied

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from appliance.server.settings import MetricsSettings

NO_ROUTE = "(no route)"
WEB_CONSOLE = "(web console)"
ANSWER_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


@dataclass(frozen=True)
class RingOutcome:
    """What a ring transaction did, counted once it committed. ``seconds``: ring to answer."""

    kind: str  # started | answered | missed | rejected
    call_cid: str
    count: int = 1
    seconds: float | None = None

    @property
    def call_type(self) -> str:
        return self.call_cid.split(":", 1)[0]


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rings = {
            kind: Counter(
                f"appliance_rings_{kind}",
                f"Ring {what}, by call type",
                ["call_type"],
                registry=r,
            )
            for kind, what in (
                ("started", "attempts started (one per ring request)"),
                ("answered", "answers (a ringed user accepted)"),
                ("missed", "misses (a ringed user's ring timed out), one per user"),
                ("rejected", "declines by a ringed user, one per user"),
            )
        }
        self.answer_seconds = Histogram(
            "appliance_ring_answer_seconds",
            "From the start of a ring attempt to a ringed user's accept",
            ["call_type"],
            buckets=ANSWER_BUCKETS,
            registry=r,
        )
        self.request_seconds = Histogram(
            "appliance_http_request_duration_seconds",
            "HTTP request latency, by method, route template and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.notify_lag = Histogram(
            "appliance_notify_lag_seconds",
            "From a replica's NOTIFY to its receipt here (wall clocks of both machines)",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.notify_received = Counter(
            "appliance_notify_received",
            "Notifications from other replicas, by kind",
            ["kind"],
            registry=r,
        )
        self.live = LiveCollector()
        r.register(self.live)
        ProcessCollector(registry=r)

    def record(self, outcomes: Iterable[RingOutcome]) -> None:
        for o in outcomes:
            self.rings[o.kind].labels(o.call_type).inc(o.count)
            if o.seconds is not None:
                self.answer_seconds.labels(o.call_type).observe(max(0.0, o.seconds))

    def notified(self, kind: str, sent_at: Any) -> None:
        """A notification from another replica; ``sent_at``: its wall-clock send time."""
        self.notify_received.labels(kind if kind in _NOTIFY_KINDS else "other").inc()
        if isinstance(sent_at, int | float) and not isinstance(sent_at, bool):
            self.notify_lag.observe(max(0.0, time.time() - float(sent_at)))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


_NOTIFY_KINDS = frozenset({"event", "presence", "full", "hello", "revoke", "bye"})


class _Queue(Protocol):
    def qsize(self) -> int: ...


class _Socket(Protocol):
    @property
    def queue(self) -> _Queue: ...


class LiveHub(Protocol):
    """What a scrape reads of the hub (``realtime/hub.py``)."""

    @property
    def replica_prefix(self) -> str: ...
    @property
    def connections(self) -> Mapping[str, _Socket]: ...
    @property
    def by_user(self) -> Mapping[str, Any]: ...


class LiveFanout(Protocol):
    """What a scrape reads of the PostgreSQL fan-out (``realtime/pgnotify.py``)."""

    def live_replica_prefixes(self) -> set[str]: ...


class LivePush(Protocol):
    """What a scrape reads of the Web Push sender (``outbound/pushsender.py``)."""

    sent: int
    retried: int
    failed: int
    removed: int
    dropped: int
    skipped: int


class LiveWebhooks(Protocol):
    """What a scrape reads of the webhook sender (``outbound/webhooks.py``)."""

    def counts(self) -> dict[str, int]: ...

    def queued(self) -> int: ...


@dataclass
class LiveSources:
    """The running realtime objects a scrape reads (``appliance.server.wiring.start`` sets them;
    this module names them by protocols, since they import the context that imports it)."""

    hub: LiveHub
    send_queue_frames: int  # where a socket's send queue is closed (``connection.py``)
    fanout: LiveFanout | None = None
    push: LivePush | None = None
    webhooks: LiveWebhooks | None = None


class LiveCollector(Collector):
    """Figures read at scrape time from the running server (``bind`` once the store is open,
    ``watch`` once the realtime layer has started)."""

    def __init__(self) -> None:
        self.engine: AsyncEngine | None = None
        self.sources: LiveSources | None = None

    def bind(self, engine: AsyncEngine) -> None:
        self.engine = engine

    def watch(self, sources: LiveSources | None) -> None:
        self.sources = sources

    def describe(self) -> list[Metric]:
        return []  # names vary with what runs (no PostgreSQL fan-out on SQLite)

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        if engine is None:
            return
        src = self.sources
        if src is not None:
            hub = src.hub
            info = GaugeMetricFamily(
                "appliance_replica_info",
                "This replica's id prefix (the one its connection ids start with)",
                labels=["replica", "store"],
            )
            info.add_metric([hub.replica_prefix, engine.dialect.name], 1.0)
            yield info
            conns = list(hub.connections.values())
            yield _gauge("appliance_ws_connections", "Open WebSockets on this replica", len(conns))
            yield _gauge(
                "appliance_ws_users",
                "Users with an open WebSocket on this replica",
                len(hub.by_user),
            )
            depths = [c.queue.qsize() for c in conns]
            yield _gauge(
                "appliance_ws_send_queue_frames_max",
                "Frames waiting in the fullest WebSocket send queue (a socket is closed at "
                f"{src.send_queue_frames})",
                max(depths, default=0),
            )
            yield _gauge(
                "appliance_ws_send_queue_frames",
                "Frames waiting in all WebSocket send queues together",
                sum(depths),
            )
        yield from _pool(engine)
        yield _gauge(
            "appliance_gc_frozen_objects",
            "Objects left out of garbage collection (the heap `appliance serve` started with)",
            gc.get_freeze_count(),
        )
        if src is None:
            return
        if src.fanout is not None:
            yield _gauge(
                "appliance_replicas_heard",
                "Replicas this one has heard from recently, itself included",
                len(src.fanout.live_replica_prefixes()),
            )
        pusher = src.push
        if pusher is not None:
            yield _outcomes(
                "appliance_push_sends",
                "Web Push messages by outcome",
                {
                    "sent": pusher.sent,
                    "retried": pusher.retried,
                    "failed": pusher.failed,
                    "removed": pusher.removed,
                    "dropped": pusher.dropped,
                    "skipped": pusher.skipped,
                },
            )
        hooks = src.webhooks
        if hooks is not None:
            yield _outcomes(
                "appliance_webhook_deliveries", "Webhook POSTs by outcome", hooks.counts()
            )
            yield _gauge(
                "appliance_webhook_queued", "Events waiting for webhook delivery", hooks.queued()
            )


def _pool(engine: AsyncEngine) -> Iterator[Metric]:
    pool = engine.pool
    dialect = engine.dialect.name
    figures = {"checked_out": "checkedout", "size": "size", "overflow": "overflow"}
    for name, method in figures.items():
        fn = getattr(pool, method, None)
        if not callable(fn):
            continue
        g = GaugeMetricFamily(
            f"appliance_db_pool_{name}",
            f"Database connection pool: {name.replace('_', ' ')}",
            labels=["dialect"],
        )
        g.add_metric([dialect], float(fn()))
        yield g


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _outcomes(name: str, doc: str, counts: dict[str, int]) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc, labels=["outcome"])
    for outcome, value in counts.items():
        c.add_metric([outcome], float(value))
    return c


# --- the route and its guard ----------------------------------------------------------------


def allowed(scope: Scope, settings: MetricsSettings) -> APIError | None:
    """Why this request may not read the metrics, if it may not."""
    if not settings.enabled:
        return NotFound("metrics are turned off (metrics.enabled)")
    client = scope.get("client")
    if client and _address_in(client[0], settings.allow_from):
        return None
    if settings.token:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value.decode("latin-1")
                want = f"Bearer {settings.token}"
                if hmac.compare_digest(given.encode("latin-1"), want.encode("latin-1")):
                    return None
    return PermissionDenied(
        "metrics: this address is not in metrics.allow_from and no valid metrics token was sent "
        "(Authorization: Bearer <metrics.token>)"
    )


def _address_in(host: str, networks: list[str]) -> bool:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in ipaddress.ip_network(n, strict=False) for n in networks)


CONTENT_TYPE = CONTENT_TYPE_LATEST


# --- request latency --------------------------------------------------------------------------


class RequestMetrics:
    """Times every HTTP request; labels it with the template of the route that answered."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            method = scope.get("method", "")
            self.metrics.request_seconds.labels(
                method if method in _METHODS else "OTHER", route_label(scope), str(status)
            ).observe(time.perf_counter() - started)


# A client may send any token as its method: only these become labels.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return NO_ROUTE
    return path or WEB_CONSOLE  # the console's mount at "/" has the empty path
