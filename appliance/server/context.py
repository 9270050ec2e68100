"""The seam between the server's layers: what a route handler is handed.

``ServerContext`` is built once by the app's lifespan (``appliance/server/app.py``) and holds
the store, the injected clock, the server settings and the realtime services. REST routes
(owned by the API layer) publish events and start rings through the two protocols below; the
realtime layer (``hub.py``, ``ringer.py``, ``sessions.py``, ``signaling.py``) implements them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from appliance.clock import Clock
from appliance.server.store.engine import Store


class EventBus(Protocol):
    async def publish(
        self,
        event: dict[str, Any],
        *,
        call_cid: str | None = None,
        user_ids: Iterable[str] | None = None,
    ) -> None:
        """Deliver ``event`` to every connection of the members of ``call_cid`` (and of
        ``user_ids``). Fans out across replicas when the store is PostgreSQL."""


class Ringer(Protocol):
    async def ring(
        self,
        call_cid: str,
        caller_id: str,
        member_ids: list[str] | None,
        video: bool | None,
    ) -> None:
        """Start a ring attempt (DESIGN §4 "Ringing"): opens a session if none is live,
        stores deadlines and sends ``call.ring`` to every connection of every ringed user."""

    async def members_removed(self, call_cid: str, user_ids: list[str]) -> None:
        """Members removed from the call stop ringing (on their sockets and phones)."""


@dataclass
class ServerContext:
    """Built by the app lifespan; ``appliance.server.wiring.start(ctx)`` sets ``bus`` and
    ``ringer`` before the first request is served."""

    store: Store
    clock: Clock
    settings: Any  # appliance.server.settings.ServerSettings
    bus: EventBus = field(default=None)  # type: ignore[assignment]
    ringer: Ringer = field(default=None)  # type: ignore[assignment]
    extras: dict[str, Any] = field(default_factory=dict)


def now_ns(clock: Clock) -> int:
    return int(clock.time() * 1_000_000_000)
