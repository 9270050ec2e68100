"""Network namespaces for tests: two namespaces joined by a veth pair, a link to pull.

Needs root and ``ip netns`` (iproute2); otherwise :func:`netns_unavailable` gives the reason and the
fixture skips with it. No ``tc netem`` here (not in this kernel): faults are a link going down and
coming back.

::

    with veth_pair() as net:                       # or the ``netns_pair`` fixture
        net.a.address, net.b.address               # "10.99.0.1", "10.99.0.2"
        proc = net.b.popen([sys.executable, "-m", "some.module"])   # a process inside b
        async with net.a.loop() as side_a:         # an event loop on a thread inside a
            result = await side_a.run(some_coroutine())   # sockets it opens live in a
        net.link_down(); ...; net.link_up()        # both ends lose / regain carrier

Everything (processes started through ``popen``, loops, namespaces, the veth) is removed when
the context ends, also when the test fails. Interface and namespace names are unique per
process, so parallel test runs do not collide; addresses live inside the private namespaces.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import itertools
import os
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

__all__ = [
    "Namespace",
    "NamespaceLoop",
    "VethPair",
    "netns_pair",
    "netns_unavailable",
    "veth_pair",
]

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_NETNS_DIR = Path("/var/run/netns")
_counter = itertools.count(1)


def netns_unavailable() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespace tests need root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2 `ip` is not installed"
    probe = f"apl-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def _enter(name: str) -> None:
    """Move the calling thread into namespace ``name`` (setns is per thread)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(_NETNS_DIR / name, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


class NamespaceLoop:
    """An asyncio loop on a thread that lives in a namespace; sockets it opens are in there too.

    Objects made on it (peer connections, servers) belong to it: use them only from coroutines
    passed to :meth:`run` / :meth:`submit`.
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name=f"netns-loop:{namespace}")
        self._thread.start()
        self._ready.wait(10.0)
        if self._error is not None:
            raise RuntimeError(f"cannot start a loop in {namespace}") from self._error

    def _main(self) -> None:
        try:
            _enter(self.namespace)
            loop = asyncio.new_event_loop()
            loop.set_default_executor(
                concurrent.futures.ThreadPoolExecutor(
                    thread_name_prefix=f"netns-exec:{self.namespace}",
                    initializer=_enter,
                    initargs=(self.namespace,),
                )
            )
            self._loop = loop
        except BaseException as err:
            self._error = err
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` inside the namespace and await its result from the caller's loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def close(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10.0)

    def __repr__(self) -> str:
        return f"NamespaceLoop({self.namespace!r}, alive={self._thread.is_alive()})"


@dataclass
class Namespace:
    name: str
    interface: str
    address: str
    prefix: int = 24
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    _loops: list[NamespaceLoop] = field(default_factory=list, repr=False)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        return subprocess.run(self.command(argv), check=False, **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a process inside the namespace; it is killed when the pair is torn down."""
        process = subprocess.Popen(self.command(argv), **kwargs)
        self._processes.append(process)
        return process

    @contextlib.asynccontextmanager
    async def loop(self) -> AsyncIterator[NamespaceLoop]:
        ns_loop = NamespaceLoop(self.name)
        self._loops.append(ns_loop)
        try:
            yield ns_loop
        finally:
            await asyncio.get_running_loop().run_in_executor(None, ns_loop.close)

    def start_loop(self) -> NamespaceLoop:
        """Like :meth:`loop` for synchronous code; closed with the pair."""
        ns_loop = NamespaceLoop(self.name)
        self._loops.append(ns_loop)
        return ns_loop

    def _cleanup(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        for ns_loop in self._loops:
            ns_loop.close()


@dataclass
class VethPair:
    a: Namespace
    b: Namespace

    def link_down(self) -> None:
        """Take the link down (both ends lose carrier; packets are dropped, not refused)."""
        _ip("-n", self.a.name, "link", "set", self.a.interface, "down")

    def link_up(self) -> None:
        _ip("-n", self.a.name, "link", "set", self.a.interface, "up")

    def link_is_up(self) -> bool:
        shown = subprocess.run(
            ["ip", "-n", self.b.name, "-o", "link", "show", self.b.interface],
            capture_output=True,
            text=True,
        )
        return "LOWER_UP" in shown.stdout


@contextlib.contextmanager
def veth_pair(subnet: str = "10.99.0") -> Iterator[VethPair]:
    """Two fresh namespaces joined by a veth pair, ``{subnet}.1`` in a and ``{subnet}.2`` in b."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    tag = f"{os.getpid()}-{next(_counter)}"
    a = Namespace(f"apl-{tag}-a", "veth-a", f"{subnet}.1")
    b = Namespace(f"apl-{tag}-b", "veth-b", f"{subnet}.2")
    created: list[str] = []
    try:
        for ns in (a, b):
            _ip("netns", "add", ns.name)
            created.append(ns.name)
        _ip(
            "link", "add", a.interface, "netns", a.name,
            "type", "veth", "peer", "name", b.interface, "netns", b.name,
        )  # fmt: skip
        for ns in (a, b):
            _ip("-n", ns.name, "addr", "add", f"{ns.address}/{ns.prefix}", "dev", ns.interface)
            _ip("-n", ns.name, "link", "set", ns.interface, "up")
            _ip("-n", ns.name, "link", "set", "lo", "up")
        yield VethPair(a, b)
    finally:
        for ns in (a, b):
            ns._cleanup()
        for name in created:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def netns_pair() -> Iterator[VethPair]:
    """Two namespaces and a veth between them (skips with the reason when unavailable).

    Import it into a test module (``from tests.support.netns import netns_pair``) or wrap
    :func:`veth_pair` in a fixture of your own.
    """
    with veth_pair() as pair:
        yield pair
