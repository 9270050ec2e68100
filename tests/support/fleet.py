"""A fleet the way an operator runs it: PostgreSQL, three ``appliance serve`` replicas and HAProxy
(``deploy/haproxy.cfg``) in front; devices know only the proxy's address.

::

    async with Fleet(tmp, cluster.create_database("f")) as fleet:   # replicas + HAProxy up
        devices = await Devices.connect(fleet, ["u1", "u2"])         # appliance.client.Client each
        await fleet.replicas[0].kill()                               # kill -9
        await devices.wait_all_connected(since=t)                    # reconnected through HAProxy

``Devices`` counts what each device's application sees (after the client's ring ledger and
resync): ``call.ring`` and ``call.missed`` per (call, session), so a test can say "every callee
rang once, every deadline fired once". Used by tests/server/test_fleet.py and bench/fleet.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from appliance.client import Client
from appliance.client.events import Event
from appliance.errors import ServerUnavailable
from appliance.server.auth import create_token
from tests.support.server import API_KEY, ServerHandle, running_server

REPO = Path(__file__).resolve().parents[2]
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
SECRET = "fleet-secret-of-at-least-32-bytes-long"
RingKey = tuple[str, str]  # (call cid, call session id)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ring_body(callees: list[str], callee_ms: int, attempt_ms: int = 60_000) -> dict[str, Any]:
    """Create-with-ring of a new call from ``caller`` to ``callees``, with these deadlines."""
    return {
        "data": {
            "created_by_id": "caller",
            "members": [{"user_id": "caller"}] + [{"user_id": u} for u in callees],
            "settings_override": {
                "ring": {
                    "incoming_call_timeout_ms": callee_ms,
                    "auto_cancel_timeout_ms": attempt_ms,
                }
            },
        },
        "ring": True,
    }


async def start_ring(http: httpx.AsyncClient, body: dict[str, Any]) -> RingKey:
    """Create a new call with ``body`` (``ring_body``) and ring; its (cid, session id).

    A replica killed or stopping while it handles the request answers nothing (the proxy's
    502): the ring may or may not have been stored. Like a careful caller, this reads the call
    before trying again, so a ring is never started twice."""
    cid_id = uuid.uuid4().hex[:12]
    url = f"/api/v2/video/call/default/{cid_id}"
    for _ in range(5):
        r = await http.post(url, json=body)
        if r.status_code in (200, 201):
            call = r.json()["call"]
            return call["cid"], call["session"]["id"]
        if r.status_code not in (502, 503, 504):
            raise RuntimeError(f"create with ring: {r.status_code} {r.text}")
        await asyncio.sleep(0.2)
        got = await http.get(url)
        session = got.json()["call"].get("session") if got.status_code == 200 else None
        if session and session.get("ring_started_at"):  # it did ring
            return got.json()["call"]["cid"], session["id"]
    raise RuntimeError(f"create with ring: {r.status_code} {r.text}")


class HAProxy:
    """Debian's haproxy in the foreground with ``deploy/haproxy.cfg``: ``processes`` of them with
    the same config on one address. HAProxy binds with ``SO_REUSEPORT`` on Linux (the config sets
    no ``noreuseport``), so the kernel spreads the connections over the processes and devices
    still know one address; each process has its own descriptor limit, health checks and stats
    socket (``socket_paths``). One process is the production default; several are how
    bench/fleet.py holds more devices than one process's descriptor limit allows here."""

    def __init__(
        self,
        root: Path,
        backends: list[int],
        maxconn: int,
        *,
        processes: int = 1,
        session_rate: int = 0,
    ) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            raise FileNotFoundError("haproxy is not installed (Debian package haproxy)")
        if processes < 1:
            raise ValueError(f"processes={processes}: at least one")
        self.binary = binary
        self.port = _free_port()
        self.backends = backends
        self.maxconn = maxconn  # per process
        self.processes = processes
        # New connections a second each process accepts (0: no limit); the rest wait in a
        # listen queue of about 3 s of that rate (deploy/haproxy.cfg).
        self.session_rate = session_rate
        self.log_path = root / "haproxy.log"  # all processes append to it
        self.socket_paths = [
            root / ("haproxy.sock" if i == 0 else f"haproxy-{i + 1}.sock") for i in range(processes)
        ]
        self._procs: list[asyncio.subprocess.Process] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def socket_path(self) -> Path:
        """The first process's stats socket."""
        return self.socket_paths[0]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def env(self, index: int = 0) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        env.update(
            APPLIANCE_BIND=f"127.0.0.1:{self.port}",
            APPLIANCE_MAXCONN=str(self.maxconn),
            APPLIANCE_HAPROXY_SOCKET=str(self.socket_paths[index]),
            **{f"APPLIANCE_R{i + 1}": f"127.0.0.1:{p}" for i, p in enumerate(self.backends)},
        )
        if self.session_rate:
            env["APPLIANCE_SESSION_RATE"] = str(self.session_rate)
            env["APPLIANCE_ACCEPT_BACKLOG"] = str(max(16, 3 * self.session_rate))
        return env

    async def start(self) -> None:
        for i in range(self.processes):
            with self.log_path.open("ab") as log:
                proc = await asyncio.create_subprocess_exec(
                    *(self.binary, "-db", "-f", str(HAPROXY_CFG)),
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    env=self.env(i),
                )
            self._procs.append(proc)
        up = asyncio.Event()

        async def probe(http: httpx.AsyncClient) -> None:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{self.base_url}/healthz")).status_code == 200:
                    up.set()

        async def listening() -> bool:
            """Every process answers on its stats socket (it binds before it serves)."""
            try:
                await self.info()
            except OSError:
                return False
            return True

        async with httpx.AsyncClient(timeout=2.0) as http:
            await probe(http)
            for _ in range(200):
                exited = any(p.returncode is not None for p in self._procs)
                if exited or (up.is_set() and await listening()):
                    break
                await asyncio.sleep(0.05)
                await probe(http)
        if any(p.returncode is not None for p in self._procs):
            up.clear()
        if not up.is_set() or not await listening():
            await self.stop()
            raise RuntimeError(f"haproxy did not come up:\n{self.log_path.read_text()}")

    async def _ask(self, path: Path, command: str) -> str:
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            return (await reader.read()).decode()
        finally:
            writer.close()

    async def info(self) -> list[dict[str, str]]:
        """Each process's ``show info`` (``Pid``, ``Ulimit-n``, ``Hard_maxconn``, ``CurrConns``,
        ``CumConns`` …), in process order."""
        out = []
        for path in self.socket_paths:
            text = await self._ask(path, "show info")
            fields = (line.split(":", 1) for line in text.splitlines() if ":" in line)
            out.append({k.strip(): v.strip() for k, v in fields})
        return out

    async def sessions(self) -> list[int]:
        """Each process's current sessions on the devices' frontend (``show stat`` scur)."""
        return [int(x) for x in await self.frontend("scur")]

    async def frontend(self, field: str) -> list[str]:
        """Each process's ``show stat`` ``field`` of the devices' frontend (``scur``,
        ``rate_lim`` …)."""
        out = []
        for path in self.socket_paths:
            lines = (await self._ask(path, "show stat")).lstrip("# ").splitlines()
            header = lines[0].split(",")
            name, server, value = (header.index(h) for h in ("pxname", "svname", field))
            rows = (line.split(",") for line in lines[1:] if line)
            out += [r[value] for r in rows if r[name] == "appliance" and r[server] == "FRONTEND"]
        return out

    async def states(self) -> dict[str, str]:
        """Each replica's status as the proxy sees it (``show stat`` on the stats sockets):
        ``{"r1": "UP", "r2": "DOWN", ...}``. With several processes each checks on its own: a
        replica is ``UP`` when every process has it UP; otherwise its statuses joined by
        ``|`` in process order (``"UP|DOWN"``)."""
        seen: dict[str, list[str]] = {}
        for path in self.socket_paths:
            text = await self._ask(path, "show stat")
            lines = text.lstrip("# ").splitlines()
            header = lines[0].split(",")
            name, server, status = (
                header.index("pxname"),
                header.index("svname"),
                header.index("status"),
            )
            for r in (line.split(",") for line in lines[1:] if line):
                if r[name] == "replicas" and r[server][:1] == "r":
                    seen.setdefault(r[server], []).append(r[status])
        return {s: v[0] if len(set(v)) == 1 else "|".join(v) for s, v in seen.items()}

    async def wait_up(self, server: str, within: float = 30.0) -> None:
        """Until the proxy (every process) has ``server`` (``"r2"``) back in rotation."""
        deadline = time.monotonic() + within
        while (state := (await self.states()).get(server)) != "UP":
            if time.monotonic() > deadline:
                raise AssertionError(f"haproxy still has {server} {state} after {within} s")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        procs, self._procs = self._procs, []
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)  # hard stop: every connection is cut
        for proc in procs:
            await proc.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()


