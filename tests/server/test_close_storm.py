"""A storm of closed WebSockets (a proxy restart cuts every device at once) neither queues one
transaction per close on the pool nor starves ``/healthz``, on SQLite and on PostgreSQL.

- ``/healthz`` checks the database on a connection of its own (``store/health.py``): it
  answers while every pooled connection is taken;
- the participants of closed connections get their grace period in batches
  (``lifecycle/closes.py``): N closes at once are a few ``UPDATE participants`` statements,
  not N (counted with SQLAlchemy's own events on the running server's engine), and every
  participant bound to a closed connection still gets its grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, select

from appliance.server.lifecycle.services import services
from appliance.server.store.schema import participants
from tests.server import test_round_trips
from tests.server.wsclient import WsClient, create_call, join
from tests.support.server import ServerHandle, running_server

STORM = 200
# What the storm may cost: 200 closes were 200 statements (one transaction each).
MAX_CLOSE_STATEMENTS = 20
HEALTHZ_WAIT = 5.0  # the proxy's check timeout (deploy/haproxy.cfg)

database = test_round_trips.database  # the fixture: each test on SQLite, then on PostgreSQL


def _settings(url: str | None) -> dict[str, Any]:
    return {} if url is None else {"database": url}


async def _healthz(srv: ServerHandle) -> tuple[int, float]:
    async with httpx.AsyncClient(timeout=HEALTHZ_WAIT) as http:
        started = time.monotonic()
        r = await http.get(f"{srv.base_url}/healthz")
        return r.status_code, time.monotonic() - started


async def test_healthz_answers_while_every_pooled_connection_is_taken(
    tmp_path: Path, database: str | None
) -> None:
    async with running_server(tmp_path, **_settings(database)) as srv:
        pool: Any = srv.ctx.store.engine.pool
        capacity = pool.size() + pool._max_overflow  # what a storm of waiting work takes
        async with contextlib.AsyncExitStack() as held:
            for _ in range(capacity):
                await held.enter_async_context(srv.ctx.store.connect())
            # Before: /healthz queued on the pool (30 s) and the proxy's 5 s check failed.
            status, _ = await _healthz(srv)
            assert status == 200
            # A flood of checks shares one query per second at most.
            queries = srv.ctx.store.health.queries
            results = await asyncio.gather(*(_healthz(srv) for _ in range(20)))
            assert {s for s, _ in results} == {200}
            assert srv.ctx.store.health.queries - queries <= 2


async def test_a_close_storm_is_batched_and_healthz_keeps_answering(
    tmp_path: Path, database: str | None
) -> None:
    users = [f"u{i:03d}" for i in range(STORM)]
    async with running_server(tmp_path, users=["alice", *users], **_settings(database)) as srv:
        gate = asyncio.Semaphore(8)  # below the replica's handshake admission (16)

        async def open_one(user_id: str) -> WsClient:
            async with gate:  # opening is not what is tested: a loaded machine took over 10 s
                return await WsClient.open(srv, user_id, wait=60)

        sockets = await asyncio.gather(*(open_one(u) for u in users))
        # Some of them are in a call: their participants must get the grace period.
        cid = "default:storm"
        await create_call(srv, cid, users[:5], by=users[0])
        joined = [await join(srv, ws, cid) for ws in sockets[:5]]
        engine = srv.ctx.store.engine.sync_engine
        closes: list[str] = []

        def on_statement(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
            if statement.startswith("UPDATE participants SET gone_at"):
                closes.append(statement)

        event.listen(engine, "before_cursor_execute", on_statement)
        conns = list(services(srv.ctx).hub.connections.values())
        assert len(conns) == STORM
        try:
            checks = asyncio.gather(*(_healthz(srv) for _ in range(10)))
            await asyncio.gather(*(ws.close() for ws in sockets))
            health = await checks
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            # ``unregistered``: the close hooks ran (the grace period's batch committed).
            while not all(c.unregistered for c in conns):
                assert loop.time() < deadline, "the server did not process every close"
                await asyncio.sleep(0.02)
        finally:
            event.remove(engine, "before_cursor_execute", on_statement)
        assert {s for s, _ in health} == {200}, health
        assert 1 <= len(closes) <= MAX_CLOSE_STATEMENTS, len(closes)
        async with srv.ctx.store.connect() as db:
            rows = (
                await db.execute(
                    select(participants.c.id, participants.c.gone_at).where(
                        participants.c.id.in_([j["session_id"] for j in joined])
                    )
                )
            ).all()
        assert len(rows) == 5 and all(gone is not None for _, gone in rows), rows
