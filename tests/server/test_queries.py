"""Query members, calls and users on a real database (SQLite here; ``test_postgres.py`` runs the
same tests on PostgreSQL by overriding the ``qstore`` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import event, insert, select, text

from appliance.calls.filters import CALLS, MEMBERS, USERS, parse_query
from appliance.errors import InvalidRequest
from appliance.server.auth import Principal
from appliance.server.store import queries
from appliance.server.store.customindex import index_members_custom, index_user_custom
from appliance.server.store.engine import Store
from appliance.server.store.schema import call_members, call_sessions, call_types, calls, users

T0 = 1_767_000_000_000_000_000  # integer nanoseconds
S = 1_000_000_000
CID = "default:big"


@pytest_asyncio.fixture
async def qstore(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def add_users(store: Store, specs: Sequence[dict[str, Any]]) -> None:
    async with store.begin() as conn:
        for i, spec in enumerate(specs):
            row = {"role": "user", "teams": [], "custom": {}, "name": None, **spec}
            row.setdefault("created_at", T0 + i * S)
            row.setdefault("updated_at", row["created_at"])
            await conn.execute(insert(users).values(**row))
            await index_user_custom(conn, row["id"], row["custom"])


async def add_call(
    store: Store, cid: str, members: Sequence[dict[str, Any]] = (), **fields: Any
) -> None:
    ctype, cid_id = cid.split(":")
    row = {"cid": cid, "type": ctype, "id": cid_id, "created_by_id": "u00", "custom": {}}
    row |= {"settings_override": {}, "created_at": T0, "updated_at": T0, **fields}
    async with store.begin() as conn:
        await conn.execute(insert(calls).values(**row))
        await add_members(conn, cid, members)


async def add_members(conn: Any, cid: str, members: Sequence[dict[str, Any]]) -> None:
    rows = []
    for i, m in enumerate(members):
        r = {"call_cid": cid, "role": "call_member", "custom": {}, **m}
        r.setdefault("created_at", T0 + i * S)
        r.setdefault("updated_at", r["created_at"])
        rows.append(r)
    if rows:
        await conn.execute(insert(call_members), rows)
        await index_members_custom(conn, cid, [(r["user_id"], r["custom"]) for r in rows])


async def member_ids(store: Store, conditions: Any, sort: Any = None, **kw: Any) -> list[str]:
    sort = sort or [{"field": "user_id", "direction": 1}]
    query = parse_query(MEMBERS, conditions, sort, 100)
    async with store.connect() as conn:
        page = await queries.query_members(conn, CID, query, **kw)
    return [r["user_id"] for r in page.rows]


MEMBER_CUSTOM: list[dict[str, Any]] = [
    {"n": 0, "tags": ["a", "b"], "flag": True, "s": "apple", "nested": {"deep": "x"}},
    {"n": 1, "tags": ["b"], "flag": False, "s": "melon", "maybe": None},
    {"n": 2, "tags": [], "s": "zebra", "nested": {"deep": "y", "other": 1}},
    {"n": 3.5, "s": "x" * 600},
    {},
    {"n": "3", "nested-sibling": 1},
]


@pytest_asyncio.fixture
async def members_call(qstore: Store) -> Store:
    await add_users(
        qstore,
        [{"id": f"u0{i}", "custom": {"shift": "night" if i % 2 else "day"}} for i in range(6)],
    )
    members = [
        {"user_id": f"u0{i}", "custom": c, "role": "host" if i == 1 else "call_member"}
        for i, c in enumerate(MEMBER_CUSTOM)
    ]
    await add_call(qstore, CID, members)
    return qstore


MEMBER_CASES: list[tuple[Any, list[str]]] = [
    ({"custom.n": 1}, ["u01"]),
    ({"custom.n": {"$eq": 3.5}}, ["u03"]),
    ({"custom.n": "3"}, ["u05"]),
    ({"custom.n": {"$ne": 1}}, ["u00", "u02", "u03", "u04", "u05"]),
    ({"custom.n": {"$in": [0, 2, "3"]}}, ["u00", "u02", "u05"]),
    ({"custom.n": {"$nin": [0, 2]}}, ["u01", "u03", "u04", "u05"]),
    ({"custom.n": {"$gt": 1}}, ["u02", "u03"]),
    ({"custom.n": {"$gte": 1}}, ["u01", "u02", "u03"]),
    ({"custom.n": {"$lt": 2}}, ["u00", "u01"]),
    ({"custom.n": {"$lte": 2, "$gt": 0}}, ["u01", "u02"]),
    ({"custom.n": {"$exists": True}}, ["u00", "u01", "u02", "u03", "u05"]),
    ({"custom.n": {"$exists": False}}, ["u04"]),
    ({"custom.tags": "b"}, ["u00", "u01"]),
    ({"custom.tags": {"$in": ["a", "zz"]}}, ["u00"]),
    ({"custom.tags": {"$exists": True}}, ["u00", "u01"]),
    ({"custom.flag": True}, ["u00"]),
    ({"custom.flag": False}, ["u01"]),
    ({"custom.s": {"$gt": "m"}}, ["u01", "u02", "u03"]),
    ({"custom.s": {"$lte": "melon"}}, ["u00", "u01"]),
    ({"custom.s": "x" * 600}, ["u03"]),
    ({"custom.s": "x" * 599 + "y"}, []),
    ({"custom.maybe": None}, ["u01"]),
    ({"custom.maybe": {"$exists": True}}, ["u01"]),
    ({"custom.nested.deep": "y"}, ["u02"]),
    ({"custom.nested": {"$exists": True}}, ["u00", "u02"]),
    ({"custom.nested": {"$exists": False}}, ["u01", "u03", "u04", "u05"]),
    ({"custom.nested.other": {"$gte": 1}}, ["u02"]),
    ({"role": "host"}, ["u01"]),
    ({"role": {"$ne": "call_member"}}, ["u01"]),
    ({"role": {"$in": ["host", "admin"]}}, ["u01"]),
    ({"role": {"$nin": ["host"]}}, ["u00", "u02", "u03", "u04", "u05"]),
    ({"role": {"$exists": True}}, ["u00", "u01", "u02", "u03", "u04", "u05"]),
    ({"user_id": {"$gt": "u03"}}, ["u04", "u05"]),
    ({"user_id": {"$in": ["u02", "u09"]}}, ["u02"]),
    ({"created_at": {"$gte": T0 + 2 * S, "$lt": T0 + 4 * S}}, ["u02", "u03"]),
    ({"created_at": {"$lte": "2025-12-29T09:20:01Z"}}, ["u00", "u01"]),
    ({"updated_at": T0 + 5 * S}, ["u05"]),
    ({"user.custom.shift": "night"}, ["u01", "u03", "u05"]),
    ({"user.custom.shift": {"$ne": "night"}, "role": "host"}, []),
    ({"$or": [{"custom.n": 0}, {"role": "host"}]}, ["u00", "u01"]),
    ({"$or": [{"custom.n": 0}, {"custom.s": "zebra"}]}, ["u00", "u02"]),
    ({"$and": [{"custom.tags": "b"}, {"custom.flag": False}]}, ["u01"]),
    ({"$nor": [{"custom.n": {"$exists": True}}, {"role": "host"}]}, ["u04"]),
    (
        {
            "$or": [
                {"$and": [{"custom.n": {"$gt": 0}}, {"user.custom.shift": "day"}]},
                {"user_id": "u05"},
            ]
        },
        ["u02", "u05"],
    ),
    ({}, ["u00", "u01", "u02", "u03", "u04", "u05"]),
]


async def test_member_filters(members_call: Store) -> None:
    """Every operator on every kind of member field (one database for all cases: cheap on
    PostgreSQL, where a fresh database per case would cost a second)."""
    wrong = []
    for conditions, expected in MEMBER_CASES:
        got = await member_ids(members_call, conditions)
        if got != expected:
            wrong.append(f"{conditions}: got {got}, expected {expected}")
    assert not wrong, "\n".join(wrong)


async def test_sort_both_directions_and_page_forward_and_back(qstore: Store) -> None:
    await add_users(qstore, [{"id": f"m{i:02d}"} for i in range(23)])
    # Pairs share created_at, so the tiebreaker (user_id) decides within each pair.
    members = [{"user_id": f"m{i:02d}", "created_at": T0 + (i // 2) * S} for i in range(23)]
    await add_call(qstore, CID, members)
    for direction in (1, -1):
        sort = [{"field": "created_at", "direction": direction}]
        everything = await member_ids(qstore, None, sort)
        expected = sorted((m["created_at"], m["user_id"]) for m in members)
        if direction == -1:
            expected.reverse()
        assert everything == [uid for _, uid in expected]
        query = parse_query(MEMBERS, None, sort, 5)
        pages: list[list[str]] = []
        cursors: list[tuple[str | None, str | None]] = []
        nxt: str | None = None
        async with qstore.connect() as conn:
            while True:
                page = await queries.query_members(conn, CID, query, next=nxt)
                pages.append([r["user_id"] for r in page.rows])
                cursors.append((page.prev, page.next))
                if page.next is None:
                    break
                nxt = page.next
            assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
            assert [uid for p in pages for uid in p] == everything
            assert cursors[0][0] is None and all(prev for prev, _ in cursors[1:])
            # Back from the last page to the first, page by page.
            prev = cursors[-1][0]
            back: list[list[str]] = []
            while prev:
                page = await queries.query_members(conn, CID, query, prev=prev)
                back.append([r["user_id"] for r in page.rows])
                assert page.next  # a page reached by prev always has rows after it
                prev = page.prev
            assert back == pages[-2::-1]


async def test_cursor_is_stable_under_inserts(qstore: Store) -> None:
    await add_users(qstore, [{"id": f"m{i:02d}"} for i in range(40)])
    await add_call(
        qstore,
        CID,
        [{"user_id": f"m{i:02d}", "created_at": T0 + i * 10 * S} for i in range(0, 20, 2)],
    )
    query = parse_query(MEMBERS, None, [{"field": "created_at", "direction": 1}], 4)
    async with qstore.connect() as conn:
        first = await queries.query_members(conn, CID, query)
    assert [r["user_id"] for r in first.rows] == ["m00", "m02", "m04", "m06"]
    # New members land before the cursor, exactly at its key, and after it.
    async with qstore.begin() as conn:
        await add_members(
            conn,
            CID,
            [
                {"user_id": "m01", "created_at": T0 + 10 * S},
                {
                    "user_id": "m05",
                    "created_at": T0 + 60 * S,
                },  # same created_at as m06, sorts before
                {
                    "user_id": "m07",
                    "created_at": T0 + 60 * S,
                },  # same created_at as m06, sorts after
                {"user_id": "m09", "created_at": T0 + 75 * S},
            ],
        )
    async with qstore.connect() as conn:
        second = await queries.query_members(conn, CID, query, next=first.next)
        assert [r["user_id"] for r in second.rows] == ["m07", "m09", "m08", "m10"]
        back = await queries.query_members(conn, CID, query, prev=second.prev)
        assert [r["user_id"] for r in back.rows] == ["m02", "m04", "m05", "m06"]


async def test_page_edges_say_what_lies_beyond(qstore: Store) -> None:
    """``prev`` (going forward) and ``next`` (going back) are there exactly when rows lie before
    a page's first row (after its last): checked against the whole ordered list for one- and
    two-row pages, one sort direction and mixed ones, a rare filter (ids handed to the planner,
    sorted in memory), and a cursor whose own row was deleted meanwhile. The page's statement
    asks "a row at or before the cursor": with one-row pages the only row before a page is
    the cursor's own."""
    await add_users(qstore, [{"id": f"m{i:02d}"} for i in range(9)])
    members = [
        {
            "user_id": f"m{i:02d}",
            "role": "host" if i % 3 == 0 else "call_member",
            "created_at": T0 + (i // 2) * S,  # pairs share a time: the tiebreaker decides
            "custom": {"tag": "rare"} if i in (1, 4, 6) else {},
        }
        for i in range(9)
    ]
    await add_call(qstore, CID, members)
    sorts = [
        [{"field": "created_at", "direction": 1}],
        [{"field": "created_at", "direction": -1}],
        [{"field": "role", "direction": 1}, {"field": "created_at", "direction": -1}],
    ]
    for conditions in (None, {"custom.tag": "rare"}):
        for sort in sorts:
            everything = await member_ids(qstore, conditions, sort)
            for limit in (1, 2):
                query = parse_query(MEMBERS, conditions, sort, limit)
                case = f"{conditions} {sort} limit {limit}"
                pages: list[Any] = []
                nxt: str | None = None
                async with qstore.connect() as conn:
                    while True:
                        page = await queries.query_members(conn, CID, query, next=nxt)
                        pages.append(page)
                        if page.next is None:
                            break
                        nxt = page.next
                    seen = [r["user_id"] for page in pages for r in page.rows]
                    assert seen == everything, case
                    assert [page.prev is not None for page in pages] == [
                        i > 0 for i in range(len(pages))
                    ], case
                    back = pages[-1].prev
                    count = len(pages) - 1
                    while back:
                        page = await queries.query_members(conn, CID, query, prev=back)
                        count -= 1
                        ids = [r["user_id"] for r in page.rows]
                        assert ids == [r["user_id"] for r in pages[count].rows], case
                        assert page.next is not None, case
                        back = page.prev
                    assert count == 0, case
    # The cursors' own rows are gone: nothing lies beyond them any more.
    query = parse_query(MEMBERS, None, sorts[0], 1)
    pages = []
    nxt = None
    async with qstore.connect() as conn:
        for _ in range(9):
            pages.append(await queries.query_members(conn, CID, query, next=nxt))
            nxt = pages[-1].next
    assert [r["user_id"] for p in pages for r in p.rows] == [f"m{i:02d}" for i in range(9)]
    async with qstore.begin() as conn:
        gone = call_members.c.user_id.in_(["m00", "m08"])
        await conn.execute(call_members.delete().where(gone))
    async with qstore.connect() as conn:
        second = await queries.query_members(conn, CID, query, next=pages[0].next)
        assert [r["user_id"] for r in second.rows] == ["m01"]
        assert second.prev is None and second.next is not None
        back = await queries.query_members(conn, CID, query, prev=pages[-1].prev)
        assert [r["user_id"] for r in back.rows] == ["m07"]
        assert back.next is None and back.prev is not None


async def test_cursor_mistakes_name_the_field(members_call: Store) -> None:
    by_user = parse_query(MEMBERS, None, [{"field": "user_id", "direction": 1}], 2)
    by_time = parse_query(MEMBERS, None, [{"field": "created_at", "direction": 1}], 2)
    async with members_call.connect() as conn:
        page = await queries.query_members(conn, CID, by_user)
        assert page.next
        for cursor, problem in [
            ("%%%", "not a cursor"),
            ("eyJ4IjoxfQ", "not a cursor"),  # {"x":1}
            (page.next[:-4], "not a cursor"),
        ]:
            with pytest.raises(InvalidRequest) as info:
                await queries.query_members(conn, CID, by_user, next=cursor)
            assert info.value.field == "next" and problem in str(info.value)
        # A forged cursor whose values do not fit the columns never reaches the database.
        forged = queries.encode_cursor(queries.members_statement(CID, by_time)[1], ["x", 1])
        with pytest.raises(InvalidRequest, match="does not fit"):
            await queries.query_members(conn, CID, by_time, next=forged)
        with pytest.raises(InvalidRequest, match="different sort") as info:
            await queries.query_members(conn, CID, by_time, prev=page.next)
        assert info.value.field == "prev"
        with pytest.raises(InvalidRequest, match="not both"):
            await queries.query_members(conn, CID, by_user, next=page.next, prev=page.next)


async def test_plans_use_indexes_at_scale(qstore: Store) -> None:
    """20,000 members: the plans must seek indexes (asserted on the plan, never on time)."""
    n = 20_000
    async with qstore.begin() as conn:
        await conn.execute(
            insert(users),
            [
                {
                    "id": f"u{i:05d}",
                    "role": "user",
                    "teams": [],
                    "custom": {},
                    "created_at": T0,
                    "updated_at": T0,
                }
                for i in range(n)
            ],
        )
        await conn.execute(
            insert(calls).values(
                cid=CID,
                type="default",
                id="big",
                created_by_id="u00000",
                custom={},
                settings_override={},
                created_at=T0,
                updated_at=T0,
            )
        )
        members = [
            {
                "user_id": f"u{i:05d}",
                "role": "admin" if i % 1000 == 0 else "call_member",
                "custom": {"colour": "blue" if i % 2 else "green", "badge": "rare"}
                if i == 12345
                else {"colour": "blue" if i % 2 else "green"},
                "created_at": T0 + i,
            }
            for i in range(n)
        ]
        await add_members(conn, CID, members)
    if qstore.engine.dialect.name == "postgresql":
        async with qstore.begin() as conn:
            await conn.execute(text("ANALYZE"))

    async def plan(conditions: Any, sort: Any) -> str:
        query = parse_query(MEMBERS, conditions, sort, 25)
        async with qstore.connect() as conn:
            return "\n".join(await queries.explain_members(conn, CID, query))

    by_created = [{"field": "created_at", "direction": 1}]
    common = await plan({"role": "call_member"}, by_created)
    rare_role = await plan({"role": "admin"}, [{"field": "created_at", "direction": -1}])
    rare_custom = await plan({"custom.badge": "rare"}, by_created)
    common_custom = await plan({"custom.colour": "blue"}, by_created)
    if qstore.engine.dialect.name == "sqlite":
        assert "USING INDEX ix_call_members_created (call_cid=?)" in common
        assert "SCAN" not in common
        # Rare values: a few primary-key seeks, then a sort of those few rows.
        assert "USING INDEX ux_call_members (call_cid=? AND user_id=?)" in rare_role
        assert "USING INDEX ux_call_members (call_cid=? AND user_id=?)" in rare_custom
        assert (
            "ix_member_custom_text (call_cid=? AND path=? AND value_text=? AND user_id=?)"
            in common_custom
        )
        for p in (common, rare_role, rare_custom, common_custom):
            assert "SCAN call_members" not in p
            assert "SEARCH users USING INDEX sqlite_autoindex_users_1 (id=?)" in p
    else:
        for p in (common, rare_role, rare_custom, common_custom):
            assert "Seq Scan on call_members" not in p, p
            assert "Index Scan using users_pkey on users" in p, p
        assert "Seq Scan on call_member_custom_index" not in common_custom
    assert await member_ids(qstore, {"custom.badge": "rare"}) == ["u12345"]
    assert len(await member_ids(qstore, {"role": "admin"})) == 20


async def test_a_common_value_is_counted_not_fetched(qstore: Store) -> None:
    """``rare_drivers`` asks whether a condition matches few members: for a value nearly every
    member has (the indexed query's ``role = call_member``) the database answers one row, not
    the ``RARE_MATCHES + 1`` ids it used to send on every page; few matches come back as ids,
    none as an empty set (no member at all matches)."""
    many = queries.RARE_MATCHES + 100
    people = [{"id": f"u{i:04d}"} for i in range(many)]
    await add_users(qstore, people)
    members = [
        {"user_id": p["id"], "role": "admin" if i < 3 else "call_member"}
        for i, p in enumerate(people)
    ]
    await add_call(qstore, CID, members)

    async def probed(conditions: Any) -> list[Any]:
        query = parse_query(MEMBERS, conditions, None, 25)
        assert query.filter is not None
        probe = queries._probe(CID, query.filter)  # type: ignore[arg-type]
        assert probe is not None
        async with qstore.connect() as conn:
            return [tuple(r) for r in (await conn.execute(queries._counted(probe))).all()]

    common = await probed({"role": "call_member"})
    assert common == [(queries.RARE_MATCHES + 1, None)]
    assert sorted(r[1] for r in await probed({"role": "admin"})) == ["u0000", "u0001", "u0002"]
    assert await probed({"role": "nobody"}) == [(0, None)]

    async def drivers(conditions: Any) -> list[Any]:
        query = parse_query(MEMBERS, conditions, None, 25)
        async with qstore.connect() as conn:
            return [
                sorted(v) for v in (await queries.rare_drivers(conn, CID, query.filter)).values()
            ]

    assert await drivers({"role": "call_member"}) == []
    assert await drivers({"role": "admin"}) == [["u0000", "u0001", "u0002"]]
    assert await drivers({"role": "nobody"}) == [[]]
    assert len(await member_ids(qstore, {"role": "call_member"})) == 100  # the page's limit
    assert await member_ids(qstore, {"role": "admin"}) == ["u0000", "u0001", "u0002"]
    assert await member_ids(qstore, {"role": "nobody"}) == []


async def test_a_common_verdict_is_kept_briefly_and_never_changes_the_rows(
    qstore: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A condition found common is not probed again for a few seconds (paging asks the same
    filter on every page): counted with the statements the database sees. What the verdict
    chooses is only the plan: when the value has turned rare meanwhile, the rows are still
    the right ones. Verdicts are per condition and per database."""
    many = queries.RARE_MATCHES + 20
    await add_users(qstore, [{"id": f"u{i:04d}"} for i in range(many)])
    await add_call(
        qstore,
        CID,
        [{"user_id": f"u{i:04d}", "custom": {"n": 1 if i else 2}} for i in range(many)],
    )
    probes: list[str] = []

    def on_statement(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        if "count(*)" in statement:
            probes.append(statement)

    async def drivers(conditions: Any) -> list[Any]:
        query = parse_query(MEMBERS, conditions, None, 25)
        async with qstore.connect() as conn:
            found = await queries.rare_drivers(conn, CID, query.filter)
        return [sorted(v) for v in found.values()]

    engine = qstore.engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        assert await drivers({"custom.n": 1}) == []
        assert len(probes) == 1
        assert await drivers({"custom.n": 1}) == []
        assert len(probes) == 1  # taken as common, not probed
        assert await drivers({"custom.n": 2}) == [["u0000"]]  # another filter: probed
        assert await drivers({"custom.n": 2}) == [["u0000"]]  # rare: probed every time
        assert len(probes) == 3
        # The value turns rare within the verdict's seconds: the plan is the walk, the rows
        # are those of the database now.
        async with qstore.begin() as conn:
            await conn.execute(
                call_members.update()
                .where(call_members.c.user_id != "u0001")
                .values(custom={"n": 3})
            )
            await conn.execute(
                text("DELETE FROM call_member_custom_index WHERE user_id != 'u0001'")
            )
        assert await member_ids(qstore, {"custom.n": 1}) == ["u0001"]
        assert len(probes) == 3
        # Past its seconds the condition is probed again, and found rare.
        monkeypatch.setattr(queries, "COMMON_FOR_SECONDS", 0.0)
        queries._common.clear()
        assert await drivers({"custom.n": 1}) == [["u0001"]]
        assert len(probes) == 4
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)


# -- calls ------------------------------------------------------------------------------


async def call_ids(
    store: Store, conditions: Any, sort: Any = None, visible: Any = None
) -> list[str]:
    sort = sort or [{"field": "cid", "direction": 1}]
    query = parse_query(CALLS, conditions, sort, 100)
    async with store.connect() as conn:
        page = await queries.query_calls(conn, query, visible=visible)
    return [r["cid"] for r in page.rows]


@pytest_asyncio.fixture
async def some_calls(qstore: Store) -> Store:
    await add_users(qstore, [{"id": u} for u in ("u00", "ann", "ben", "cat")])
    await add_call(
        qstore,
        "default:a",
        [{"user_id": "ann"}, {"user_id": "ben", "role": "host"}],
        custom={"site": "north", "floor": 1, "ok": True},
        created_at=T0 + 1,
        starts_at=T0 + 100,
    )
    await add_call(
        qstore,
        "default:b",
        [{"user_id": "cat"}],
        custom={"site": "south", "floor": 2.5, "tags": ["x"]},
        created_at=T0 + 2,
        team="red",
        ended_at=T0 + 50,
    )
    await add_call(
        qstore,
        "audio_room:c",
        [],
        custom={"floor": "3", "nested": {"k": None}},
        created_at=T0 + 3,
        created_by_id="ann",
        current_session_id="s1",
    )
    async with qstore.begin() as conn:
        await conn.execute(
            insert(call_sessions).values(
                id="s1", call_cid="audio_room:c", created_at=T0, started_at=T0
            )
        )
    return qstore


CALL_CASES: list[tuple[Any, list[str]]] = [
    ({"members": {"$in": ["ann"]}}, ["default:a"]),
    ({"members": "cat"}, ["default:b"]),
    ({"members": {"$nin": ["ann", "cat"]}}, ["audio_room:c"]),
    ({"members": {"$exists": False}}, ["audio_room:c"]),
    ({"created_by_user_id": "ann"}, ["audio_room:c"]),
    ({"ongoing": True}, ["audio_room:c"]),
    ({"ongoing": {"$ne": True}}, ["default:a", "default:b"]),
    ({"ended_at": {"$exists": False}}, ["audio_room:c", "default:a"]),
    ({"ended_at": {"$gt": T0}}, ["default:b"]),
    ({"starts_at": {"$exists": True}}, ["default:a"]),
    ({"team": "red"}, ["default:b"]),
    ({"team": None}, ["audio_room:c", "default:a"]),
    ({"team": {"$ne": "red"}}, ["audio_room:c", "default:a"]),
    ({"type": "audio_room"}, ["audio_room:c"]),
    ({"id": {"$in": ["a", "b"]}}, ["default:a", "default:b"]),
    ({"cid": "default:a"}, ["default:a"]),
    ({"created_at": {"$gte": T0 + 2}}, ["audio_room:c", "default:b"]),
    ({"custom.site": "north"}, ["default:a"]),
    ({"custom.site": {"$ne": "north"}}, ["audio_room:c", "default:b"]),
    ({"custom.floor": {"$gt": 1}}, ["default:b"]),
    ({"custom.floor": "3"}, ["audio_room:c"]),
    ({"custom.floor": {"$in": [1, "3"]}}, ["audio_room:c", "default:a"]),
    ({"custom.ok": True}, ["default:a"]),
    ({"custom.nested.k": None}, ["audio_room:c"]),
    ({"custom.nested": {"$exists": True}}, ["audio_room:c"]),
    ({"custom.site": {"$exists": False}}, ["audio_room:c"]),
    ({"$or": [{"team": "red"}, {"custom.ok": True}]}, ["default:a", "default:b"]),
]


async def test_call_filters(some_calls: Store) -> None:
    wrong = []
    for conditions, expected in CALL_CASES:
        got = await call_ids(some_calls, conditions)
        if got != expected:
            wrong.append(f"{conditions}: got {got}, expected {expected}")
    assert not wrong, "\n".join(wrong)


async def test_call_sorts_with_missing_values_and_pages(some_calls: Store) -> None:
    assert await call_ids(some_calls, None, [{"field": "created_at", "direction": -1}]) == [
        "audio_room:c",
        "default:b",
        "default:a",
    ]
    # Calls without a start sort first ascending (as if at -1), tiebreaker cid.
    assert await call_ids(some_calls, None, [{"field": "starts_at", "direction": 1}]) == [
        "audio_room:c",
        "default:b",
        "default:a",
    ]
    query = parse_query(CALLS, None, [{"field": "ended_at", "direction": -1}], 1)
    seen: list[str] = []
    nxt = None
    async with some_calls.connect() as conn:
        for _ in range(3):
            page = await queries.query_calls(conn, query, next=nxt)
            seen += [r["cid"] for r in page.rows]
            nxt = page.next
        assert nxt is None
    assert seen == ["default:b", "default:a", "audio_room:c"]


async def test_visible_calls_follow_grants_teams_and_pins(some_calls: Store) -> None:
    async with some_calls.connect() as conn:
        grants = {
            n: g for n, g in await conn.execute(select(call_types.c.name, call_types.c.grants))
        }
    if not grants:  # the bare store has no call types seeded: use the built-ins
        from appliance.calls.types import BUILTIN_CALL_TYPES

        grants = {n: t.grants for n, t in BUILTIN_CALL_TYPES.items()}
    members_only = {**grants, "default": {"call_member": ["read-call"], "host": ["read-call"]}}

    def who(uid: str, **kw: Any) -> Principal:
        return Principal(user_id=uid, role=kw.pop("role", "user"), **kw)

    assert await call_ids(some_calls, None, visible=queries.visible_calls(who("ann"), grants)) == [
        "audio_room:c",
        "default:a",
    ]
    assert await call_ids(
        some_calls, None, visible=queries.visible_calls(who("cat", teams=("red",)), grants)
    ) == ["default:b"]
    assert await call_ids(
        some_calls, None, visible=queries.visible_calls(who("ben"), members_only)
    ) == ["audio_room:c", "default:a"]
    assert await call_ids(
        some_calls, None, visible=queries.visible_calls(who("cat"), members_only)
    ) == ["audio_room:c"]
    pinned = who("ann", call_cids=("default:a",))
    assert await call_ids(some_calls, None, visible=queries.visible_calls(pinned, grants)) == [
        "default:a"
    ]
    nobody = {"default": {"call_member": ["send-audio"]}}
    assert await call_ids(some_calls, None, visible=queries.visible_calls(who("ann"), nobody)) == []
    admin = who("zed", role="admin")
    admin_grants = {"default": {"admin": ["read-call"]}}
    assert await call_ids(some_calls, None, visible=queries.visible_calls(admin, admin_grants)) == [
        "default:a"
    ]


# -- users ------------------------------------------------------------------------------


async def user_ids(store: Store, conditions: Any, sort: Any = None, **kw: Any) -> list[str]:
    query = parse_query(USERS, conditions, sort, 100)
    async with store.connect() as conn:
        rows = await queries.query_users(conn, query, **kw)
    return [r["id"] for r in rows]


async def test_user_filters_sort_and_offset(qstore: Store) -> None:
    await add_users(
        qstore,
        [
            {"id": "ann", "name": "Ann", "teams": ["red", "blue"], "custom": {"flat": 1}},
            {"id": "ben", "name": "Ben", "role": "admin", "teams": ["red"], "custom": {"flat": 2}},
            {"id": "door", "custom": {"device": {"relay": True, "model": "pi4"}}},
            {"id": "zoe", "name": "Zoe", "last_active": T0},
        ],
    )
    online = {"ben", "zoe"}
    assert await user_ids(qstore, {"teams": "red"}) == ["ann", "ben"]
    assert await user_ids(qstore, {"teams": {"$in": ["blue", "green"]}}) == ["ann"]
    assert await user_ids(qstore, {"teams": {"$nin": ["red"]}}) == ["door", "zoe"]
    assert await user_ids(qstore, {"teams": {"$exists": False}}) == ["door", "zoe"]
    assert await user_ids(qstore, {"custom.device.relay": True}) == ["door"]
    assert await user_ids(qstore, {"custom.device": {"$exists": True}}) == ["door"]
    assert await user_ids(qstore, {"custom.flat": {"$ne": 1}}) == ["ben", "door", "zoe"]
    assert await user_ids(qstore, {"online": True}, online_ids=lambda: online) == ["ben", "zoe"]
    assert await user_ids(qstore, {"online": False}, online_ids=lambda: online) == ["ann", "door"]
    assert await user_ids(qstore, {"name": None}) == ["door"]
    assert await user_ids(qstore, {"role": "admin"}) == ["ben"]
    assert await user_ids(qstore, {"id": {"$gte": "b", "$lt": "e"}}) == ["ben", "door"]
    assert await user_ids(qstore, None, [{"field": "name", "direction": -1}]) == [
        "zoe",
        "ben",
        "ann",
        "door",
    ]
    by_activity = await user_ids(qstore, None, [{"field": "last_active", "direction": -1}])
    assert by_activity[0] == "zoe"
    assert await user_ids(qstore, None, offset=2) == ["door", "zoe"]
    assert await user_ids(qstore, None, id_range={"id_gt": "ann", "id_lte": "door"}) == [
        "ben",
        "door",
    ]
    with pytest.raises(InvalidRequest) as info:
        await user_ids(qstore, None, offset=10_001)
    assert info.value.field == "offset"
