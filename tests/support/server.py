"""A REAL call server on loopback for tests: uvicorn, a real SQLite file, a free port.

Usage (every area)::

    from tests.support.server import running_server

    async def test_ring(tmp_path):
        clock = ManualClock()
        async with running_server(tmp_path, users=["alice", "bob"], clock=clock) as srv:
            async with srv.client("alice") as http:           # httpx, api_key + JWT set
                r = await http.post("/api/v2/video/call/default/door-1", json={...})
            token = srv.user_token("bob", call_cids=["default:door-1"])   # iat from `clock`
            ws = srv.ws_url                                     # ws://127.0.0.1:PORT/api/v2/connect?api_key=...
            await srv.restart()                                 # same DB file, same port
    # subprocess=True runs `python -m appliance serve` (then `await srv.kill()` is kill -9);
    # clock= works in-process only. Extra keywords are ServerSettings fields (ice_servers=..., limits=...).
    # Fixture `server` (tests/conftest.py): in-process server with users alice, bob, carol, door-1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from appliance.clock import Clock, SystemClock
from appliance.server.api.httpguard import uvicorn_options
from appliance.server.app import create_app
from appliance.server.auth import create_token
from appliance.server.context import ServerContext
from appliance.server.settings import ServerSettings
from appliance.server.tls import tls_files

API_KEY = "test-key"
STARTUP_TIMEOUT = 60.0  # a loaded 2-core machine took over 20 s to start a replica
# SIGTERM → exit, then SIGKILL: a replica in a fleet drains for ws_drain_seconds (30 s) first.
STOP_TIMEOUT = 75.0

UserSpec = str | Mapping[str, Any]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.set_inheritable(True)
    return sock


def _users(users: Iterable[UserSpec] | None) -> list[dict[str, Any]]:
    return [{"id": u} if isinstance(u, str) else dict(u) for u in users or ()]


class ServerHandle:
    """One test server. In-process unless ``subprocess=True``."""

    def __init__(
        self,
        tmp_path: Path,
        settings: ServerSettings,
        *,
        clock: Clock | None,
        subprocess: bool,
    ) -> None:
        self.tmp_path = tmp_path
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self._injected_clock = clock
        self.subprocess = subprocess
        self.port = settings.port or _free_port()
        self.settings = settings.model_copy(update={"port": self.port})
        self.app: Any = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self.log_path = tmp_path / "server.log"

    # --- addresses and credentials -------------------------------------------------------
    @property
    def api_key(self) -> str:
        return self.settings.api_key or API_KEY

    @property
    def api_secret(self) -> str:
        assert self.settings.api_secret
        return self.settings.api_secret

    @property
    def scheme(self) -> str:
        return "https" if self.settings.tls is not None else "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        ws = "wss" if self.scheme == "https" else "ws"
        return f"{ws}://127.0.0.1:{self.port}/api/v2/connect?api_key={self.api_key}"

    @property
    def db_path(self) -> Path:
        return self.settings.state_dir / "appliance.db"

    @property
    def ctx(self) -> ServerContext:
        """The live ``ServerContext`` (in-process only)."""
        assert self.app is not None, "ctx is only available in-process"
        ctx: ServerContext = self.app.state.ctx
        return ctx

    def server_token(self) -> str:
        return create_token(self.api_secret)

    def user_token(self, user_id: str, **claims: Any) -> str:
        """A user token; ``ttl=``, ``call_cids=``, ``iat=False`` and raw claims pass through."""
        return create_token(self.api_secret, user_id, clock=self.clock, **claims)

    def headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": token, "stream-auth-type": "jwt"} if token else {}

    def client(self, user_id: str | None = None, *, token: str | None = None) -> httpx.AsyncClient:
        """An httpx client for the API: server token by default, ``user_id``'s token if given."""
        tok = token or (self.user_token(user_id) if user_id else self.server_token())
        return httpx.AsyncClient(
            base_url=self.base_url,
            params={"api_key": self.api_key},
            headers=self.headers(tok),
            verify=False,
            timeout=15.0,
        )

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        if self.subprocess:
            await self._start_process()
        else:
            await self._start_inprocess()

    async def _start_inprocess(self) -> None:
        self.app = create_app(self.settings, clock=self._injected_clock)
        tls = tls_files(self.settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            lifespan="on",
            log_level="warning",
            timeout_graceful_shutdown=2,
            ws_ping_interval=None,
            ssl_certfile=str(tls.cert) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
            **uvicorn_options(self.settings),
        )
        self._server = uvicorn.Server(config)
        sock = _bind(self.port)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()
                raise RuntimeError(f"test server on port {self.port} failed to start")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("test server did not start")
            await asyncio.sleep(0.01)

    async def _start_process(self) -> None:
        config = self.tmp_path / "server.yaml"
        data = self.settings.model_dump(mode="json", exclude_none=True)
        config.write_text(yaml.safe_dump(data), encoding="utf-8")
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "appliance",
            "serve",
            "--config",
            str(config),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        log.close()
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT
        async with httpx.AsyncClient(verify=False, timeout=2.0) as http:
            while True:
                if self._proc.returncode is not None:
                    raise RuntimeError(
                        f"appliance serve exited {self._proc.returncode}:\n{self.log_text()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.base_url}/healthz")).status_code == 200:
                        return
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"appliance serve did not start:\n{self.log_text()}")
                await asyncio.sleep(0.1)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def stop(self) -> None:
        """Graceful stop (idempotent)."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None
        if self._proc is not None:
            if self._proc.returncode is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    # Generous: on a loaded machine a graceful stop took over 10 s, and a
                    # SIGKILL then turned a rolling restart's SIGTERM into a kill -9.
                    await asyncio.wait_for(self._proc.wait(), STOP_TIMEOUT)
                except TimeoutError:
                    self._proc.kill()
                    await self._proc.wait()
            self._proc = None

    async def kill(self) -> None:
        """``kill -9`` the server process (``subprocess=True`` only)."""
        assert self._proc is not None, "kill() needs subprocess=True"
        self._proc.kill()
        await self._proc.wait()
        self._proc = None

    async def restart(self) -> None:
        """Stop (if running) and start again on the same port with the same database file."""
        await self.stop()
        await self.start()

    def __repr__(self) -> str:
        mode = "subprocess" if self.subprocess else "in-process"
        return f"ServerHandle({self.base_url}, {mode})"


@asynccontextmanager
async def running_server(
    tmp_path: Path,
    *,
    users: Iterable[UserSpec] | None = None,
    call_types_yaml: str | None = None,
    clock: Clock | None = None,
    subprocess: bool = False,
    **settings: Any,
) -> AsyncIterator[ServerHandle]:
    """Start a call server for the duration of the block (see the module docstring)."""
    if subprocess and clock is not None:
        raise ValueError("an injected clock works in-process only")
    tmp_path.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    values: dict[str, Any] = {
        "api_key": API_KEY,
        "api_secret": secrets.token_urlsafe(32),
        "state_dir": tmp_path / "server-state",
        "host": "127.0.0.1",
        "port": 0,
        "users": _users(users),
    }
    if call_types_yaml is not None:
        path = tmp_path / "call-types.yaml"
        path.write_text(call_types_yaml, encoding="utf-8")
        values["call_types"] = path
    values.update(settings)
    handle = ServerHandle(
        tmp_path, ServerSettings.model_validate(values), clock=clock, subprocess=subprocess
    )
    await handle.start()
    try:
        yield handle
    finally:
        await handle.stop()
