"""Network conditions inside a namespace: nftables loss and blocks, a tbf cap, coturn.

Built on :mod:`tests.support.netns` (root, ``ip netns``). What this kernel has: nftables in a
namespace and ``tc`` tbf/htb; no netem (no delay, no jitter).

::

    with veth_pair() as net:
        rules = Firewall(net.b)                     # table ``inet appliance`` in namespace b
        rules.loss(5)                               # 5 % of UDP dropped, in and out
        rules.block_udp_except("10.99.0.3", 3478)   # only UDP to/from that address:port passes
        rules.drop_all(); rules.restore()           # an outage, then back to the rules above
        rules.counter("blocked")                    # packets a named rule dropped
        cap(net.a, "veth-a", "1mbit")               # tbf on a's uplink; uncap(...) removes it
        with coturn(net.a, "10.99.0.3", secret) as turn:   # TURN on UDP/TCP 3478, TLS 5349
            turn.urls("udp") ...

Rules are replaced as a whole (``nft -f``), so adding and removing an outage is one atomic step.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.netns import Namespace

TABLE = "appliance"


def netcond_unavailable() -> str | None:
    """Why nft/tc/coturn are missing, or None (the netns checks come on top)."""
    for tool in ("nft", "tc", "turnserver", "openssl"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (make system-deps installs nftables and coturn)"
    return None


class Firewall:
    """The namespace's own nftables table: loss, a UDP block and a drop-all outage, with counters."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self._loss = 0
        self._allow: tuple[str, int] | None = None
        self._block_udp = False
        self._outage = False
        self._apply()

    def loss(self, percent: int) -> None:
        """Drop ``percent`` % of UDP packets at random, each way (0 removes it)."""
        self._loss = percent
        self._apply()

    def block_udp_except(self, address: str | None = None, port: int = 0) -> None:
        """Drop every UDP packet except those to/from ``address:port`` (None: all UDP)."""
        self._block_udp = True
        self._allow = (address, port) if address else None
        self._apply()

    def drop_all(self) -> None:
        """An outage: every packet in or out of the namespace's link is dropped (not refused)."""
        self._outage = True
        self._apply()

    def restore(self) -> None:
        self._outage = False
        self._apply()

    def counter(self, name: str) -> int:
        """Packets the rule with comment ``name`` matched so far (0 when it is not there)."""
        listed = self.ns.run(["nft", "list", "table", "inet", TABLE])
        total = 0
        for line in listed.stdout.splitlines():
            if f'comment "{name}"' in line:
                found = re.search(r"packets (\d+)", line)
                total += int(found.group(1)) if found else 0
        return total

    def _apply(self) -> None:
        rules: list[str] = []
        if self._outage:
            rules.append('iifname != "lo" counter drop comment "outage"')
        if self._loss:
            rules.append(
                f'meta l4proto udp numgen random mod 100 < {self._loss} counter drop comment "loss"'
            )
        if self._block_udp:
            if self._allow is not None:
                address, port = self._allow
                rules.append(f'ip daddr {address} udp dport {port} counter accept comment "relay"')
                rules.append(f'ip saddr {address} udp sport {port} counter accept comment "relay"')
            rules.append('iifname != "lo" meta l4proto udp counter drop comment "blocked"')
        body = "\n".join(f"    {r}" for r in rules)
        out_rules = "\n".join(f"    {r.replace('iifname', 'oifname')}" for r in rules)
        script = (
            f"table inet {TABLE} {{}}\n"
            f"delete table inet {TABLE}\n"
            f"table inet {TABLE} {{\n"
            f"  chain input {{\n    type filter hook input priority 0; policy accept;\n{body}\n  }}\n"
            f"  chain output {{\n    type filter hook output priority 0; policy accept;\n"
            f"{out_rules}\n  }}\n"
            "}\n"
        )
        done = subprocess.run(
            self.ns.command(["nft", "-f", "-"]), input=script, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"nft in {self.ns.name} failed: {done.stderr.strip()}\n{script}")


def cap(ns: Namespace, device: str, rate: str, *, burst: str = "32kbit") -> None:
    """A thin uplink: tbf on ``device``'s egress (a queue of up to 200 ms, then drops)."""
    done = ns.run(
        ["tc", "qdisc", "replace", "dev", device, "root", "tbf", "rate", rate,
         "burst", burst, "latency", "200ms"]
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"tc in {ns.name} failed: {done.stderr.strip()}")


def uncap(ns: Namespace, device: str) -> None:
    ns.run(["tc", "qdisc", "del", "dev", device, "root"])


def add_address(ns: Namespace, address: str) -> None:
    """A second address on the namespace's veth (for a TURN server of its own)."""
    done = ns.run(["ip", "addr", "add", f"{address}/{ns.prefix}", "dev", ns.interface])
    if done.returncode != 0:
        raise RuntimeError(f"ip addr add in {ns.name} failed: {done.stderr.strip()}")


@dataclass
class Turn:
    address: str
    port: int
    tls_port: int
    secret: str
    cert: Path
    log: Path

    def url(self, transport: str) -> str:
        """``udp``, ``tcp`` or ``tls`` (TURN over TLS, ``turns:``)."""
        if transport == "tls":
            return f"turns:{self.address}:{self.tls_port}?transport=tcp"
        return f"turn:{self.address}:{self.port}?transport={transport}"

    def relay_ports(self, ns: Namespace) -> set[int]:
        """The UDP ports of coturn's current allocations (relayed addresses) in ``ns``."""
        listed = ns.run(["ss", "-Hun", "state", "all"]).stdout
        found = re.findall(rf"{re.escape(self.address)}:(\d+)\s", listed)
        return {int(p) for p in found if 50000 <= int(p) <= 50999}

    def ice_server(self, transport: str) -> dict[str, object]:
        """The server's ``ice_servers`` entry (it mints the use-auth-secret credentials)."""
        return {"urls": [self.url(transport)], "secret": self.secret}


def self_signed(folder: Path, address: str) -> tuple[Path, Path]:
    cert, key = folder / "turn.crt", folder / "turn.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=turn.test", "-addext",
         f"subjectAltName=IP:{address}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@contextlib.contextmanager
def coturn(ns: Namespace, address: str, secret: str, folder: Path) -> Iterator[Turn]:
    """Debian's coturn in ``ns`` on ``address``: UDP/TCP 3478, TLS 5349, ``use-auth-secret``."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed(folder, address)
    log = folder / "turnserver.log"
    argv = [
        "turnserver", "-n", "--no-cli", "--use-auth-secret", f"--static-auth-secret={secret}",
        "--realm=appliance.test", f"--listening-ip={address}", f"--relay-ip={address}",
        "--listening-port=3478", "--tls-listening-port=5349", "--min-port=50000",
        "--max-port=50999", f"--cert={cert}", f"--pkey={key}", "--no-dtls", "--fingerprint",
        "--no-multicast-peers", "--simple-log", f"--log-file={log}", "--pidfile=",
    ]  # fmt: skip
    process = ns.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    turn = Turn(address, 3478, 5349, secret, cert, log)
    try:
        _wait_listening(ns, address, (3478, 5349), process)
        yield turn
    finally:
        if process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)


def _wait_listening(
    ns: Namespace, address: str, ports: tuple[int, ...], process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"turnserver exited with {process.returncode}")
        listening = ns.run(["ss", "-Hltn"]).stdout
        if all(f"{address}:{port} " in listening for port in ports):
            return
        time.sleep(0.1)
    raise RuntimeError("turnserver did not start listening")
