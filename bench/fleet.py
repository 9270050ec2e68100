"""Fleet benchmark: PostgreSQL + three ``appliance serve`` replicas + HAProxy (``deploy/haproxy.cfg``),
devices that know only the proxy's address.

1. ring fan-out: ``create`` with ``ring`` to 100 real ``appliance.client.Client`` devices in four
   load-generator processes → ``call.ring`` seen by each device's application, p50/p99 over
   ``--ring-rounds`` rounds; split into the request's own time, the devices on the replica that
   served the request, and those on the other two (through NOTIFY; mean NOTIFY lag from /metrics);
   the load generators run their garbage collector between rounds, not inside them (25 clients'
   heaps in one process, which no device has; their longest pause inside a round is reported);
2. ``kill -9`` one replica while rings go on (``--devices`` real clients in this process, groups
   of 10, one every 0.2 s, 6 s callee deadline): reconnect time of each device that was cut off
   (p99), then per ring and callee how many times the application saw ``call.ring`` (0 = lost,
   2+ = duplicated) and ``call.missed`` (the stored deadline: must be exactly 1);
3. rolling restart (SIGTERM one replica at a time, which drains its sockets over
   ``ws_drain_seconds``; each UP in HAProxy again before the next) with
   rings going on: rings and missed-call events lost or twice;
4. scale: ``--idle-devices`` idle devices in load-generator processes of
   ``--devices-per-process`` each (``IdleDevice``: a bare WebSocket doing what the client does on
   an idle socket), RSS and CPU of each replica at idle (30 s), then HAProxy restarted (every
   connection cut) and the time until every device is back through its jittered backoff, with
   the proxy accepting ``--proxy-session-rate`` new connections a second (0: unpaced); why the
   attempts on the way failed, and the CPU each party used meanwhile.

The proxy tier is ``--proxy-processes`` HAProxy processes on one address (default: as many as
the descriptor limit needs for all devices; ``proxy_tier``).

Prints a table; the last line is one JSON object. Targets (issue #14): reconnect p99 ≤ 5 s, no ring
lost or duplicated, fan-out p99 ≤ 150 ms, 10,000 idle devices. Nothing here asserts: it measures.

    .venv/bin/python bench/fleet.py [--devices 1000] [--idle-devices 10000] [--ring-rounds 20]
        [--phases fanout,kill,rolling,scale] [--proxy-processes N] [--proxy-session-rate 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import random
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.server import _pct, _raise_nofile
from tests.support.fleet import Devices, Fleet, RingKey, ring_body, start_ring
from tests.support.pgcluster import PostgresCluster
from tests.support.pushservice import until

GROUP = 10
CALLEE_MS = 6_000
SHOWN = 5  # lost or duplicated pairs named in the report
TICKS = os.sysconf("SC_CLK_TCK")


async def ring(http: Any, callees: list[str], callee_ms: int) -> tuple[RingKey, float]:
    started = time.monotonic()
    return await start_ring(http, ring_body(callees, callee_ms, 120_000)), started


async def within(predicate: Callable[[], bool], seconds: float, what: str) -> bool:
    """Until ``predicate()`` holds or ``seconds`` pass; False (printed) when they passed: what
    did not happen is then counted and reported, and the bench goes on."""
    try:
        await until(predicate, within=seconds, what=what)
    except (AssertionError, TimeoutError):  # until() says so with an AssertionError
        print(f"timed out after {seconds:.0f} s waiting for {what}", flush=True)
        return False
    return True


class Ringing:
    """Rings to random groups, one every ``every`` seconds, until stopped."""

    def __init__(self, fleet: Fleet, devices: Devices, every: float = 0.2) -> None:
        self.fleet = fleet
        self.devices = devices
        self.every = every
        self.rings: dict[RingKey, list[str]] = {}
        self.failed = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        ids = [d.user_id for d in self.devices.all]
        async with self.fleet.http() as http:
            while not self._stop.is_set():
                callees = random.sample(ids, GROUP)
                try:
                    key, _ = await ring(http, callees, CALLEE_MS)
                    self.rings[key] = callees
                except Exception:
                    self.failed += 1
                await asyncio.sleep(self.every)

    def stop(self) -> None:
        self._stop.set()

    def tell_lost(self) -> None:
        """Print what the devices of the first few pairs that lost a ring or a call.missed saw
        of that call and of their connection (wall-clock times)."""
        for what in ("rings", "missed"):
            for pair in self.counts(what)["lost_pairs"]:
                cid, user_id = pair.split(" ")
                print(f"{what} lost: {pair}\n{self.devices.story(user_id, cid)}", flush=True)

    def counts(self, what: str) -> dict[str, Any]:
        """Callee pairs that saw ``what`` ("rings", "missed") never or more than once; the
        first few of each named ``"<call id> <user>"``."""
        lost: list[str] = []
        dup: list[str] = []
        for key, callees in self.rings.items():
            for u in callees:
                n = getattr(self.devices.by_user[u], what)[key]
                if n == 0:
                    lost.append(f"{key[0]} {u}")
                elif n > 1:
                    dup.append(f"{key[0]} {u} x{n}")
        return {
            "lost": len(lost),
            "duplicated": len(dup),
            "pairs": len(self.rings) * GROUP,
            "lost_pairs": lost[:SHOWN],
            "duplicated_pairs": dup[:SHOWN],
        }

    async def settle(self, seconds: float) -> bool:
        """Until every callee of every ring saw its missed call (or ``seconds`` pass)."""
        return await within(
            lambda: self.counts("missed")["lost"] == 0, seconds, "every call.missed"
        )


async def notify_lag(fleet: Fleet) -> tuple[float, float]:
    """Sum and count of ``appliance_notify_lag_seconds`` over the replicas (their /metrics)."""
    import httpx

    total = count = 0.0
    async with httpx.AsyncClient(timeout=10) as http:
        for srv in fleet.replicas:
            with contextlib.suppress(httpx.HTTPError):
                text = (await http.get(f"{srv.base_url}/metrics")).text
                for line in text.splitlines():
                    if line.startswith("appliance_notify_lag_seconds_sum"):
                        total += float(line.split()[-1])
                    elif line.startswith("appliance_notify_lag_seconds_count"):
                        count += float(line.split()[-1])
    return total, count


async def fanout(fleet: Fleet, members: int, rounds: int, per_process: int) -> dict[str, Any]:
    """Rings to ``members`` real clients (in load-generator processes): from the create+ring
    request to each client's application seeing ``call.ring``; the request's own time; the
    arrival on the replica that handled the request vs the others (through NOTIFY)."""
    ids = [f"f{i:04d}" for i in range(members)]
    await fleet.add_users(ids)
    workers = Workers(fleet, "client", ids, per_process)
    out: dict[str, Any] = {"all": [], "request": [], "local": [], "remote": [], "gc": []}
    try:
        st = await workers.wait_connected(len(ids), 120)
        out["connected"] = st["connected"]
        lag0 = await notify_lag(fleet)
        # The load generators collect between rounds, not inside them: one process holds 25
        # clients' heaps (no device does), and their full collections (80-120 ms, in all four
        # processes at once) landed in one round in twenty and decided the p99 alone.
        await workers.ask("gc_auto", False)
        async with fleet.http() as http:
            for n in range(rounds + 1):
                started = time.monotonic()
                key = await start_ring(http, ring_body(ids, 60_000, 120_000))
                answered = time.monotonic()
                ring_id = f"{key[0]}/{key[1]}"
                seen: dict[str, dict[str, Any]] = {}
                for _ in range(40):
                    seen = await workers.rings()
                    if all(ring_id in v["rings"] for v in seen.values()):
                        break
                    await asyncio.sleep(0.25)
                cid_type, cid_id = key[0].split(":", 1)
                await http.post(f"/api/v2/video/call/{cid_type}/{cid_id}/mark_ended", json={})
                await workers.ask("collect")
                await asyncio.sleep(0.3)
                if not n:  # round 0 warms the replicas' statement caches
                    continue
                # The load generators' own collector pauses inside this round's window (a pause
                # there delays every ring its devices record, whatever the server did).
                window = max((at for v in seen.values() for at in v["rings"].values()), default=0)
                round_gc = [
                    ms for part in await workers.ask("gc", started) for t, ms in part if t <= window
                ]
                out["gc"].append(max(round_gc, default=0.0))
                out["request"].append((answered - started) * 1000)
                by_replica: dict[str, list[float]] = {}
                for v in seen.values():
                    at = v["rings"].get(ring_id)
                    if at is not None:
                        ms = (at - started) * 1000
                        out["all"].append(ms)
                        by_replica.setdefault(str(v["conn"])[:12], []).append(ms)
                # The replica that served the request delivers first (no NOTIFY on the way).
                groups = sorted(by_replica.values(), key=statistics.median)
                if os.environ.get("FLEET_DEBUG"):
                    print(
                        f"round {n}: request {(answered - started) * 1000:.0f} ms, by replica "
                        + ", ".join(f"{min(g):.0f}-{max(g):.0f} ({len(g)})" for g in groups)
                        + f"; load generators' longest GC pause {out['gc'][-1]:.0f} ms",
                        flush=True,
                    )
                if groups:
                    out["local"].extend(groups[0])
                    for g in groups[1:]:
                        out["remote"].extend(g)
        lag1 = await notify_lag(fleet)
        dn = lag1[1] - lag0[1]
        out["notify_lag_mean_ms"] = (lag1[0] - lag0[0]) / dn * 1000 if dn else float("nan")
    finally:
        with contextlib.suppress(Exception):
            await workers.ask("gc_auto", True)
        await workers.stop()
    return out


# -- load-generator processes ---------------------------------------------------------------
# One Python process on these 2 cores cannot keep thousands of devices' sockets answered while
# thousands of others reconnect (they then take each other for dead after their silence limit).
# ``Workers`` spreads devices over processes (``--devices-per-process``), each an asyncio loop.
# Two kinds of device:
# - ``client``: a real ``appliance.client.Client`` (ring ledger, resync, backoff), recording when
#   its application saw each ``call.ring`` (the fan-out measurement);
# - ``idle``: a bare WebSocket doing what the client does on an idle socket, no more: the same URL
#   and ``websockets`` connect options, the token frame, ``connection.ok``, a ``health.check`` every
#   10 s, closing after 30 s without a frame, the client's jittered ``Backoff`` to reconnect; it
#   parses nothing else (an idle device gets nothing but health checks).
# time.monotonic() is CLOCK_MONOTONIC: comparable across processes of one machine.

HEARTBEAT_S = 10.0


class RefusedError(ConnectionError):
    """The server answered the auth frame with something else than ``connection.ok``."""


def _failure_kind(err: Exception, stage: str) -> str:
    """What kind of failure a connect attempt met (the bench's account of the reconnect)."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    if isinstance(err, RefusedError):
        return "server busy (connection.error, 1013)" if "503" in str(err) else "refused"
    if isinstance(err, InvalidStatus):
        return f"proxy HTTP {err.response.status_code}"
    if isinstance(err, TimeoutError):
        return f"timeout waiting for {stage}"
    if isinstance(err, ConnectionClosed):
        return f"closed during {stage}"
    if isinstance(err, OSError):
        return f"{type(err).__name__} during {stage}"
    return f"{type(err).__name__} during {stage}"


class IdleDevice:
    def __init__(self, url: str, user_id: str, token: str) -> None:
        from appliance.client.backoff import Backoff

        self.url = url
        self.user_id = user_id
        self.token = token
        self.backoff = Backoff()
        self.connected = False
        self.connected_at: list[float] = []
        self.lost_at: list[float] = []
        # Why each attempt that did not connect failed: (time.monotonic() it began, kind).
        self.failures: list[tuple[float, str]] = []
        # Each backoff sleep: (time.monotonic() it began, seconds).
        self.waits: list[tuple[float, float]] = []
        self._last_rx = 0.0
        self._stage = ""

    async def run(self, first: asyncio.Semaphore) -> None:
        import websockets

        gate: asyncio.Semaphore | None = first
        while True:
            began = time.monotonic()
            self._stage = "tcp/http"
            try:
                if gate is not None:
                    async with gate:
                        await self._open(websockets)
                else:
                    await self._open(websockets)
                gate = None
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                gate = None
                if not self.connected:
                    self.failures.append((began, _failure_kind(err, self._stage)))
            if self.connected:
                self.connected = False
                self.lost_at.append(time.monotonic())
            delay = self.backoff.next_delay()
            self.waits.append((time.monotonic(), delay))
            await asyncio.sleep(delay)

    async def _open(self, websockets: Any) -> None:
        self._ws = await websockets.connect(
            self.url, open_timeout=10.0, close_timeout=2.0, max_size=4 * 1024 * 1024
        )
        self._stage = "connection.ok"
        try:
            await self._ws.send(
                json.dumps({"token": self.token, "user_details": {"id": self.user_id}})
            )
            async with asyncio.timeout(10.0):
                first = json.loads(await self._ws.recv())
            if first.get("type") != "connection.ok":
                raise RefusedError(str(first)[:200])
        except BaseException:
            await self._ws.close()
            raise
        self.connected = True
        self.connected_at.append(time.monotonic())
        self._last_rx = time.monotonic()
        self.backoff.reset()

    async def _serve(self) -> None:
        ws = self._ws
        beat = asyncio.create_task(self._heartbeat(ws))
        try:
            async for _ in ws:
                self._last_rx = time.monotonic()
        finally:
            beat.cancel()
            await ws.close()

    async def _heartbeat(self, ws: Any) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if time.monotonic() - self._last_rx > 3 * HEARTBEAT_S:
                await ws.close()
                return
            with contextlib.suppress(Exception):
                await ws.send(json.dumps({"type": "health.check"}))


class ClientDevice:
    """A real ``appliance.client.Client`` recording when its application saw each ring."""

    def __init__(self, base_url: str, api_key: str, user_id: str, token: str, http: Any) -> None:
        from appliance.client import Client

        self.user_id = user_id
        self.client = Client(base_url, api_key, token, user_id=user_id, http=http)
        self.rings: dict[str, float] = {}  # "cid/session id" → time.monotonic()
        self.client.on("call.ring", self._ring)

    def _ring(self, event: Any) -> None:
        sid = event.session_id or event.call_session_id
        if event.cid and sid:
            self.rings.setdefault(f"{event.cid}/{sid}", time.monotonic())

    @property
    def connected(self) -> bool:
        return bool(self.client.connection.connected)


def _worker(
    pipe: Any, kind: str, base_url: str, api_key: str, devices: list[tuple[str, str]]
) -> None:
    """One load-generator process: serve ``devices`` until told to stop."""
    _raise_nofile(len(devices) * 2 + 256)
    asyncio.run(_worker_main(pipe, kind, base_url, api_key, devices))


async def _worker_main(
    pipe: Any, kind: str, base_url: str, api_key: str, devices: list[tuple[str, str]]
) -> None:
    import httpx

    from appliance.client.connection import websocket_url

    loop = asyncio.get_running_loop()
    pauses = _gc_pauses()
    http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=20))
    tasks: list[asyncio.Task[Any]] = []
    idle: list[IdleDevice] = []
    clients: list[ClientDevice] = []
    first = asyncio.Semaphore(25)
    if kind == "idle":
        url = websocket_url(base_url, api_key)
        idle = [IdleDevice(url, u, t) for u, t in devices]
        tasks = [asyncio.create_task(d.run(first)) for d in idle]
    else:
        clients = [ClientDevice(base_url, api_key, u, t, http) for u, t in devices]

        async def start(d: ClientDevice) -> None:
            async with first:
                with contextlib.suppress(Exception):
                    await d.client.connect(wait=60)

        tasks = [asyncio.create_task(start(d)) for d in clients]
    cpu0 = time.process_time()
    try:
        while True:
            cmd, arg = await loop.run_in_executor(None, pipe.recv)
            if cmd == "status":
                since = float(arg)
                everyone: list[Any] = idle or clients
                back = []
                cut = 0
                failures: Counter[str] = Counter()
                waited = 0.0
                for d in everyone:
                    lost = d.lost_at if isinstance(d, IdleDevice) else []
                    if any(t > since for t in lost):
                        cut += 1
                        after = [t for t in d.connected_at if t > since]
                        if after:
                            back.append(after[0] - since)
                    if isinstance(d, IdleDevice):
                        failures.update(k for t, k in d.failures if t > since)
                        waited += sum(s for t, s in d.waits if t > since)
                pipe.send(
                    {
                        "devices": len(everyone),
                        "connected": sum(d.connected for d in everyone),
                        "cut": cut,
                        "back": back,
                        "failures": dict(failures),
                        "backoff_s": waited,
                        "cpu_s": time.process_time() - cpu0,
                    }
                )
            elif cmd == "rings":
                pipe.send(
                    {
                        d.user_id: {"conn": d.client.connection.connection_id, "rings": d.rings}
                        for d in clients
                    }
                )
            elif cmd == "gc":  # the collector's pauses (start, ms) of this process since ``arg``
                pipe.send([(t, ms) for t, ms in pauses if t >= float(arg)])
            elif cmd == "gc_auto":  # the cyclic collector on its own thresholds, or not
                (gc.enable if arg else gc.disable)()
                pipe.send(gc.isenabled())
            elif cmd == "collect":  # a full collection now, between measurements
                pipe.send(gc.collect())
            elif cmd == "stop":
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(d.client.aclose() for d in clients), return_exceptions=True)
        await http.aclose()
        pipe.send("stopped")


