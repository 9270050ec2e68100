"""The realtime services of one server, as handed to routes and frame handlers.

``appliance.server.wiring.start(ctx)`` builds them and stores them in ``ctx.realtime``;
``services(ctx)`` gets them back (a clear 503 when the realtime layer is not running).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from appliance.errors import InvalidRequest, ServerUnavailable
from appliance.server.context import ServerContext
from appliance.server.lifecycle.outbox import Transactor
from appliance.server.realtime.hub import Hub

if TYPE_CHECKING:
    from appliance.server.lifecycle.closes import CloseBatcher
    from appliance.server.lifecycle.deadlines import Scheduler
    from appliance.server.lifecycle.ringer import RingEngine
    from appliance.server.outbound.pushsender import PushSender
    from appliance.server.outbound.vapid import VapidKey
    from appliance.server.outbound.webhooks import WebhookSender
    from appliance.server.realtime.pgnotify import Fanout
    from appliance.server.realtime.signaling import SignalRelay


@dataclass
class Services:
    hub: Hub
    tx: Transactor
    ringer: RingEngine
    relay: SignalRelay
    scheduler: Scheduler
    # Starts the grace period of closed connections' participants, in batches.
    closes: CloseBatcher
    # The server's VAPID key (loaded by the app's lifespan) and the Web Push sender built on it.
    vapid: VapidKey | None = None
    push: PushSender | None = None
    # Only when ``webhooks.hooks`` names receivers.
    webhooks: WebhookSender | None = None
    # Only with a PostgreSQL store: events and presence reach the other replicas through it.
    fanout: Fanout | None = None

    def check_connection(self, connection_id: str, user_id: str, cid: str) -> None:
        """A join's ``connection_id`` must be an open WebSocket of the joining user, and one
        whose token may act on call ``cid`` (a socket pinned to other calls is refused).

        A connection of another replica (PostgreSQL fan-out) cannot be checked here; it is
        accepted, and the hub delivers to a connection only what is addressed to its own user.
        """
        conn = self.hub.connections.get(connection_id)
        if conn is not None:
            if conn.user_id != user_id:
                raise InvalidRequest(
                    f"connection_id {connection_id} belongs to another user", field="connection_id"
                )
            conn.require_call(cid, field="connection_id")
            return
        if self.hub.remote is None:
            raise InvalidRequest(
                f"connection_id {connection_id} is not an open WebSocket of user {user_id} on "
                "this server (open /api/v2/connect first and use its connection.ok id)",
                field="connection_id",
            )


def services(ctx: ServerContext) -> Services:
    svc = ctx.realtime
    if not isinstance(svc, Services):
        raise ServerUnavailable("the realtime layer is not running on this server")
    return svc
