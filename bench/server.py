"""Call-server benchmark: a real ``appliance serve`` on loopback, measured over HTTP and WebSocket.

1. query members at 100,000 members in one call (seeded by direct bulk inserts into a temp
   SQLite file before the server starts): p50/p95 of an indexed filter + sort
   (``role`` + ``created_at``, paging with ``next``) and of a member custom-field filter whose
   value only 5 members have;
2. ring fan-out: 100 members connected over WebSocket, ``create`` with ``ring`` → time until
   ``call.ring`` arrives on each member's socket, p50/p99 over all rounds after the first (the
   first ring since the server started is reported on its own);
3. RSS of the server process with 1,000 distinct users connected over WebSocket and idle.

Prints a table; the last line is one JSON object. Targets (issue #2): ≤ 10 ms and ≤ 100 ms p95,
≤ 100 ms p99, ≤ 300 MB. Nothing here asserts: it measures.

    .venv/bin/python bench/server.py [--members 100000] [--queries 300] [--ring-rounds 10]
                                     [--store sqlite|postgres] [--pg-no-fsync]

With ``--store postgres`` the throwaway cluster keeps PostgreSQL's durability (``fsync``,
``synchronous_commit``, ``full_page_writes`` on: a commit waits for the disk, as in production);
``--pg-no-fsync`` turns them off as the tests do (runs before 2026-12-07 were made so).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import resource
import secrets
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import websockets
import yaml

from appliance.server.auth import create_token
from appliance.server.store.customindex import flatten_custom
from appliance.server.store.engine import Store, database_url

REPO = Path(__file__).resolve().parents[1]
API_KEY = "bench-key"
CID = "default:bench"
T0 = 1_767_000_000_000_000_000
RARE_VALUE = "vip"
RARE_COUNT = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def _raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def seed(database: str, members: int, extra_users: list[str]) -> float:
    """Create the schema, then bulk-insert users, one call and its members with custom data.
    ``database`` is what the server's config says: a SQLite path or a ``postgresql://`` URL."""
    started = time.perf_counter()
    store = Store(database_url(database, Path(".")))
    await store.open()
    await store.close()
    tables = _rows(members, extra_users)
    if database.startswith("postgresql://"):
        await asyncio.to_thread(_copy_postgres, database, tables)
    else:
        await asyncio.to_thread(_insert_sqlite, Path(database), tables)
    return time.perf_counter() - started


Tables = dict[str, tuple[tuple[str, ...], list[tuple[Any, ...]]]]