class Fleet:
    """``replicas`` subprocess servers on one PostgreSQL database, HAProxy in front."""

    def __init__(
        self,
        root: Path,
        database: str,
        *,
        replicas: int = 3,
        users: list[dict[str, Any]] | None = None,
        maxconn: int = 4096,
        proxy_processes: int = 1,
        proxy_session_rate: int = 0,
        **settings: Any,
    ) -> None:
        self.root = root
        self.database = database
        self.count = replicas
        self.users = users or []
        self.maxconn = maxconn  # per proxy process
        self.proxy_processes = proxy_processes
        self.proxy_session_rate = proxy_session_rate  # per proxy process; 0 = no limit
        self.settings = settings
        self.replicas: list[ServerHandle] = []
        self.proxy: HAProxy | None = None
        self._stack = contextlib.AsyncExitStack()

    @property
    def base_url(self) -> str:
        assert self.proxy is not None
        return self.proxy.base_url

    def token(self, user_id: str | None = None) -> str:
        return create_token(SECRET, user_id)

    async def __aenter__(self) -> Fleet:
        common = {"database": self.database, "api_secret": SECRET, **self.settings}
        for i in range(self.count):
            # One at a time: the first migrates an empty database, the others find it ready.
            srv = await self._stack.enter_async_context(
                running_server(self.root / f"r{i + 1}", users=self.users, subprocess=True, **common)  # type: ignore[arg-type]
            )
            self.replicas.append(srv)
        self.proxy = HAProxy(
            self.root,
            [r.port for r in self.replicas],
            self.maxconn,
            processes=self.proxy_processes,
            session_rate=self.proxy_session_rate,
        )
        await self.proxy.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proxy is not None:
            await self.proxy.stop()
        await self._stack.aclose()

    def http(self) -> httpx.AsyncClient:
        """A server-token REST client through the proxy."""
        return httpx.AsyncClient(
            base_url=self.base_url,
            params={"api_key": API_KEY},
            headers={"Authorization": self.token(), "stream-auth-type": "jwt"},
            timeout=30,
        )

    def pid(self, index: int) -> int:
        proc = self.replicas[index]._proc
        assert proc is not None, f"replica {index} is not running"
        return proc.pid

    async def add_users(self, user_ids: list[str]) -> None:
        """Create users (100 a request, the API's bound) through the proxy."""
        async with self.http() as http:
            for i in range(0, len(user_ids), 100):
                batch = {u: {"id": u} for u in user_ids[i : i + 100]}
                r = await http.post("/api/v2/users", json={"users": batch})
                r.raise_for_status()

    async def rolling_restart(self) -> None:
        """SIGTERM each replica in turn; the next goes only once the proxy has this one back in
        rotation. Answering /healthz is not enough: the proxy needs ``rise`` checks to see it, and
        stopping the next replica before then leaves one replica for two thirds of the devices."""
        assert self.proxy is not None
        for i, srv in enumerate(self.replicas):
            await srv.restart()
            await self.proxy.wait_up(f"r{i + 1}")


