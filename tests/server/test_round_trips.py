"""A create with ring costs a bounded number of round trips, on SQLite and on PostgreSQL.

Counted with SQLAlchemy's own events on the running server's engine, for the statements and
pool checkouts made by the request's own task (the deadline scheduler, the push sender and the
hub's target lookups run in tasks of their own after the commit and are not counted). The
count must not grow with the number of members rung.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from tests.support.pgcluster import PostgresCluster
from tests.support.server import running_server

# What one create-with-ring may cost in the request's task: one transaction (one checkout, one
# commit) and at most this many statements whatever the number of members. The code before
# this bound took 4 checkouts, 2 commits and 36 statements (both stores, 10 or 60 members);
# then 24, reading the creator three times, the listed members and their users twice and the
# session, its ring rows and its participants it had just written.
MAX_CHECKOUTS = 1
MAX_COMMITS = 1
MAX_STATEMENTS = 11

_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    name = f"trips{next(_names)}"
    yield cluster.create_database(name)
    cluster.drop_database(name)


async def _create_with_ring(srv: Any, cid_id: str, members: list[str]) -> Counter[str]:
    """Counts of one create-with-ring's own statements, checkouts and commits."""
    engine = srv.ctx.store.engine.sync_engine
    per_task: dict[int, Counter[str]] = {}
    creator: list[int] = []

    def count(what: str, statement: str = "") -> None:
        task = asyncio.current_task()
        key = id(task)
        per_task.setdefault(key, Counter())[what] += 1
        if statement.startswith("INSERT INTO calls "):
            creator.append(key)

    def on_statement(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        count("statements", statement)

    def on_checkout(*_args: Any) -> None:
        count("checkouts")

    def on_commit(*_args: Any) -> None:
        count("commits")

    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine.pool, "checkout", on_checkout)
    event.listen(engine, "commit", on_commit)
    try:
        body = {
            "data": {"created_by_id": "caller", "members": [{"user_id": u} for u in members]},
            "ring": True,
        }
        async with srv.client() as http:
            r = await http.post(f"/api/v2/video/call/default/{cid_id}", json=body)
        assert r.status_code == 200, r.text
        assert sorted(r.json()["call"]["session"]["ringing"]) == sorted(members[1:])
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
        event.remove(engine.pool, "checkout", on_checkout)
        event.remove(engine, "commit", on_commit)
    assert len(creator) == 1
    return per_task[creator[0]]


async def test_create_with_ring_round_trips_are_bounded(
    tmp_path: Path, database: str | None
) -> None:
    users = ["caller", *(f"u{i:03d}" for i in range(60))]
    settings: dict[str, Any] = {"limits": {"max_members_per_request": 100}}
    if database is not None:
        settings["database"] = database
    async with running_server(tmp_path, users=users, **settings) as srv:
        await _create_with_ring(srv, "warm-up", users[:5])  # first statements of the process
        small = await _create_with_ring(srv, "small", users[:11])
        large = await _create_with_ring(srv, "large", users[:61])
    for counts in (small, large):
        assert counts["checkouts"] <= MAX_CHECKOUTS, counts
        assert counts["commits"] <= MAX_COMMITS, counts
        assert counts["statements"] <= MAX_STATEMENTS, counts
    assert large["statements"] == small["statements"], (small, large)