def _rows(members: int, extra_users: list[str]) -> Tables:
    rare = {members // (RARE_COUNT + 1) * (k + 1) for k in range(RARE_COUNT)}
    user_ids = [f"m{i:06d}" for i in range(members)] + extra_users
    member_rows = []
    index_rows: list[tuple[Any, ...]] = []
    for i in range(members):
        custom: dict[str, Any] = {"colour": ("red", "green", "blue")[i % 3], "flat": i % 500}
        if i in rare:
            custom["badge"] = RARE_VALUE
        role = "host" if i % 100 == 0 else "call_member"
        created = T0 + i * 1_000_000
        member_rows.append((CID, f"m{i:06d}", role, json.dumps(custom), created, created))
        index_rows.extend((CID, f"m{i:06d}", p, t, n) for p, t, n in flatten_custom(custom))
    user_cols = ("id", "name", "role", "teams", "custom", "created_at", "updated_at")
    call_cols = ("cid", "type", "id", "created_by_id", "custom", "settings_override")
    return {
        "users": (user_cols, [(u, u, "user", "[]", "{}", T0, T0) for u in user_ids]),
        "calls": (
            (*call_cols, "created_at", "updated_at"),
            [(CID, "default", "bench", "m000000", "{}", "{}", T0, T0)],
        ),
        "call_members": (
            ("call_cid", "user_id", "role", "custom", "created_at", "updated_at"),
            member_rows,
        ),
        "call_member_custom_index": (
            ("call_cid", "user_id", "path", "value_text", "value_num"),
            index_rows,
        ),
    }


def _insert_sqlite(db: Path, tables: Tables) -> None:
    conn = sqlite3.connect(db)
    try:
        for table, (cols, rows) in tables.items():
            marks = ", ".join("?" for _ in cols)
            conn.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", rows)
        conn.commit()
    finally:
        conn.close()


def _copy_postgres(url: str, tables: Tables) -> None:
    import psycopg

    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            for table, (cols, rows) in tables.items():
                with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")  # what autovacuum does on its own after a bulk load


class Server:
    """``python -m appliance serve`` in a subprocess."""

    def __init__(
        self, root: Path, database: str, secret: str, extra: dict[str, Any] | None = None
    ) -> None:
        self.port = _free_port()
        self.config = root / "server.yaml"
        data = {
            "api_key": API_KEY,
            "api_secret": secret,
            "state_dir": str(root / "state"),
            "database": database,
            "host": "127.0.0.1",
            "port": self.port,
            # The caller plus 100 ringed members in one create.
            "limits": {"max_members_per_request": 200},
            **(extra or {}),
        }
        self.config.write_text(yaml.safe_dump(data), encoding="utf-8")
        self.log = root / "server.log"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v2/connect?api_key={API_KEY}"

    async def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "APPLIANCE_LOG_LEVEL": "WARNING"}
        with self.log.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *("-m", "appliance", "serve", "--config", str(self.config)),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
        async with httpx.AsyncClient(timeout=2.0) as http:
            for _ in range(600):
                if self.proc.returncode is not None:
                    raise RuntimeError(f"server exited:\n{self.log.read_text()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.base_url}/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"server did not start:\n{self.log.read_text()}")

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def bench_query(
    http: httpx.AsyncClient, body: dict[str, Any], count: int, follow_next: int
) -> tuple[list[float], int, list[float]]:
    """Latencies (ms) of ``count`` query-members requests; every ``follow_next``-th page restarts
    from the first, the others follow ``next`` (deeper pages are keyset seeks too). Also the
    server's own time per request (its ``duration`` field)."""
    latencies: list[float] = []
    server_ms: list[float] = []
    matched = 0
    cursor: str | None = None
    # As in bench_ring: this process's own gen-2 collections are not the server's latency.
    gc.collect()
    gc.freeze()
    try:
        for i in range(count + 10):
            req = dict(body, next=cursor) if cursor else body
            started = time.perf_counter()
            r = await http.post("/api/v2/video/call/members", json=req)
            spent = (time.perf_counter() - started) * 1000
            r.raise_for_status()
            out = r.json()
            if i >= 10:  # the first ten warm caches and connections
                latencies.append(spent)
                server_ms.append(float(str(out["duration"]).removesuffix("ms")))
            matched = max(matched, len(out["members"]))
            cursor = out["next"] if (i + 1) % follow_next else None
    finally:
        gc.unfreeze()
    return latencies, matched, server_ms


async def _connect(url: str, token: str, user_id: str) -> websockets.ClientConnection:
    """A socket with ``connection.ok``; a handshake refused with 1013 (the server's admission:
    too many at once) is tried again after a second, as the clients' backoff would."""
    for attempt in range(10):
        ws = await websockets.connect(url, max_size=2**22, open_timeout=30)
        await ws.send(json.dumps({"token": token, "user_details": {"id": user_id}}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if frame.get("type") == "connection.ok":
                return ws
            if frame.get("type") == "connection.error" and frame["error"]["StatusCode"] == 503:
                await ws.close()
                await asyncio.sleep(1.0 + attempt * 0.5)
                break
            if frame.get("type") in ("error", "connection.error"):
                raise RuntimeError(f"{user_id}: {frame}")
    raise RuntimeError(f"{user_id}: refused ten times (server busy)")


# How the server writes a ring's frame (``type`` first, then ``call_cid``: hub.py's order).
RING_HEAD = re.compile(r'\{"type":"call\.ring","call_cid":"([^"\\]+)"')


def ring_cid(raw: str | bytes) -> str | None:
    """The call cid of a ``call.ring`` frame, ``None`` for any other frame.

    One process reads all 100 members' sockets, so what it spends per frame delays every later
    arrival: parsing each frame whole (``call.created``, ``call.session_started``, ``call.ring``,
    ~20 KB per socket, 2 MB a round) put ~25 ms of this process's own JSON decoding into the
    fan-out's tail and into the create request's time (it waits on the same event loop).
    A ring is told by its first bytes; a frame written otherwise is parsed whole."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    found = RING_HEAD.match(text)
    if found is not None:
        return found.group(1)
    if '"call.ring"' not in text:
        return None
    frame = json.loads(text)
    if frame.get("type") != "call.ring":
        return None
    cid = frame.get("call_cid") or frame.get("call", {}).get("cid")
    return str(cid) if cid else None


async def bench_ring(
    server: Server,
    http: httpx.AsyncClient,
    token: str,
    ringed: list[str],
    rounds: int,
    started_at: dict[str, float] | None = None,
    between: Callable[[str, str], Awaitable[None]] | None = None,
) -> tuple[list[float], int, list[float], float]:
    """Ring fan-out latencies. ``started_at``, if given, gets each round's call cid → the wall
    time (``time.time()``) its create+ring request started; ``between(phase, cid)`` is awaited
    before (``"before_end"``) and after (``"after_end"``) each round's call is ended
    (bench/push.py waits there for the round's pushes)."""
    sockets = await asyncio.gather(*(_connect(server.ws_url, token, uid) for uid in ringed))
    arrivals: dict[str, dict[str, float]] = {}
    complete: dict[str, asyncio.Event] = {}

    async def reader(ws: websockets.ClientConnection, uid: str) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                cid = ring_cid(raw)
                if cid is not None:
                    got = arrivals.setdefault(cid, {})
                    got.setdefault(uid, time.perf_counter())
                    if len(got) == len(ringed):
                        complete.setdefault(cid, asyncio.Event()).set()

    readers = [
        asyncio.create_task(reader(ws, uid)) for ws, uid in zip(sockets, ringed, strict=True)
    ]
    latencies: list[float] = []
    creates: list[float] = []
    first: list[float] = []
    missing = 0
    # This process's own full collections (gen 2 over everything the seeding and the query
    # phase left alive, ~70 ms) fell inside every sixth round and were counted as the
    # server's latency: what exists now is frozen out of them while the rounds run.
    gc.collect()
    gc.freeze()
    try:
        # Round 0 is the first ring since the server started (cold statement caches, first
        # session rows): reported on its own, as the query figures leave out their first ten.
        for n in range(rounds + 1):
            cid_id = f"ring-{n}-{secrets.token_hex(3)}"
            cid = f"default:{cid_id}"
            members = [{"user_id": "ring-caller"}] + [{"user_id": u} for u in ringed]
            body = {"data": {"created_by_id": "ring-caller", "members": members}, "ring": True}
            done = complete.setdefault(cid, asyncio.Event())
            if started_at is not None:
                started_at[cid] = time.time()
            started = time.perf_counter()
            r = await http.post(f"/api/v2/video/call/default/{cid_id}", json=body)
            if n:
                creates.append((time.perf_counter() - started) * 1000)
            if r.status_code != 200:
                raise RuntimeError(f"create with ring: {r.status_code} {r.text}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 10)
            got = arrivals.get(cid, {})
            missing += len(ringed) - len(got)
            (latencies if n else first).extend((t - started) * 1000 for t in got.values())
            if between is not None:
                await between("before_end", cid)
            with contextlib.suppress(httpx.HTTPError):
                await http.post(f"/api/v2/video/call/default/{cid_id}/mark_ended", json={})
            if between is not None:
                await between("after_end", cid)
            await asyncio.sleep(0.2)
    finally:
        gc.unfreeze()
        for task in readers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return latencies, missing, creates, max(first, default=float("nan"))


async def bench_idle(server: Server, token: str, users: int) -> tuple[float, float, int]:
    before = server.rss_mb()
    sockets: list[websockets.ClientConnection] = []
    gate = asyncio.Semaphore(50)

    async def one(i: int) -> None:
        async with gate:
            sockets.append(await _connect(server.ws_url, token, f"idle-{i:04d}"))

    try:
        await asyncio.gather(*(one(i) for i in range(users)))
        await asyncio.sleep(3)  # idle: let allocations settle
        after = server.rss_mb()
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return before, after, len(sockets)


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    nofile = _raise_nofile(args.idle_users * 2 + 1024)
    if args.store == "postgres":
        # Debian's PostgreSQL in a temp dir, as the fleet-store tests start it.
        sys.path.insert(0, str(REPO))
        from tests.support.pgcluster import PostgresCluster

        cluster = PostgresCluster.find()
        if cluster is None:
            raise SystemExit("PostgreSQL server binaries are not installed")
        cluster.start(durable=args.pg_durable)
        try:
            return await _measure(args, root, cluster.create_database("bench"), nofile)
        finally:
            cluster.stop()
    return await _measure(args, root, str(root / "bench.db"), nofile)


async def _measure(
    args: argparse.Namespace, root: Path, database: str, nofile: int
) -> dict[str, Any]:
    secret = secrets.token_urlsafe(32)
    ringed = [f"r{i:03d}" for i in range(args.ring_members)]
    idle = [f"idle-{i:04d}" for i in range(args.idle_users)]
    seconds = await seed(database, args.members, ["ring-caller", *ringed, *idle])
    durability = ""
    if args.store == "postgres":
        durability = " (fsync on)" if args.pg_durable else " (fsync, synchronous_commit off)"
    print(
        f"store {args.store}{durability}: seeded {args.members:,} members in {seconds:.1f} s; "
        f"open-files limit {nofile}"
    )
    server = Server(root, database, secret)
    await server.start()
    token = create_token(secret)
    results: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(
            base_url=server.base_url,
            params={"api_key": API_KEY},
            headers={"Authorization": token, "stream-auth-type": "jwt"},
            timeout=30,
        ) as http:
            indexed = {
                "type": "default",
                "id": "bench",
                "filter_conditions": {"role": "call_member"},
                "sort": [{"field": "created_at", "direction": -1}],
                "limit": 25,
            }
            custom = {
                "type": "default",
                "id": "bench",
                "filter_conditions": {"custom.badge": RARE_VALUE},
                "sort": [{"field": "created_at", "direction": 1}],
                "limit": 25,
            }
            results["indexed"] = await bench_query(http, indexed, args.queries, follow_next=10)
            results["custom"] = await bench_query(http, custom, args.queries, follow_next=1)
            results["ring"] = await bench_ring(server, http, token, ringed, args.ring_rounds)
        results["idle"] = await bench_idle(server, token, args.idle_users)
    finally:
        await server.stop()
    return results


def report(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    idx, idx_rows, idx_server = results["indexed"]
    cus, cus_rows, cus_server = results["custom"]
    ring, missing, creates, first_ring = results["ring"]
    before, after, connected = results["idle"]
    rows = [
        (
            f"query members, role=$eq + sort created_at ({args.members:,})",
            idx,
            10.0,
            f"{idx_rows} rows/page; in server p50 {statistics.median(idx_server):.1f}"
            f" p95 {_pct(idx_server, 95):.1f}",
        ),
        (
            f"query members, custom.badge={RARE_VALUE} (rare)",
            cus,
            100.0,
            f"{cus_rows} rows; in server p50 {statistics.median(cus_server):.1f}"
            f" p95 {_pct(cus_server, 95):.1f}",
        ),
    ]
    print()
    print(f"{'measure':<52}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'target':>10}  note")
    for name, values, target, note in rows:
        print(
            f"{name:<52}{len(values):>6}{statistics.median(values):>10.2f}"
            f"{_pct(values, 95):>10.2f}{_pct(values, 99):>10.2f}{'≤' + str(target):>10}  {note}"
        )
    print(
        f"{'ring fan-out to ' + str(args.ring_members) + ' sockets (create+ring → call.ring)':<52}"
        f"{len(ring):>6}{statistics.median(ring) if ring else float('nan'):>10.2f}"
        f"{_pct(ring, 95):>10.2f}{_pct(ring, 99):>10.2f}{'≤100 p99':>10}  {missing} missing"
    )
    print(
        f"{'  of which the create+ring request itself':<52}{len(creates):>6}"
        f"{statistics.median(creates) if creates else float('nan'):>10.2f}"
        f"{_pct(creates, 95):>10.2f}{_pct(creates, 99):>10.2f}{'':>10}  HTTP response time"
    )
    print(
        f"{'  first ring after start (not in the above), last arrival':<52}{'':>6}"
        f"{first_ring:>10.2f}"
    )
    print(
        f"{'server RSS, ' + str(connected) + ' users connected and idle':<52}{'':>6}"
        f"{after:>10.1f} MB{'':>16}{'≤300':>8}  {before:.1f} MB before connecting"
    )
    figures = {
        "query_members_indexed_p50_ms": round(statistics.median(idx), 2),
        "query_members_indexed_p95_ms": round(_pct(idx, 95), 2),
        "query_members_custom_p50_ms": round(statistics.median(cus), 2),
        "query_members_custom_p95_ms": round(_pct(cus, 95), 2),
        "query_members_indexed_server_p95_ms": round(_pct(idx_server, 95), 2),
        "query_members_custom_server_p95_ms": round(_pct(cus_server, 95), 2),
        "ring_fanout_p50_ms": round(statistics.median(ring), 2) if ring else None,
        "ring_fanout_p99_ms": round(_pct(ring, 99), 2) if ring else None,
        "ring_missing": missing,
        "ring_create_request_p50_ms": round(statistics.median(creates), 2) if creates else None,
        "ring_first_after_start_ms": round(first_ring, 2),
        "rss_1000_idle_mb": round(after, 1),
        "rss_before_mb": round(before, 1),
        "idle_connected": connected,
        "members": args.members,
        "store": args.store,
        "pg_durable": args.pg_durable if args.store == "postgres" else None,
        # Others' work on a shared box moves every figure: the 1/5/15-minute load at the end.
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--ring-members", type=int, default=100)
    parser.add_argument("--ring-rounds", type=int, default=10)
    parser.add_argument("--idle-users", type=int, default=1000)
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the server's database (postgres: a throwaway cluster from Debian's binaries)",
    )
    parser.add_argument(
        "--pg-no-fsync",
        dest="pg_durable",
        action="store_false",
        help="postgres: fsync, synchronous_commit and full_page_writes off (as the tests run it); "
        "by default they are on, as in production: each commit waits for the disk",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="appliance-bench-") as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    figures = report(args, results)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
