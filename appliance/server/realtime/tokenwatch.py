"""Open WebSockets end with their token: at ``exp`` + leeway, and when the user's tokens are revoked.

A token is checked when a socket opens; without this a socket opened with a lost phone's token
kept hearing rings after ``revoke_tokens`` (REST already answered 401), and one opened with a
short-lived token outlived it. Such a socket gets a ``connection.error`` naming the reason and
is closed with 1008, within seconds, on every replica:

- expiry: one timer per socket whose token has ``exp``, on the injected clock (re-checked after
  the sleep: a Pi's wall clock may jump when it syncs);
- revocation: the revoke route stores it and calls ``revoke`` here, which closes the matching
  sockets of this replica and, through ``Hub.broadcast`` (PostgreSQL NOTIFY), of the others;
  each replica also re-reads the stored revocations of its users when its LISTEN connection
  (re)opens and every presence period, so a notification lost with a dropped connection
  costs seconds, not the socket's lifetime; a socket that opens while a revocation is being
  stored is re-checked once it is registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from appliance.errors import AuthenticationError, TokenExpired
from appliance.server.context import ServerContext
from appliance.server.store.schema import users

if TYPE_CHECKING:
    from appliance.server.realtime.connection import Connection, HubPort

log = logging.getLogger(__name__)

NS = 1_000_000_000
CHUNK = 500


def is_revoked(conn: Connection, before_ns: int | None) -> bool:
    """The rule of ``auth.authenticate``: no ``iat``, or ``iat`` not after the revocation."""
    if before_ns is None:
        return False
    return conn.token_iat is None or conn.token_iat * NS <= before_ns


class TokenWatch:
    def __init__(self, ctx: ServerContext, hub: HubPort) -> None:
        self.ctx = ctx
        self.hub = hub
        self._timers: dict[str, asyncio.Task[None]] = {}
        self.dropped = 0

    def __repr__(self) -> str:
        return f"TokenWatch({len(self._timers)} timers, dropped={self.dropped})"

    @property
    def leeway(self) -> float:
        return float(self.ctx.settings.token_leeway_seconds)

    # -- hub hooks ------------------------------------------------------------------------

    async def opened(self, conn: Connection) -> None:
        if conn.token_exp is not None:
            self._timers[conn.id] = asyncio.create_task(
                self._expire(conn), name=f"token-expiry-{conn.id[:8]}"
            )
        await self.recheck([conn.user_id])

    async def closed(self, conn: Connection) -> None:
        timer = self._timers.pop(conn.id, None)
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer

    async def stop(self) -> None:
        for conn_id in list(self._timers):
            timer = self._timers.pop(conn_id)
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer

    async def _expire(self, conn: Connection) -> None:
        assert conn.token_exp is not None
        clock = self.ctx.clock
        while (left := conn.token_exp + self.leeway - clock.time()) > 0:
            await clock.sleep(left)
        self._timers.pop(conn.id, None)
        self._drop(conn, "token has expired", expired=True)

    # -- revocation -----------------------------------------------------------------------

    async def revoke(self, user_ids: Iterable[str], before_ns: int) -> int:
        """A revocation just stored: close the sockets it ends, here and on other replicas."""
        ids = sorted(set(user_ids))
        closed = self.revoked(ids, before_ns)
        if self.hub.broadcast is not None:
            try:
                await self.hub.broadcast({"kind": "revoke", "user_ids": ids, "before": before_ns})
            except Exception:
                # The stored revocation still reaches them at their next recheck.
                log.exception("%r: revocation of %s not sent to other replicas", self, ids)
        return closed

    def revoked(self, user_ids: Iterable[str], before_ns: int) -> int:
        """Close this replica's sockets of ``user_ids`` whose token the revocation covers."""
        closed = 0
        for user_id in user_ids:
            for conn_id in list(self.hub.by_user.get(user_id, ())):
                conn = self.hub.connections.get(conn_id)
                if conn is not None and is_revoked(conn, before_ns):
                    self._drop(conn, f"token of user {user_id} has been revoked")
                    closed += 1
        return closed

    async def recheck(self, user_ids: Iterable[str] | None = None) -> int:
        """Apply the stored revocations of ``user_ids`` (default: every user connected here)."""
        pool = sorted(set(self.hub.by_user if user_ids is None else user_ids))
        closed = 0
        async with self.ctx.store.connect() as db:
            for i in range(0, len(pool), CHUNK):
                rows = await db.execute(
                    select(users.c.id, users.c.revoke_tokens_issued_before).where(
                        users.c.id.in_(pool[i : i + CHUNK]),
                        users.c.revoke_tokens_issued_before.is_not(None),
                    )
                )
                for user_id, before in rows:
                    closed += self.revoked([user_id], int(before))
        return closed

    def _drop(self, conn: Connection, why: str, *, expired: bool = False) -> None:
        if conn.closed:
            return
        log.info("%r: %s: closing it", conn, why)
        self.dropped += 1
        conn.drop(TokenExpired(why) if expired else AuthenticationError(why))

    def on_message(self, message: dict[str, Any]) -> None:
        """A ``revoke`` message of another replica (``pgnotify``)."""
        self.revoked([str(u) for u in message.get("user_ids") or ()], int(message["before"]))