async def test_the_scheduler_re_plans_a_ring_in_one_statement(
    tmp_path: Path, database: str | None
) -> None:
    """After a ring stores its deadlines (seconds away) the deadline scheduler wakes and reads
    the earliest one: one statement. It was eight (the four kinds of due rows, then the four
    minimums), competing with the ring's fan-out for the event loop and the database."""
    users = ["caller", *(f"u{i:03d}" for i in range(10))]
    settings: dict[str, Any] = {}
    if database is not None:
        settings["database"] = database
    async with running_server(tmp_path, users=users, **settings) as srv:
        await _create_with_ring(srv, "warm-up", users[:5])
        await asyncio.sleep(0.5)  # the warm-up's re-plan is over
        statements: list[str] = []

        def on_statement(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
            task = asyncio.current_task()
            if task is not None and task.get_name() == "deadline-scheduler":
                statements.append(statement)

        engine = srv.ctx.store.engine.sync_engine
        event.listen(engine, "before_cursor_execute", on_statement)
        try:
            await _create_with_ring(srv, "ring", users)
            for _ in range(100):  # the scheduler's pass after the wake (then 0.5 s more)
                if statements:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
        finally:
            event.remove(engine, "before_cursor_execute", on_statement)
    assert len(statements) == 1, statements


async def test_a_create_with_ring_answers_what_the_store_holds(
    tmp_path: Path, database: str | None
) -> None:
    """The create reads its users, members and the session it opened once and answers from what
    it wrote: the answer must be what a read of the call from the store gives afterwards."""
    users: list[Any] = [
        {"id": "caller", "name": "Door", "custom": {"device": True, "location": "hall"}},
        *({"id": f"u{i:02d}", "name": f"Resident {i}", "teams": ["a"]} for i in range(30)),
    ]
    settings: dict[str, Any] = {"limits": {"max_members_per_request": 100}}
    if database is not None:
        settings["database"] = database
    members = [{"user_id": "caller", "role": "host", "custom": {"floor": 1, "tags": ["x"]}}]
    members += [{"user_id": f"u{i:02d}", "custom": {"n": i}} for i in range(30)]
    body = {"data": {"created_by_id": "caller", "members": members}, "ring": True}
    async with running_server(tmp_path, users=users, **settings) as srv:
        async with srv.client() as http:
            created = (await http.post("/api/v2/video/call/default/c1", json=body)).json()
            read = (await http.get("/api/v2/video/call/default/c1")).json()
    assert created["created"] is True
    assert created["call"]["session"]["ringing"] == [f"u{i:02d}" for i in range(30)]
    for key in ("call", "members", "membership", "own_capabilities"):
        assert created[key] == read[key], key


# What one query-members page with a server token may cost: the probe of its filter
# (``queries.rare_drivers``) and the page, whose statement also tells whether rows lie on its
# cursor's other side. It was three (the call looked up first) and four with a cursor (the
# prev check a statement of its own).
MAX_PAGE_STATEMENTS = 2


async def test_a_query_members_page_costs_two_statements(
    tmp_path: Path, database: str | None
) -> None:
    users = [f"u{i:02d}" for i in range(12)]
    settings: dict[str, Any] = {}
    if database is not None:
        settings["database"] = database
    async with running_server(tmp_path, users=users, **settings) as srv:
        engine = srv.ctx.store.engine.sync_engine
        per_task: dict[int, list[str]] = {}

        def on_statement(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
            per_task.setdefault(id(asyncio.current_task()), []).append(statement)

        async def page(http: Any, **extra: Any) -> tuple[dict[str, Any], list[str]]:
            per_task.clear()
            body = {
                "type": "default",
                "id": "big",
                "filter_conditions": {"role": "call_member"},
                "sort": [{"field": "created_at", "direction": -1}],
                "limit": 4,
                **extra,
            }
            event.listen(engine, "before_cursor_execute", on_statement)
            try:
                r = await http.post("/api/v2/video/call/members", json=body)
            finally:
                event.remove(engine, "before_cursor_execute", on_statement)
            assert r.status_code == 200, r.text
            mine = [s for s in per_task.values() if any("call_members" in q for q in s)]
            assert len(mine) == 1, per_task
            return r.json(), mine[0]

        async with srv.client() as http:
            create = {"data": {"created_by_id": "u00", "members": [{"user_id": u} for u in users]}}
            r = await http.post("/api/v2/video/call/default/big", json=create)
            assert r.status_code == 200, r.text
            await page(http)  # the first statements of the process
            first, at_first = await page(http)
            second, at_second = await page(http, next=first["next"])
            back, at_back = await page(http, prev=second["prev"])
    assert first["prev"] is None and first["next"] and second["prev"] and back["next"]
    assert [m["user_id"] for m in back["members"]] == [m["user_id"] for m in first["members"]]
    for statements in (at_first, at_second, at_back):
        assert len(statements) <= MAX_PAGE_STATEMENTS, statements