def _gc_pauses() -> list[tuple[float, float]]:
    """Record this process's cyclic-collector runs of 2 ms or more: (start, ms)."""
    pauses: list[tuple[float, float]] = []
    began = [0.0]

    def note(phase: str, _info: dict[str, Any]) -> None:
        now = time.monotonic()
        if phase == "start":
            began[0] = now
        elif (now - began[0]) * 1000 >= 2:
            pauses.append((began[0], (now - began[0]) * 1000))

    gc.callbacks.append(note)
    return pauses


class Workers:
    """Devices in ``processes`` load-generator processes (``_worker``)."""

    def __init__(self, fleet: Fleet, kind: str, user_ids: list[str], per_process: int) -> None:
        from tests.support.server import API_KEY

        ctx = multiprocessing.get_context("spawn")
        self.procs: list[Any] = []
        self.pipes: list[Any] = []
        for i in range(0, len(user_ids), per_process):
            mine = [(u, fleet.token(u)) for u in user_ids[i : i + per_process]]
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker, args=(child, kind, fleet.base_url, API_KEY, mine), daemon=True
            )
            proc.start()
            self.procs.append(proc)
            self.pipes.append(parent)

    async def ask(self, cmd: str, arg: Any = None) -> list[Any]:
        loop = asyncio.get_running_loop()

        def one(pipe: Any) -> Any:
            pipe.send((cmd, arg))
            return pipe.recv()

        return list(await asyncio.gather(*(loop.run_in_executor(None, one, p) for p in self.pipes)))

    async def status(self, since: float = float("inf")) -> dict[str, Any]:
        parts = await self.ask("status", since)
        return {
            "devices": sum(p["devices"] for p in parts),
            "connected": sum(p["connected"] for p in parts),
            "cut": sum(p["cut"] for p in parts),
            "back": [t for p in parts for t in p["back"]],
            "failures": sum((Counter(p["failures"]) for p in parts), Counter()),
            "backoff_s": sum(p["backoff_s"] for p in parts),
            "cpu_s": [p["cpu_s"] for p in parts],
        }

    async def wait_connected(self, want: int, seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            st = await self.status()
            if st["connected"] >= want or time.monotonic() > deadline:
                return st
            await asyncio.sleep(1.0)

    async def rings(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for part in await self.ask("rings"):
            out.update(part)
        return out

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ask("stop"), 60)
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()


def _proc_status(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _machine_cpu() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine so far (/proc/stat), all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    total = sum(fields)
    return (total - fields[3] - fields[4]) / TICKS, total / TICKS


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def kill_phase(fleet: Fleet, devices: Devices) -> dict[str, Any]:
    ringing = Ringing(fleet, devices)
    task = asyncio.create_task(ringing.run())
    await asyncio.sleep(2.0)
    killed_at = time.monotonic()
    await fleet.replicas[0].kill()
    await asyncio.sleep(2.0)
    ringing.stop()
    await task
    timed_out = []
    if not await within(lambda: devices.all_back(killed_at), 60, "every device back"):
        timed_out.append("devices back")
    times = devices.reconnect_times(killed_at)
    cut = len(devices.cut_off(killed_at))
    if not await ringing.settle(60):
        timed_out.append("call.missed")
        ringing.tell_lost()
    await fleet.replicas[0].start()  # back for the next phase; the proxy's check sees it
    await asyncio.sleep(3)
    return {
        "cut_off": cut,
        "reconnected": len(times),
        "reconnect_p50_s": statistics.median(times) if times else float("nan"),
        "reconnect_p99_s": _pct(times, 99),
        "rings": len(ringing.rings),
        "ring": ringing.counts("rings"),
        "missed": ringing.counts("missed"),
        "create_failures": ringing.failed,
        "timed_out": timed_out,
    }


async def rolling_phase(fleet: Fleet, devices: Devices) -> dict[str, Any]:
    ringing = Ringing(fleet, devices, every=0.3)
    task = asyncio.create_task(ringing.run())
    started = time.monotonic()
    await fleet.rolling_restart()
    took = time.monotonic() - started
    ringing.stop()
    await task
    settled = await ringing.settle(60)
    if not settled:
        ringing.tell_lost()
    return {
        "timed_out": [] if settled else ["call.missed"],
        "seconds": took,
        "rings": len(ringing.rings),
        "ring": ringing.counts("rings"),
        "missed": ringing.counts("missed"),
        "create_failures": ringing.failed,
    }


async def scale_phase(fleet: Fleet, total: int, per_process: int) -> dict[str, Any]:
    """``total`` idle devices in load-generator processes: RSS and CPU of each replica at idle,
    then HAProxy restarted (every socket cut) and the time until every device is back."""
    ids = [f"i{i:05d}" for i in range(total)]
    await fleet.add_users(ids)
    started = time.monotonic()
    workers = Workers(fleet, "idle", ids, per_process)
    try:
        st = await workers.wait_connected(total, 600)
        connect_s = time.monotonic() - started
        print(f"idle devices: {st['connected']} of {total} in {connect_s:.0f} s", flush=True)
        await asyncio.sleep(10)  # idle: let allocations settle
        procs = [srv._proc for srv in fleet.replicas]
        pids = [p.pid for p in procs if p is not None]
        rss = [_proc_status(pid, "VmRSS") for pid in pids]
        cpu0 = [_cpu_seconds(pid) for pid in pids]
        gen0 = (await workers.status())["cpu_s"]
        await asyncio.sleep(30)
        cpu = [(_cpu_seconds(pid) - c) / 30 * 100 for pid, c in zip(pids, cpu0, strict=True)]
        st = await workers.status()
        gen = sum(b - a for a, b in zip(gen0, st["cpu_s"], strict=True)) / 30 * 100
        still = st["connected"]
        assert fleet.proxy is not None
        proxy_sessions = await fleet.proxy.sessions()
        proxy_hard_maxconn = [int(i["Hard_maxconn"]) for i in await fleet.proxy.info()]
        print(
            f"idle: {still} connected, RSS MB {[round(x) for x in rss]}, "
            f"CPU % {[round(x, 1) for x in cpu]}, load generators {gen:.0f} %, "
            f"proxy sessions {proxy_sessions} (Hard_maxconn {proxy_hard_maxconn})",
            flush=True,
        )
        # CPU seconds spent during the reconnect, by whom (where the time goes on 2 cores).
        rep0 = [_cpu_seconds(pid) for pid in pids]
        gen0 = (await workers.status())["cpu_s"]
        machine0 = _machine_cpu()
        cut_at = time.monotonic()
        back: list[float] = []
        cut = 0
        try:
            await fleet.proxy.restart()
        except RuntimeError as err:  # every replica failed its health check: counted, not hidden
            print(f"HAProxy did not come back: {str(err)[:200]}", flush=True)
            await fleet.proxy.stop()
            await fleet.proxy.start()
        for _ in range(900):
            await asyncio.sleep(1.0)
            st = await workers.status(cut_at)
            back, cut = st["back"], st["cut"]
            if st["connected"] >= still and len(back) == cut:
                break
        storm_s = time.monotonic() - cut_at
        machine1 = _machine_cpu()
        cpu_storm = {
            "replicas": sum(_cpu_seconds(p) - c for p, c in zip(pids, rep0, strict=True)),
            "load_generators": sum(b - a for a, b in zip(gen0, st["cpu_s"], strict=True)),
            "haproxy": sum(_cpu_seconds(p) for p in fleet.proxy.pids),
            "machine_busy": machine1[0] - machine0[0],
            "machine_total": machine1[1] - machine0[1],
        }
        failures, backoff_s = st["failures"], st["backoff_s"]
        await asyncio.sleep(10)
        after = (await workers.status())["connected"]
    finally:
        await workers.stop()
    # How the devices came back: how many per 10 s after the cut.
    waves = Counter(int(t // 10) * 10 for t in back)
    print(
        "back per 10 s after the cut: "
        + ", ".join(f"{k}-{k + 10} s: {waves[k]}" for k in sorted(waves)),
        flush=True,
    )
    print(
        f"CPU seconds in the {storm_s:.0f} s until all were back: "
        + ", ".join(f"{k} {v:.0f}" for k, v in cpu_storm.items())
        + f" (machine {cpu_storm['machine_busy'] / max(1e-9, cpu_storm['machine_total']):.0%} busy)",
        flush=True,
    )
    print(
        f"failed attempts after the cut: {sum(failures.values())} {dict(failures.most_common())}; "
        f"backoff sleeps begun after the cut {backoff_s:.0f} device-seconds "
        f"({backoff_s / max(1, cut):.1f} s a device)",
        flush=True,
    )
    logs = [srv.log_text() for srv in fleet.replicas]
    proxy_log = fleet.proxy.log_path.read_text(errors="replace") if fleet.proxy else ""
    return {
        # What the close storm after the proxy restart did on the replicas and at the proxy.
        "close_hook_failures": sum(t.count("close hook failed") for t in logs),
        "close_batches_failed": sum(t.count("closed connections not started") for t in logs),
        "database_check_failures": sum(t.count("database check failed") for t in logs),
        "replicas_marked_down": proxy_log.count(" is DOWN"),
        "devices": still,
        "wanted": total,
        "connect_s": connect_s,
        "rss_mb": rss,
        "idle_cpu_pct": cpu,
        "loadgen_cpu_pct": gen,
        "cut": cut,
        "reconnected": len(back),
        "reconnect_all_s": max(back) if back else float("nan"),
        "reconnect_p99_s": _pct(back, 99),
        "connected_10s_later": after,
        "reconnect_p50_s": statistics.median(back) if back else float("nan"),
        "reconnect_failures": dict(failures),
        "reconnect_backoff_s_per_device": backoff_s / max(1, cut),
        "storm_cpu_s": cpu_storm,
        "storm_s": storm_s,
        "proxy_processes": len(proxy_sessions),
        "proxy_sessions": proxy_sessions,
        "proxy_hard_maxconn": proxy_hard_maxconn,
    }


def proxy_tier(connections: int, args: argparse.Namespace) -> tuple[int, int]:
    """How many HAProxy processes, and ``maxconn`` for each, to proxy ``connections``.

    HAProxy needs two descriptors per proxied connection (client side, replica side) and
    lowers ``maxconn`` to what its ``RLIMIT_NOFILE`` allows. Where the hard limit cannot be
    raised (this machine: 20,000, no ``CAP_SYS_RESOURCE``: one process holds 9,984) the bench
    runs several processes on the one address (``SO_REUSEPORT``), each with its own limit; the
    kernel spreads the devices over them. In production one process with a limit of at least
    twice the devices + a few hundred does the same (README "Running a fleet")."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per_process = (hard - 500) // 2 if hard != resource.RLIM_INFINITY else connections
    processes = args.proxy_processes or max(1, -(-connections // per_process))
    # The kernel's hash spreads unevenly: a third more than an even share each, within the limit.
    share = -(-connections // processes)
    return processes, min(per_process, share + share // 3) if processes > 1 else share


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    cluster = PostgresCluster.find()
    if cluster is None:
        raise SystemExit("PostgreSQL server binaries are not installed")
    os.environ.setdefault("APPLIANCE_LOG_LEVEL", "WARNING")
    phases = set(args.phases.split(","))
    cluster.start()
    try:
        settings = {"limits": {"max_members_per_request": 200}}
        processes, maxconn = proxy_tier(args.idle_devices + args.devices + 2000, args)
        print(
            f"proxy tier: {processes} HAProxy process(es) on one address, maxconn {maxconn} each "
            f"(hard RLIMIT_NOFILE {resource.getrlimit(resource.RLIMIT_NOFILE)[1]})",
            flush=True,
        )
        async with Fleet(
            root,
            cluster.create_database("fleet"),
            users=[{"id": "caller"}],
            maxconn=maxconn,
            proxy_processes=processes,
            **settings,
        ) as fleet:
            out: dict[str, Any] = {}

            async def phase(name: str, job: Any) -> None:
                """Run one phase; one that fails is reported as failed and the next runs."""
                try:
                    out[name] = await job
                except Exception as err:
                    out.setdefault("failed", {})[name] = f"{type(err).__name__}: {err}"[:300]
                    print(f"{name} phase failed: {out['failed'][name]}", flush=True)
                    return
                if name != "fanout":
                    print(f"{name} phase:", json.dumps(out[name]), flush=True)

            if "fanout" in phases:
                await phase("fanout", fanout(fleet, 100, args.ring_rounds, 25))
                fan = out.get("fanout")
                if fan and fan["all"]:
                    print(
                        f"fan-out: n={len(fan['all'])} p50 {statistics.median(fan['all']):.1f} "
                        f"p99 {_pct(fan['all'], 99):.1f} ms",
                        flush=True,
                    )
            if phases & {"kill", "rolling"}:
                started = time.monotonic()
                devices = await Devices.connect(fleet, [f"d{i:05d}" for i in range(args.devices)])
                out["connect_s"] = time.monotonic() - started
                print(f"{args.devices} devices connected in {out['connect_s']:.1f} s", flush=True)
                try:
                    if "kill" in phases:
                        await phase("kill", kill_phase(fleet, devices))
                    if "rolling" in phases:
                        await phase("rolling", rolling_phase(fleet, devices))
                finally:
                    await devices.aclose()
            if "scale" in phases:
                # Paced new connections for the reconnect storm (deploy/haproxy.cfg
                # APPLIANCE_SESSION_RATE); not in the phases before: a 333-device kill -9
                # reconnect would be paced too.
                assert fleet.proxy is not None
                if args.proxy_session_rate:
                    fleet.proxy.session_rate = -(-args.proxy_session_rate // processes)
                    await fleet.proxy.restart()
                print(
                    f"proxy for the scale phase: new connections a second "
                    f"{args.proxy_session_rate or 'unlimited'}",
                    flush=True,
                )
                await phase(
                    "scale", scale_phase(fleet, args.idle_devices, args.devices_per_process)
                )
            return out
    finally:
        cluster.stop()


def _ms(values: list[float], q: int) -> str:
    return f"{_pct(values, q):.0f}" if values else "-"


def _pairs(phase: dict[str, Any]) -> dict[str, list[str]]:
    """The (first few) pairs that lost or doubled a ring or a call.missed, by what."""
    out = {}
    for what in ("ring", "missed"):
        for how in ("lost", "duplicated"):
            named = phase[what][f"{how}_pairs"]
            if named:
                out[f"{what}_{how}"] = named
    return out


def _pair_rows(label: str, phase: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = [
        (f"  {label}: {what.replace('_', ' ')}", pair, "")
        for what, pairs in _pairs(phase).items()
        for pair in pairs
    ]
    if phase["timed_out"]:
        rows.append((f"  {label}: timed out waiting for", ", ".join(phase["timed_out"]), "60 s"))
    return rows


def report(args: argparse.Namespace, r: dict[str, Any]) -> dict[str, Any]:
    rows: list[tuple[str, str, str]] = []
    figures: dict[str, Any] = {}
    for name, err in r.get("failed", {}).items():
        rows.append((f"{name} phase FAILED", "-", err[:120]))
    figures["failed_phases"] = sorted(r.get("failed", {}))
    fan = r.get("fanout")
    if fan is not None and fan["all"]:
        every = fan["all"]
        rows += [
            (
                "ring fan-out to 100 devices over 3 replicas",
                f"p50 {statistics.median(every):.1f} ms  p99 {_pct(every, 99):.1f} ms",
                f"n={len(every)}, target p99 ≤ 150",
            ),
            (
                "  create+ring request (HTTP answer)",
                f"p50 {_ms(fan['request'], 50)} ms  p99 {_ms(fan['request'], 99)} ms",
                "on PostgreSQL (issue 14 item 1)",
            ),
            (
                "  devices on the replica that served it",
                f"p50 {_ms(fan['local'], 50)} ms  p99 {_ms(fan['local'], 99)} ms",
                "no NOTIFY on the way",
            ),
            (
                "  devices on the two other replicas",
                f"p50 {_ms(fan['remote'], 50)} ms  p99 {_ms(fan['remote'], 99)} ms",
                f"NOTIFY lag mean {fan['notify_lag_mean_ms']:.1f} ms",
            ),
            (
                "  load generators' longest GC pause in a round",
                f"max {max(fan['gc'], default=0):.0f} ms",
                f"rounds with one ≥ 50 ms: {sum(ms >= 50 for ms in fan['gc'])} of {len(fan['gc'])}",
            ),
        ]
        figures.update(
            fleet_loadgen_gc_pause_max_ms=round(max(fan["gc"], default=0.0), 1),
            fleet_ring_fanout_p50_ms=round(statistics.median(every), 2) if every else None,
            fleet_ring_fanout_p99_ms=round(_pct(every, 99), 2) if every else None,
            fleet_ring_request_p99_ms=round(_pct(fan["request"], 99), 2),
            fleet_ring_fanout_local_p99_ms=round(_pct(fan["local"], 99), 2),
            fleet_ring_fanout_remote_p99_ms=round(_pct(fan["remote"], 99), 2),
            fleet_notify_lag_mean_ms=round(fan["notify_lag_mean_ms"], 2),
        )
    kill = r.get("kill")
    if kill is not None:
        rows += [
            ("devices connected (kill, rolling)", f"{args.devices}", f"in {r['connect_s']:.1f} s"),
            (
                "kill -9: devices cut off / reconnected",
                f"{kill['cut_off']} / {kill['reconnected']}",
                f"p50 {kill['reconnect_p50_s']:.2f} s  p99 {kill['reconnect_p99_s']:.2f} s (≤ 5)",
            ),
            (
                "kill -9: rings (callee pairs) lost / duplicated",
                f"{kill['ring']['lost']} / {kill['ring']['duplicated']}",
                f"{kill['rings']} rings, {kill['ring']['pairs']} pairs, "
                f"{kill['create_failures']} creates failed",
            ),
            (
                "kill -9: deadlines (call.missed) lost / twice",
                f"{kill['missed']['lost']} / {kill['missed']['duplicated']}",
                "each callee's stored deadline must fire once",
            ),
            *_pair_rows("kill -9", kill),
        ]
        figures.update(
            fleet_reconnect_p99_s=round(kill["reconnect_p99_s"], 3),
            fleet_rings_lost=kill["ring"]["lost"],
            fleet_rings_duplicated=kill["ring"]["duplicated"],
            fleet_deadlines_lost=kill["missed"]["lost"],
            fleet_deadlines_duplicated=kill["missed"]["duplicated"],
            fleet_kill_timed_out=kill["timed_out"],
            fleet_kill_pairs=_pairs(kill),
        )
    rolling = r.get("rolling")
    if rolling is not None:
        rows += [
            (
                "rolling restart: rings lost / duplicated",
                f"{rolling['ring']['lost']} / {rolling['ring']['duplicated']}",
                f"{rolling['rings']} rings in {rolling['seconds']:.1f} s",
            ),
            (
                "rolling restart: call.missed lost / twice",
                f"{rolling['missed']['lost']} / {rolling['missed']['duplicated']}",
                f"{rolling['create_failures']} creates failed",
            ),
            *_pair_rows("rolling restart", rolling),
        ]
        figures.update(
            fleet_rolling_restart_rings_lost=rolling["ring"]["lost"],
            fleet_rolling_restart_rings_duplicated=rolling["ring"]["duplicated"],
            fleet_rolling_restart_missed_lost=rolling["missed"]["lost"],
            fleet_rolling_restart_missed_duplicated=rolling["missed"]["duplicated"],
            fleet_rolling_restart_timed_out=rolling["timed_out"],
            fleet_rolling_restart_pairs=_pairs(rolling),
        )
    scale = r.get("scale")
    if scale is not None:
        rows += [
            (
                "idle devices connected",
                f"{scale['devices']} of {scale['wanted']}",
                f"in {scale['connect_s']:.0f} s, {args.devices_per_process} per load process",
            ),
            (
                "  through HAProxy processes on one address",
                " ".join(str(x) for x in scale["proxy_sessions"]),
                f"sessions each at idle; Hard_maxconn {scale['proxy_hard_maxconn']}",
            ),
            ("RSS per replica (MB)", " ".join(f"{x:.0f}" for x in scale["rss_mb"]), "at idle"),
            (
                "CPU per replica at idle (%)",
                " ".join(f"{x:.1f}" for x in scale["idle_cpu_pct"]),
                f"load generators {scale['loadgen_cpu_pct']:.0f} % (30 s)",
            ),
            (
                "HAProxy restart: all devices back"
                if scale["reconnected"] == scale["cut"]
                else "HAProxy restart: NOT all back; the last of those",
                f"{scale['reconnect_all_s']:.1f} s",
                f"{scale['reconnected']} of {scale['cut']} cut reconnected, "
                f"p50 {scale['reconnect_p50_s']:.1f} s p99 {scale['reconnect_p99_s']:.1f} s",
            ),
            (
                "  failed attempts on the way back",
                f"{sum(scale['reconnect_failures'].values())}",
                ", ".join(f"{k} {v}" for k, v in scale["reconnect_failures"].items()),
            ),
            (
                "  CPU seconds until all back: replicas / load gen / HAProxy",
                "{replicas:.0f} / {load_generators:.0f} / {haproxy:.0f}".format(
                    **scale["storm_cpu_s"]
                ),
                f"machine {scale['storm_cpu_s']['machine_busy']:.0f} of "
                f"{scale['storm_cpu_s']['machine_total']:.0f} CPU-s busy (all processes)",
            ),
            (
                "  backoff sleeps begun, per device",
                f"{scale['reconnect_backoff_s_per_device']:.1f} s",
                "after the cut, summed",
            ),
        ]
        rows.append(
            (
                "  close hooks failed / replicas marked down",
                f"{scale['close_hook_failures']} / {scale['replicas_marked_down']}",
                f"{scale['database_check_failures']} /healthz database checks failed, "
                f"{scale['close_batches_failed']} close batches failed",
            )
        )
        figures.update(
            fleet_close_hook_failures=scale["close_hook_failures"],
            fleet_replicas_marked_down=scale["replicas_marked_down"],
            fleet_idle_devices=scale["devices"],
            fleet_rss_per_replica_mb=[round(x, 1) for x in scale["rss_mb"]],
            fleet_idle_cpu_pct_per_replica=[round(x, 2) for x in scale["idle_cpu_pct"]],
            fleet_reconnect_all_after_proxy_restart_s=round(scale["reconnect_all_s"], 2)
            if scale["reconnected"] == scale["cut"]
            else None,
            fleet_reconnected_after_proxy_restart=[scale["reconnected"], scale["cut"]],
            fleet_reconnect_last_after_proxy_restart_s=round(scale["reconnect_all_s"], 2),
            fleet_reconnect_after_proxy_restart_p99_s=round(scale["reconnect_p99_s"], 2),
            fleet_reconnect_after_proxy_restart_p50_s=round(scale["reconnect_p50_s"], 2),
            fleet_reconnect_failed_attempts=scale["reconnect_failures"],
            fleet_reconnect_storm_cpu_s={k: round(v, 1) for k, v in scale["storm_cpu_s"].items()},
            fleet_proxy_processes=scale["proxy_processes"],
            fleet_proxy_sessions_per_process=scale["proxy_sessions"],
        )
    print()
    for name, value, note in rows:
        print(f"{name:<50}{value:>28}  {note}")
    figures["fleet_devices_in_failure_phases"] = args.devices if kill or rolling else 0
    figures["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    return figures


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000, help="devices in phases 1-4")
    parser.add_argument("--idle-devices", type=int, default=10_000, help="devices in phase 5")
    parser.add_argument("--ring-rounds", type=int, default=20)
    parser.add_argument(
        "--devices-per-process", type=int, default=2500, help="idle devices per load process"
    )
    parser.add_argument(
        "--phases", default="fanout,kill,rolling,scale", help="comma-separated subset to run"
    )
    parser.add_argument(
        "--proxy-processes",
        type=int,
        default=0,
        help="HAProxy processes on the one address (0: as many as the descriptor limit needs)",
    )
    parser.add_argument(
        "--proxy-session-rate",
        type=int,
        default=60,
        help="scale phase: new connections a second the proxy tier accepts, over all its "
        "processes (APPLIANCE_SESSION_RATE; 0: no limit)",
    )
    args = parser.parse_args()
    # Replicas and HAProxy inherit it: each replica holds a descriptor per device it serves.
    _raise_nofile(max(args.devices, args.idle_devices) * 2 + 4096)
    # A SIGTERM (timeout, CI) unwinds like Ctrl-C: replicas, HAProxy and PostgreSQL are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="appliance-fleet-") as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(report(args, results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