class Device:
    """One device: an ``appliance.client.Client`` through the proxy, counting what it sees."""

    def __init__(self, fleet: Fleet, user_id: str, http: httpx.AsyncClient) -> None:
        self.user_id = user_id
        self.client = Client(
            fleet.base_url, API_KEY, fleet.token(user_id), user_id=user_id, http=http
        )
        self.rings: Counter[RingKey] = Counter()
        self.missed: Counter[RingKey] = Counter()
        self.connected_at: list[float] = []  # time.monotonic() of each connection.ok
        self.lost_at: list[float] = []  # and of each connection.lost
        # (wall-clock time, what): connects, drops and call events, for a failure's story.
        self.timeline: list[tuple[float, str]] = []
        self.client.on(None, self._seen)

    def _seen(self, event: Event) -> None:
        if event.type.startswith(("connection.", "call.")):
            extra = " resynced" if getattr(event, "resynced", False) else ""
            self.timeline.append((time.time(), f"{event.type} {event.cid or ''}{extra}"))
        if event.type == "connection.ok":
            self.connected_at.append(time.monotonic())
            return
        if event.type == "connection.lost":
            self.lost_at.append(time.monotonic())
            return
        cid = event.cid
        sid = event.session_id or event.call_session_id
        if cid is None or sid is None:
            return
        if event.type == "call.ring":
            self.rings[(cid, sid)] += 1
        elif event.type == "call.missed" and event.user is not None:
            if event.user.id == self.user_id:
                self.missed[(cid, sid)] += 1

    @property
    def connected(self) -> bool:
        return self.client.connection.connected


