"""Fleet benchmark: PostgreSQL + three ``appliance serve`` replicas + HAProxy (``deploy/haproxy.cfg``),
devices that know only the proxy's address, each a real ``appliance.client.Client`` (jittered
backoff, ring ledger, resync), all in this one process.

1. connect ``--devices`` devices (spread by the proxy over the replicas);
2. ring fan-out: ``create`` with ``ring`` to 100 of them → ``call.ring`` seen by each device's
   application, p50/p99 over ``--ring-rounds`` rounds;
3. ``kill -9`` one replica while rings go on (groups of 10, one every 0.2 s, 6 s callee deadline):
   reconnect time of each device that was cut off (p99), then per ring and callee how many times
   the application saw ``call.ring`` (0 = lost, 2+ = duplicated) and ``call.missed`` (the stored
   deadline: must be exactly 1);
4. rolling restart (SIGTERM one replica at a time, each back on /healthz before the next) with
   rings going on: rings and missed-call events lost;
5. scale: connect up to ``--idle-devices`` in all, RSS and CPU of each replica at idle (10 s),
   then restart HAProxy (every connection cut) and time until every device is back.

Prints a table; the last line is one JSON object. Targets (issue #14): reconnect p99 ≤ 5 s, no ring
lost or duplicated, fan-out p99 ≤ 150 ms. Nothing here asserts: it measures.

    .venv/bin/python bench/fleet.py [--devices 1000] [--idle-devices 10000] [--ring-rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
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
TICKS = os.sysconf("SC_CLK_TCK")


async def ring(http: Any, callees: list[str], callee_ms: int) -> tuple[RingKey, float]:
    started = time.monotonic()
    return await start_ring(http, ring_body(callees, callee_ms, 120_000)), started


async def within(predicate: Callable[[], bool], seconds: float) -> None:
    """Until ``predicate()`` holds or ``seconds`` pass (what did not happen is then counted)."""
    with contextlib.suppress(TimeoutError):
        await until(predicate, within=seconds)


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

    def counts(self, what: str) -> dict[str, int]:
        lost = dup = 0
        for key, callees in self.rings.items():
            for u in callees:
                n = getattr(self.devices.by_user[u], what)[key]
                lost += n == 0
                dup += n > 1
        return {"lost": lost, "duplicated": dup, "pairs": len(self.rings) * GROUP}

    async def settle(self, seconds: float) -> None:
        """Until every callee of every ring saw its missed call (or ``within`` s)."""
        await within(lambda: self.counts("missed")["lost"] == 0, seconds)


async def fanout(fleet: Fleet, devices: Devices, members: int, rounds: int) -> list[float]:
    chosen = [d.user_id for d in devices.all[:: max(1, len(devices.all) // members)]][:members]
    arrivals: dict[RingKey, dict[str, float]] = {}

    def seen(user_id: str) -> Any:
        def on(event: Any) -> None:
            sid = event.session_id or event.call_session_id
            if event.cid and sid:
                arrivals.setdefault((event.cid, sid), {}).setdefault(user_id, time.monotonic())

        return on

    removers = [devices.by_user[u].client.on("call.ring", seen(u)) for u in chosen]
    latencies: list[float] = []
    try:
        async with fleet.http() as http:
            for n in range(rounds + 1):
                key, started = await ring(http, chosen, 60_000)
                await within(lambda k=key: len(arrivals.get(k, {})) >= len(chosen), 10)
                if n:  # round 0 warms the replicas' statement caches
                    latencies.extend((t - started) * 1000 for t in arrivals.get(key, {}).values())
                cid_type, cid_id = key[0].split(":", 1)
                await http.post(f"/api/v2/video/call/{cid_type}/{cid_id}/mark_ended", json={})
                await asyncio.sleep(0.3)
    finally:
        for remove in removers:
            remove()
    return latencies


def _proc_status(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


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
    await within(lambda: devices.all_back(killed_at), 60)
    times = devices.reconnect_times(killed_at)
    cut = len(devices.cut_off(killed_at))
    await ringing.settle(60)
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
    }


async def rolling_phase(fleet: Fleet, devices: Devices) -> dict[str, Any]:
    ringing = Ringing(fleet, devices, every=0.3)
    task = asyncio.create_task(ringing.run())
    started = time.monotonic()
    await fleet.rolling_restart()
    took = time.monotonic() - started
    ringing.stop()
    await task
    await ringing.settle(60)
    return {
        "seconds": took,
        "rings": len(ringing.rings),
        "ring": ringing.counts("rings"),
        "missed": ringing.counts("missed"),
        "create_failures": ringing.failed,
    }


async def scale_phase(fleet: Fleet, devices: Devices, total: int) -> dict[str, Any]:
    more = [f"i{i:05d}" for i in range(total - len(devices.all))]
    started = time.monotonic()
    extra = await Devices.connect(fleet, more, parallel=50, wait=False) if more else None
    connect_s = time.monotonic() - started
    if extra is not None:
        devices.absorb(extra)
    await asyncio.sleep(5)  # idle: let allocations settle
    procs = [srv._proc for srv in fleet.replicas]
    pids = [p.pid for p in procs if p is not None]
    rss = [_proc_status(pid, "VmRSS") for pid in pids]
    cpu0 = [_cpu_seconds(pid) for pid in pids]
    mine0 = time.process_time()
    await asyncio.sleep(10)
    cpu = [(_cpu_seconds(pid) - c) / 10 * 100 for pid, c in zip(pids, cpu0, strict=True)]
    load_cpu = (time.process_time() - mine0) / 10 * 100
    assert fleet.proxy is not None
    cut_at = time.monotonic()
    await fleet.proxy.restart()
    await within(lambda: devices.all_back(cut_at), 300)
    back = devices.reconnect_times(cut_at)
    return {
        "devices": len(devices.all),
        "connect_s": connect_s,
        "rss_mb": rss,
        "idle_cpu_pct": cpu,
        "loadgen_cpu_pct": load_cpu,
        "reconnect_all_s": max(back) if back else float("nan"),
        "reconnect_p99_s": _pct(back, 99),
        "reconnected": len(back),
    }


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    cluster = PostgresCluster.find()
    if cluster is None:
        raise SystemExit("PostgreSQL server binaries are not installed")
    os.environ.setdefault("APPLIANCE_LOG_LEVEL", "WARNING")
    cluster.start()
    try:
        settings = {"limits": {"max_members_per_request": 200}}
        maxconn = args.idle_devices + 2000
        async with Fleet(
            root,
            cluster.create_database("fleet"),
            users=[{"id": "caller"}],
            maxconn=maxconn,
            **settings,
        ) as fleet:
            started = time.monotonic()
            devices = await Devices.connect(fleet, [f"d{i:05d}" for i in range(args.devices)])
            out: dict[str, Any] = {"connect_s": time.monotonic() - started}
            try:
                print(f"{args.devices} devices connected in {out['connect_s']:.1f} s", flush=True)
                out["fanout"] = await fanout(fleet, devices, 100, args.ring_rounds)
                fan = out["fanout"]
                print(f"fan-out: n={len(fan)} p99 {_pct(fan, 99):.1f} ms", flush=True)
                out["kill"] = await kill_phase(fleet, devices)
                print("kill -9 phase:", json.dumps(out["kill"]), flush=True)
                out["rolling"] = await rolling_phase(fleet, devices)
                print("rolling restart:", json.dumps(out["rolling"]), flush=True)
                out["scale"] = await scale_phase(fleet, devices, args.idle_devices)
            finally:
                await devices.aclose()
            return out
    finally:
        cluster.stop()


def report(args: argparse.Namespace, r: dict[str, Any]) -> dict[str, Any]:
    kill, rolling, scale, fan = r["kill"], r["rolling"], r["scale"], r["fanout"]
    rows = [
        ("devices connected (phases 1-4)", f"{args.devices}", f"in {r['connect_s']:.1f} s"),
        (
            "ring fan-out to 100 devices over 3 replicas",
            f"p50 {statistics.median(fan):.1f} ms  p99 {_pct(fan, 99):.1f} ms",
            f"n={len(fan)}, target p99 ≤ 150",
        ),
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
        (
            "idle devices connected",
            f"{scale['devices']}",
            f"extra ones connected in {scale['connect_s']:.1f} s",
        ),
        (
            "RSS per replica (MB)",
            " ".join(f"{x:.0f}" for x in scale["rss_mb"]),
            "at idle",
        ),
        (
            "CPU per replica at idle (%)",
            " ".join(f"{x:.1f}" for x in scale["idle_cpu_pct"]),
            f"load generator {scale['loadgen_cpu_pct']:.0f} %",
        ),
        (
            "HAProxy restart: all devices back",
            f"{scale['reconnect_all_s']:.1f} s",
            f"{scale['reconnected']} reconnected, p99 {scale['reconnect_p99_s']:.1f} s",
        ),
    ]
    print()
    for name, value, note in rows:
        print(f"{name:<50}{value:>28}  {note}")
    figures = {
        "fleet_reconnect_p99_s": round(kill["reconnect_p99_s"], 3),
        "fleet_rings_lost": kill["ring"]["lost"],
        "fleet_rings_duplicated": kill["ring"]["duplicated"],
        "fleet_deadlines_lost": kill["missed"]["lost"],
        "fleet_deadlines_duplicated": kill["missed"]["duplicated"],
        "fleet_rolling_restart_rings_lost": rolling["ring"]["lost"],
        "fleet_rolling_restart_rings_duplicated": rolling["ring"]["duplicated"],
        "fleet_rolling_restart_missed_lost": rolling["missed"]["lost"],
        "fleet_ring_fanout_p50_ms": round(statistics.median(fan), 2) if fan else None,
        "fleet_ring_fanout_p99_ms": round(_pct(fan, 99), 2) if fan else None,
        "fleet_idle_devices": scale["devices"],
        "fleet_rss_per_replica_mb": [round(x, 1) for x in scale["rss_mb"]],
        "fleet_idle_cpu_pct_per_replica": [round(x, 2) for x in scale["idle_cpu_pct"]],
        "fleet_reconnect_all_after_proxy_restart_s": round(scale["reconnect_all_s"], 2),
        "fleet_devices_in_failure_phases": args.devices,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    return figures


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000, help="devices in phases 1-4")
    parser.add_argument("--idle-devices", type=int, default=10_000, help="devices in phase 5")
    parser.add_argument("--ring-rounds", type=int, default=10)
    args = parser.parse_args()
    args.idle_devices = max(args.idle_devices, args.devices)
    _raise_nofile(args.idle_devices * 2 + 2048)
    # A SIGTERM (timeout, CI) unwinds like Ctrl-C: replicas, HAProxy and PostgreSQL are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="appliance-fleet-") as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(report(args, results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
