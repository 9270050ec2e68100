"""The database check behind ``GET /healthz`` and the systemd watchdog's probe.

What a health check must prove is that this replica can serve: its event loop runs (it answers
at all) and its database answers. It must not wait behind the pool: when thousands of devices
reconnect or close at once every pooled connection is busy, and a check queued there times
out at the proxy, which then takes a replica that is merely busy out of rotation (moving its
devices onto the others). So the check has **one connection of its own**, outside the pool
(PostgreSQL: a psycopg autocommit connection; SQLite: an aiosqlite connection), runs
``SELECT 1`` on it within ``CHECK_TIMEOUT`` seconds, and drops it on any failure (the next
check connects again).

``/healthz`` is public: concurrent checks share the one in flight, and a success is reused for
``FRESH_SECONDS``, so a flood of requests costs the database at most one query per period.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from appliance.errors import StoreError

CHECK_TIMEOUT = 2.0
FRESH_SECONDS = 1.0


def psycopg_dsn(url: str) -> str:
    """``postgresql+psycopg://…`` (SQLAlchemy) → ``postgresql://…`` (libpq)."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


class DatabaseCheck:
    """``SELECT 1`` on a connection of its own (see the module docstring)."""

    def __init__(
        self, url: str, *, timeout: float = CHECK_TIMEOUT, fresh: float = FRESH_SECONDS
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.timeout = timeout
        self.fresh = fresh
        self.queries = 0  # SELECT 1 sent (tests: a flood of checks shares them)
        self._conn: Any = None
        self._running: asyncio.Task[None] | None = None
        self._ok_at = float("-inf")

    def __repr__(self) -> str:
        return f"DatabaseCheck(queries={self.queries})"

    async def check(self) -> None:
        """Return when the database answered within the last ``fresh`` seconds or answers now
        within ``timeout``; raise :class:`StoreError` otherwise."""
        if time.monotonic() - self._ok_at < self.fresh:
            return
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._run(), name="database-check")
        # Shielded: a caller that gives up does not cancel the check the others wait for.
        await asyncio.shield(self._running)

    async def _run(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                if self._conn is None:
                    self._conn = await self._connect()
                self.queries += 1
                await self._conn.execute("SELECT 1")
        except Exception as err:
            await self.close()
            reason = "timed out" if isinstance(err, TimeoutError) else str(err)
            raise StoreError(f"database check failed: {reason}") from err
        self._ok_at = time.monotonic()

    async def _connect(self) -> Any:
        if self.is_sqlite:
            import aiosqlite

            return await aiosqlite.connect(self.url.split(":///", 1)[1])
        import psycopg

        return await psycopg.AsyncConnection.connect(psycopg_dsn(self.url), autocommit=True)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
