"""Schema versions: a database is moved forward step by step, never dropped.

``schema_info`` holds one row, the version of the schema the database has. ``upgrade(engine)``
brings it to ``schema.SCHEMA_VERSION``:

- an empty database gets the current schema at once (``metadata.create_all``) and that version;
- a database at an older version runs each ``Migration`` from its version up, in order, each in
  its own transaction together with the version bump, so a failed step leaves the database at
  the last good version (SQLite and PostgreSQL both have transactional DDL);
- a database newer than this program is refused (an older binary must not write to it).

On PostgreSQL, replicas starting together serialise on an advisory lock (also taken around the
seeding of call types and users, ``serialise_replicas``); on SQLite the first write takes the
database lock.

Adding version 2: bump ``SCHEMA_VERSION`` in ``schema.py``, change the tables there (so a new
database is created right), and append ``Migration(2, "what changes", step)`` below, where
``step(conn)`` makes the same change to an existing v1 database with DDL both databases accept
(``ALTER TABLE … ADD COLUMN``, ``CREATE INDEX``; ``op``-style helpers are not needed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, insert, inspect, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from appliance.errors import StoreError
from appliance.server.store.schema import (
    SCHEMA_VERSION,
    call_types,
    metadata,
    push_claims,
    push_devices,
    schema_info,
    server_keys,
    webhook_claims,
)

log = logging.getLogger(__name__)

# Any constant: the advisory lock key replicas share while migrating.
_PG_LOCK_KEY = 0x61707069  # "appi"


@dataclass(frozen=True)
class Migration:
    """One step: ``apply`` turns a database at ``version - 1`` into one at ``version``."""

    version: int
    description: str
    apply: Callable[[Connection], None]

    def __repr__(self) -> str:
        return f"Migration(v{self.version}: {self.description})"


def _web_push_tables(conn: Connection) -> None:
    for table in (server_keys, push_devices, push_claims):
        table.create(conn, checkfirst=True)


def _webhook_claims(conn: Connection) -> None:
    webhook_claims.create(conn, checkfirst=True)


def _join_ongoing_for_joiners(conn: Connection) -> None:
    """Before version 4 every role that could ``join-call`` could also join a call two others
    were already in; ``join-ongoing-call`` now decides that. Stored call types keep what they
    allowed: a role with ``join-call`` gets ``join-ongoing-call``. Types from a call-types file
    are written again from the file at every start, so the file decides for them."""
    rows = conn.execute(select(call_types.c.name, call_types.c.grants)).all()
    for name, grants in rows:
        changed = {
            role: [*caps, "join-ongoing-call"]
            for role, caps in (grants or {}).items()
            if "join-call" in caps and "join-ongoing-call" not in caps
        }
        if changed:
            conn.execute(
                update(call_types)
                .where(call_types.c.name == name)
                .values(grants={**grants, **changed})
            )


# Version 1 is the baseline (the first released schema): nothing to migrate from.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(2, "Web Push: server_keys, push_devices, push_claims", _web_push_tables),
    Migration(3, "webhooks: webhook_claims", _webhook_claims),
    Migration(
        4, "call types: join-ongoing-call where join-call was granted", _join_ongoing_for_joiners
    ),
)


def database_version(conn: Connection) -> int | None:
    """The stored version, or ``None`` for a database without ``schema_info`` (empty)."""
    if not inspect(conn).has_table(schema_info.name):
        return None
    row = conn.execute(select(schema_info.c.version).where(schema_info.c.id == 1)).first()
    return None if row is None else int(row[0])


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})


async def serialise_replicas(conn: AsyncConnection) -> None:
    """Hold the migration lock until ``conn``'s transaction ends (PostgreSQL; a no-op on
    SQLite, whose first write locks the database). Startup writes that read before they
    insert (seeding call types and users) take it, so replicas starting together on an
    empty database do not both insert the same row."""
    await conn.run_sync(_lock)


def _plan(current: int, target: int, steps: Sequence[Migration]) -> list[Migration]:
    if current > target:
        raise StoreError(
            f"database schema version {current} is newer than this program's ({target}); "
            "upgrade appliance"
        )
    by_version = {m.version: m for m in steps}
    missing = [v for v in range(current + 1, target + 1) if v not in by_version]
    if missing:
        raise StoreError(
            f"no migration to schema version {missing[0]} (database is at {current}, "
            f"program wants {target})"
        )
    return [by_version[v] for v in range(current + 1, target + 1)]


def _create_or_read(conn: Connection, target: int) -> int:
    _lock(conn)
    current = database_version(conn)
    if current is None:
        if any(inspect(conn).has_table(t) for t in metadata.tables if t != schema_info.name):
            raise StoreError("database has tables but no schema_info: not an appliance database")
        metadata.create_all(conn)
        conn.execute(insert(schema_info).values(id=1, version=target))
        log.info("empty database: schema version %d created", target)
        return target
    return current


def _step(conn: Connection, migration: Migration) -> None:
    _lock(conn)
    current = database_version(conn)
    if current != migration.version - 1:
        # Another replica got there first; its transaction already did this step.
        return
    # The version bump goes first: Python's sqlite3 opens its transaction at the first DML
    # statement only, so DDL issued before it would run outside the transaction and survive a
    # failed step. After it, the step's DDL rolls back with the bump.
    conn.execute(update(schema_info).where(schema_info.c.id == 1).values(version=migration.version))
    migration.apply(conn)


async def upgrade(
    engine: AsyncEngine,
    *,
    target: int = SCHEMA_VERSION,
    steps: Sequence[Migration] = MIGRATIONS,
) -> int:
    """Bring the database to ``target``; returns the version it had before."""
    try:
        async with engine.begin() as conn:
            before = await conn.run_sync(_create_or_read, target)
        plan = _plan(before, target, steps)
        for migration in plan:
            log.info("migrating database: %r", migration)
            async with engine.begin() as conn:
                await conn.run_sync(_step, migration)
            log.info("database now at schema version %d", migration.version)
    except SQLAlchemyError as err:
        raise StoreError(f"schema migration failed: {err}") from err
    return before
