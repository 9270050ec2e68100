"""The store: one async SQLAlchemy engine on SQLite (WAL, foreign keys on) or PostgreSQL.

``Store.connect()`` gives a connection for reads, ``Store.begin()`` a transaction. SQLite allows
one writer at a time, so writes on SQLite are serialised by an asyncio lock here rather than
by ``database is locked`` retries.

On PostgreSQL a pooled connection is checked (``SELECT 1``) only when it has sat idle in the
pool for ``IDLE_PING_SECONDS``: a check on every checkout was one more round trip per
transaction, and a connection that broke while in use is dropped by the pool anyway. psycopg
prepares a statement on a connection after its ``PREPARE_THRESHOLD``-th execution there.

On PostgreSQL ``connect()`` reads in autocommit: each statement is its own transaction, as at
READ COMMITTED each statement of a read transaction had its own snapshot anyway. A read block in
a transaction cost a ``BEGIN`` and, at its end, a ``ROLLBACK`` on which psycopg forgets every
statement it prepared on that connection (then sends ``DEALLOCATE ALL``) and how often it ran the
others: two or three round trips more per read (a query-members page made five instead of
three), a statement run once per read was never prepared, and a connection that served a read
lost what a transaction had prepared on it. ``begin()`` is a transaction as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, select
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from appliance.errors import ConfigError, StoreError
from appliance.server.store.health import DatabaseCheck
from appliance.server.store.schema import SCHEMA_VERSION, metadata, schema_info

log = logging.getLogger(__name__)

IDLE_PING_SECONDS = 10.0
PREPARE_THRESHOLD = 2


def database_url(value: str, state_dir: Path) -> str:
    """Turn the ``database`` setting into an async SQLAlchemy URL.

    Accepts ``sqlite:///path``, a bare file path, ``postgresql://…`` (driven by psycopg 3).
    """
    if not value:
        return f"sqlite+aiosqlite:///{state_dir / 'appliance.db'}"
    if value.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    if value.startswith("postgresql+psycopg://"):
        return value
    if value.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + value[len("sqlite:///") :]
    if value.startswith("sqlite+aiosqlite:///"):
        return value
    if "://" in value:
        raise ConfigError(
            f"unsupported database URL scheme in {value.split('://', 1)[0]!r}",
            key="database",
            hint="use a SQLite file path or postgresql://user:pass@host/db",
        )
    return f"sqlite+aiosqlite:///{Path(value).expanduser()}"


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            path = url.split(":///", 1)[1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs.update(
                pool_size=10,
                max_overflow=20,
                connect_args={"prepare_threshold": PREPARE_THRESHOLD},
            )
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        # ``/healthz``: a connection of its own, never queued behind the pool (health.py).
        self.health = DatabaseCheck(url)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            pool = self.engine.sync_engine.pool
            event.listen(pool, "checkin", _idle_since)
            event.listen(pool, "checkout", self._ping_if_idle)

    def __repr__(self) -> str:
        safe = self.url.split("@")[-1] if "@" in self.url else self.url
        return f"Store({safe})"

    def _ping_if_idle(self, dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        """Check a connection that sat idle (the server may have closed it meanwhile); a
        failed check makes the pool drop it and hand out a fresh one."""
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            self.engine.dialect.do_ping(dbapi_conn)
        except Exception as err:
            log.info(
                "%r: a pooled connection idle for %.0f s is gone: %s",
                self,
                time.monotonic() - since,
                err,
            )
            raise DisconnectionError(str(err)) from err

    async def open(self) -> None:
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
                row = (await conn.execute(select(schema_info.c.version))).first()
                if row is None:
                    await conn.execute(insert(schema_info).values(id=1, version=SCHEMA_VERSION))
                elif row[0] > SCHEMA_VERSION:
                    raise StoreError(
                        f"database schema version {row[0]} is newer than this program's "
                        f"({SCHEMA_VERSION}); upgrade appliance"
                    )
        except SQLAlchemyError as err:
            raise StoreError(f"cannot open database {self!r}: {err}") from err
        log.info("%r open (schema version %d)", self, SCHEMA_VERSION)

    async def close(self) -> None:
        await self.health.close()
        await self.engine.dispose()

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            if not self.is_sqlite:
                # Reads run outside a transaction (module docstring: no BEGIN, no ROLLBACK, no
                # DEALLOCATE ALL, prepared statements kept); switched back on checkin.
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is not None:
            async with self._write_lock, self.engine.begin() as conn:
                yield conn
        else:
            async with self.engine.begin() as conn:
                yield conn


def _idle_since(_dbapi_conn: Any, record: Any) -> None:
    if record is not None:
        record.info["idle_since"] = time.monotonic()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()