class Devices:
    """Many devices in this process, sharing one HTTP connection pool for their REST calls."""

    def __init__(self, fleet: Fleet, user_ids: list[str]) -> None:
        self.http = httpx.AsyncClient(
            timeout=30, limits=httpx.Limits(max_connections=50, max_keepalive_connections=50)
        )
        self.all = [Device(fleet, u, self.http) for u in user_ids]
        self.by_user = {d.user_id: d for d in self.all}
        self._pools = [self.http]

    def absorb(self, other: Devices) -> None:
        """Take ``other``'s devices (and close them with these)."""
        self.all.extend(other.all)
        self.by_user.update(other.by_user)
        self._pools.extend(other._pools)

    @classmethod
    async def connect(
        cls, fleet: Fleet, user_ids: list[str], parallel: int = 100, *, wait: bool = True
    ) -> Devices:
        """Create the users and start their devices, ``parallel`` at a time; with ``wait``
        (tests) each must be connected within 60 s, without (the bench) a slow one is left to
        its own retries and counted later."""
        await fleet.add_users(user_ids)
        devices = cls(fleet, user_ids)
        gate = asyncio.Semaphore(parallel)

        async def one(d: Device) -> None:
            async with gate:
                try:
                    await d.client.connect(wait=60)
                except ServerUnavailable:
                    if wait:
                        raise

        await asyncio.gather(*(one(d) for d in devices.all))
        return devices

    async def aclose(self) -> None:
        await asyncio.gather(*(d.client.aclose() for d in self.all), return_exceptions=True)
        for pool in self._pools:
            await pool.aclose()

    def story(self, user_id: str, cid: str) -> str:
        """What ``user_id``'s device saw of ``cid`` and of its connection, with wall-clock
        times (for a failure message)."""
        lines = [
            f"  {time.strftime('%H:%M:%S', time.gmtime(t))}.{int(t * 1000) % 1000:03d} {what}"
            for t, what in self.by_user[user_id].timeline
            if what.startswith("connection.") or cid in what
        ]
        return "\n".join(lines)

    def cut_off(self, since: float) -> list[Device]:
        """The devices whose connection dropped after ``since``."""
        return [d for d in self.all if any(t > since for t in d.lost_at)]

    def reconnect_times(self, since: float) -> list[float]:
        """For each device cut off after ``since``: seconds from ``since`` to its first
        connection.ok after that (missing while it is still away)."""
        out = []
        for d in self.cut_off(since):
            after = [t for t in d.connected_at if t > since]
            if after:
                out.append(after[0] - since)
        return out

    def all_back(self, since: float) -> bool:
        """Every device is connected, and every one cut off after ``since`` reconnected since."""
        return all(d.connected for d in self.all) and len(self.reconnect_times(since)) == len(
            self.cut_off(since)
        )
