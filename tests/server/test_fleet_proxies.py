"""The proxy tier as several HAProxy processes on one address (``SO_REUSEPORT``): how
bench/fleet.py holds 10,000 devices where one process's descriptor limit allows fewer. Devices
still know one address; the kernel spreads their sockets over the processes; the stats API
(``HAProxy.states``/``wait_up``, used by the rolling restart) speaks for all of them, and a proxy
restart restarts all of them and the devices come back. Each process applies the configured
rate of new connections (``APPLIANCE_SESSION_RATE``).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.fleet import Devices, Fleet, HAProxy
from tests.support.pgcluster import PostgresCluster
from tests.support.poll import until

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

DEVICES = 24


async def test_two_proxy_processes_on_one_address(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    url = postgres.create_database("f" + uuid.uuid4().hex[:10])
    async with Fleet(tmp_path, url, proxy_processes=2, proxy_session_rate=500) as fleet:
        proxy = fleet.proxy
        assert proxy is not None
        infos = await proxy.info()
        assert len({i["Pid"] for i in infos}) == 2, infos
        # Each process accepts at most this many new connections a second (a storm waits in
        # the kernel's listen queue instead of overloading the replicas).
        assert await proxy.frontend("rate_lim") == ["500", "500"]
        # and keeps a listen queue of ~3 s of that rate (a deeper one held connections whose
        # devices had given up long before they were accepted).
        assert _backlogs(proxy.port) == [1500, 1500]
        for server in ("r1", "r2", "r3"):  # "UP 1/3" at start: UP, no check passed yet
            await proxy.wait_up(server)
        devices = await Devices.connect(fleet, [f"p{i:02d}" for i in range(DEVICES)])
        try:
            # Each device's WebSocket is a session on one of the two processes, and both
            # carry some (the kernel's hash: all 24 on one has odds of 2 in 2**24).
            await until(lambda: all(d.connected for d in devices.all), within=30)
            sessions = await proxy.sessions()
            assert len(sessions) == 2 and min(sessions) > 0, sessions
            assert sum(sessions) >= DEVICES, sessions
            # A replica's state is every process's: the rolling restart waits on it.
            await fleet.replicas[1].kill()
            await until(lambda: _down(proxy, "r2"), within=30, every=0.1)
            await fleet.replicas[1].start()
            await proxy.wait_up("r2", within=30)
            # Restarting the proxy restarts both processes; every device comes back.
            pids = proxy.pids
            cut_at = time.monotonic()
            await proxy.restart()
            assert len(proxy.pids) == 2 and not set(pids) & set(proxy.pids)
            await until(lambda: devices.all_back(cut_at), within=60)
            assert len(devices.cut_off(cut_at)) == DEVICES
        finally:
            await devices.aclose()


async def _down(proxy: HAProxy, server: str) -> bool:
    """No process has ``server`` in rotation."""
    return "UP" not in (await proxy.states())[server]


def _backlogs(port: int) -> list[int]:
    """The listen queue length (``ss`` Send-Q) of each socket listening on ``port``."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return [int(line.split()[2]) for line in out.splitlines() if line.strip()]
