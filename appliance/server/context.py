"""The seam between the server's layers: what a route handler is handed.

``ServerContext`` is built once by the app's lifespan (``appliance/server/app.py``) and holds
the store, the injected clock, the server settings, the metrics and, once
``appliance.server.wiring.start`` has run, the realtime services. REST routes (owned by the API
layer) start rings through the ``Ringer`` protocol below (``lifecycle/ringer.py`` implements
it); events leave through the outbox (``lifecycle/outbox.py``). Every field is typed:
what sits above this module in the layers (docs/architecture.md) is named by a protocol here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from appliance.clock import Clock
from appliance.server.metrics import ServerMetrics
from appliance.server.settings import ServerSettings
from appliance.server.store.engine import Store


class Ringer(Protocol):
    async def ring(
        self,
        call_cid: str,
        caller_id: str,
        member_ids: list[str] | None,
        video: bool | None,
    ) -> None:
        """Start a ring attempt (docs/architecture.md, "Ringing"): opens a session if none is live,
        stores deadlines and sends ``call.ring`` to every connection of every ringed user."""

    async def members_removed(self, call_cid: str, user_ids: list[str]) -> None:
        """Members removed from the call stop ringing (on their sockets and phones)."""


class OnlineUsers(Protocol):
    """Who is online (``realtime/presence.py``), for the ``online`` filter and the serializer."""

    def is_online(self, user_id: str) -> bool: ...

    def online_user_ids(self) -> frozenset[str]: ...


@dataclass
class ServerContext:
    """Built by the app lifespan; ``appliance.server.wiring.start(ctx)`` sets
    ``ringer``, ``presence`` and ``realtime`` before the first request is served."""

    store: Store
    clock: Clock
    settings: ServerSettings
    metrics: ServerMetrics | None = None
    ringer: Ringer = field(default=None)  # type: ignore[assignment]
    presence: OnlineUsers | None = None
    # The running realtime services (``lifecycle/services.py``'s ``Services``; they import this
    # module, so it cannot name their class): read them with ``services(ctx)``, which narrows it.
    realtime: object | None = None
    # Telemetry events clients sent to ``/call_client_event`` (counted, not stored).
    client_events: int = 0


def now_ns(clock: Clock) -> int:
    return int(clock.time() * 1_000_000_000)
