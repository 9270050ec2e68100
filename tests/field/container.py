"""A booted Debian root: systemd as PID 1 under systemd-nspawn, driven through nsenter.

The host here is not itself run by systemd, so nspawn cannot register the machine or make a
scope: ``--register=no --keep-unit``. There is then no ``machinectl shell``; commands run inside
with ``nsenter -t <the container's PID 1> -a``. The container gets its own network namespace
(``--private-network``: loopback only), so its servers never meet the host's ports; the host's
own Python can still talk to them by entering just that namespace (:meth:`Container.host_in_net`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ContainerError(AssertionError):
    pass


class Container:
    def __init__(
        self,
        root: Path,
        *,
        binds_ro: dict[Path, str] | None = None,
        log: Path,
        name: str = "appliance-field",
        private_network: bool = True,
    ) -> None:
        self.root = root
        self.binds_ro = binds_ro or {}
        self.log = log
        self.name = name
        self.private_network = private_network
        self._nspawn: subprocess.Popen[bytes] | None = None
        self.pid1 = 0
        self.booted_at = 0.0

    # ----------------------------------------------------------------------- life cycle

    def boot(self, timeout: float = 180) -> float:
        """Boot and wait until systemd finished starting up; returns the monotonic boot start."""
        cmd = [
            "systemd-nspawn",
            "--quiet",
            "--boot",
            "--register=no",
            "--keep-unit",
            f"--machine={self.name}",
            f"--directory={self.root}",
        ]
        if self.private_network:
            cmd.append("--private-network")
        for host, inside in self.binds_ro.items():
            cmd.append(f"--bind-ro={host}:{inside}")
        self.booted_at = time.monotonic()
        out = self.log.open("ab")
        self._nspawn = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
        out.close()
        self.pid1 = self._wait_pid1(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
            if state in ("running", "degraded"):
                return self.booted_at
            self._alive()
            time.sleep(0.2)
        raise ContainerError(f"the container did not finish booting: {state}")

    def _wait_pid1(self, timeout: float) -> int:
        assert self._nspawn is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._alive()
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                # pid (comm) state ppid ...
                comm = stat[stat.index("(") + 1 : stat.rindex(")")]
                ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
                if ppid == self._nspawn.pid and comm == "systemd":
                    return int(entry.name)
            time.sleep(0.05)
        raise ContainerError("systemd did not start in the container")

    def _alive(self) -> None:
        assert self._nspawn is not None
        if self._nspawn.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise ContainerError(f"systemd-nspawn exited {self._nspawn.returncode}:\n{tail}")

    def power_cut(self) -> None:
        """Kill the container at once, as a power cut would (no shutdown, no sync by us)."""
        if self._nspawn is None:
            return
        self._nspawn.send_signal(signal.SIGKILL)
        self._nspawn.wait(30)
        # nspawn's SIGKILL leaves the container's processes: kill what is left in its PID ns.
        if self.pid1:
            subprocess.run(["kill", "-9", str(self.pid1)], capture_output=True)
            deadline = time.monotonic() + 30
            while Path(f"/proc/{self.pid1}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        self._nspawn = None
        self.pid1 = 0

    def shutdown(self, timeout: float = 60) -> None:
        """A clean poweroff (nspawn turns SIGTERM into the container's halt)."""
        if self._nspawn is None:
            return
        self._nspawn.terminate()
        try:
            self._nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            self.power_cut()
            return
        self._nspawn = None
        self.pid1 = 0

    # ---------------------------------------------------------------------- commands

    def run(
        self,
        cmd: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the container (all its namespaces, its root, a clean env)."""
        environ = {"PATH": PATH, "LANG": "C.UTF-8", "HOME": "/root", **(env or {})}
        full = [
            "nsenter",
            "-t",
            str(self.pid1),
            "-a",
            "--",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in environ.items()),
            *cmd,
        ]
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise ContainerError(
                f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-4000:]}\n"
                f"{done.stderr[-4000:]}"
            )
        return done

    def sh(self, script: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run(["bash", "-c", script], **kw)  # type: ignore[arg-type]

    def host_in_net(self, cmd: Sequence[str]) -> list[str]:
        """A host command line that runs in the container's network namespace only."""
        return ["nsenter", "-t", str(self.pid1), "-n", "--", *cmd]

    # ---------------------------------------------------------------------- systemd

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run(["systemctl", "show", unit, "-p", ",".join(props)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_unit(
        self, unit: str, want: str = "active", *, timeout: float = 120, not_pid: str = ""
    ) -> float:
        """Wait until ``unit`` is ``want`` (for Type=notify, ``active`` means READY=1 came) and,
        with ``not_pid``, its main PID is another one; returns the monotonic time it was seen."""
        deadline = time.monotonic() + timeout
        state: dict[str, str] = {}
        while time.monotonic() < deadline:
            state = self.show(unit, "ActiveState", "SubState", "MainPID", "Result")
            if state.get("ActiveState") == want and (
                not not_pid or state.get("MainPID") not in (not_pid, "0")
            ):
                return time.monotonic()
            time.sleep(0.05)
        journal = self.run(["journalctl", "-u", unit, "-n", "40", "--no-pager"], check=False)
        raise ContainerError(f"{unit} is {state}, not {want}:\n{journal.stdout}")


def copy_root(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    subprocess.run(["cp", "-a", "--reflink=auto", str(source), str(target)], check=True)
    (target / ".complete").unlink(missing_ok=True)


def have_tools() -> list[str]:
    tools = ("systemd-nspawn", "debootstrap", "nsenter")
    missing = [t for t in tools if shutil.which(t) is None]
    if os.geteuid() != 0:
        missing.append("root")
    return missing
