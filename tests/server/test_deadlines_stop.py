"""A replica that stops (SIGTERM in a rolling restart) starts no new deadline handler and cuts
none between its commit and its publish, on SQLite and on PostgreSQL.

Under load a pass over many due ring deadlines outlasted the stop's grace and was cancelled
inside a handler: a ``call.missed`` committed (``session_ring.state = 'missed'``) that no
replica ever published, so devices connected to the other replicas never heard of it
(bench/fleet.py's rolling phase). Now ``stop()`` lets the handler under way finish and hands
out no more: the rest stay due in the store for the other replicas (or the next start).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import event, select

from appliance.clock import ManualClock
from appliance.server.lifecycle.services import services
from appliance.server.store.schema import session_ring
from tests.server import test_round_trips
from tests.support.server import running_server

CALLEES = 60
database = test_round_trips.database  # the fixture: each test on SQLite, then on PostgreSQL


async def test_stop_mid_pass_finishes_the_handler_under_way_and_starts_no_other(
    tmp_path: Path, database: str | None
) -> None:
    users = ["caller", *(f"c{i:02d}" for i in range(CALLEES))]
    settings: dict[str, Any] = {"limits": {"max_members_per_request": 100}}
    if database is not None:
        settings["database"] = database
    clock = ManualClock()
    async with running_server(tmp_path, users=users, clock=clock, **settings) as srv:
        svc = services(srv.ctx)
        published: list[str] = []
        svc.hub.published.append(
            lambda e: published.append(e["user"]["id"]) if e["type"] == "call.missed" else None
        )
        claims: list[bool] = []  # a handler's claim of its row, True once stop() was called
        stopping = False

        def on_statement(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
            if statement.startswith("UPDATE session_ring SET state"):
                claims.append(stopping)

        engine = srv.ctx.store.engine.sync_engine
        event.listen(engine, "before_cursor_execute", on_statement)
        try:
            body = {
                "data": {
                    "created_by_id": "caller",
                    "members": [{"user_id": u} for u in users],
                    "settings_override": {
                        "ring": {
                            "incoming_call_timeout_ms": 5_000,
                            "auto_cancel_timeout_ms": 60_000,
                        }
                    },
                },
                "ring": True,
            }
            async with srv.client() as http:
                r = await http.post("/api/v2/video/call/default/many", json=body)
            assert r.status_code == 200, r.text
            clock.advance(6)  # every callee's deadline is due: one pass of 60 handlers
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not published:
                assert loop.time() < deadline, "no deadline was handled"
                await asyncio.sleep(0.001)
            stopping = True
            await svc.scheduler.stop()
        finally:
            event.remove(engine, "before_cursor_execute", on_statement)
        async with srv.ctx.store.connect() as db:
            missed = set(
                (
                    await db.execute(
                        select(session_ring.c.user_id).where(session_ring.c.state == "missed")
                    )
                ).scalars()
            )
    # Before: the pass went on after stop() (for up to 5 s, then was cut wherever it was).
    assert claims.count(True) <= 1, f"{claims.count(True)} handlers started after stop()"
    assert 0 < len(missed) < CALLEES  # stopped mid-pass: the rest are left due in the store
    # Every deadline committed as missed was published, none twice.
    assert sorted(published) == sorted(missed)
