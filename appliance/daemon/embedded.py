"""``server: embedded``: the call server running inside the daemon's own loop (uvicorn.Server),
so a stand-alone intercom needs no other machine. The device's user (with ``custom.device``),
the configured users and the call's members are seeded; the device gets a user token minted
with the server's secret, which never leaves this process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from appliance.clock import Clock
from appliance.daemon.config import DeviceConfig
from appliance.errors import ApplianceError, ConfigError, HardwareError

log = logging.getLogger(__name__)


def _secret(path: Path) -> str:
    """The configured secret file's content, created (random, 0600) on first start."""
    try:
        if path.exists():
            secret = path.read_text().strip()
            if secret:
                return secret
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        log.warning("embedded server: generated a new API secret in %s (mode 0600)", path)
        return secret
    except OSError as err:
        raise ConfigError(f"cannot use the secret file: {err}", file=str(path)) from err


class EmbeddedServer:
    def __init__(self, cfg: DeviceConfig, clock: Clock) -> None:
        assert cfg.server.embedded is not None and cfg.state_dir is not None
        from appliance.server.settings import ServerSettings, ensure_secret

        e = cfg.server.embedded
        self.cfg = cfg
        self.clock = clock
        users: dict[str, dict[str, Any]] = {}
        for member in cfg.call.members:
            users[member.user_id] = {"id": member.user_id}
        for seed in e.users:
            users[seed.id] = seed.model_dump(exclude_none=True)
        device = cfg.device
        users[device.id] = {
            "id": device.id,
            "name": device.name or device.id,
            "teams": [device.team] if device.team else [],
            "custom": {"device": cfg.device_custom()},
        }
        data: dict[str, Any] = {
            "api_key": e.api_key,
            "state_dir": cfg.state_dir / "server",
            "call_types": e.call_types,
            "users": list(users.values()),
            "host": e.host,
            "port": e.port,
            "base_url": e.public_url,
        }
        if e.database:
            data["database"] = e.database
        if e.tls is not None:
            data["tls"] = e.tls if isinstance(e.tls, str) else e.tls.model_dump()
        if e.secret_file is not None:
            data["api_secret"] = _secret(e.secret_file)
        if e.push is not None:
            data["push"] = e.push
        try:
            settings = ServerSettings.model_validate(
                {k: v for k, v in data.items() if v is not None}
            )
        except ValueError as err:
            raise ConfigError(f"embedded server settings: {err}", key="server.embedded") from err
        self.settings = ensure_secret(settings)
        self.ca_file: str | None = None
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self.port = e.port

    @property
    def base_url(self) -> str:
        return self.settings.public_base_url(port=self.port)

    def token(self, user_id: str, ttl: float | None = None) -> str:
        from appliance.tokens import create_token

        assert self.settings.api_secret
        return create_token(self.settings.api_secret, user_id, clock=self.clock, ttl=ttl)

    def login_link(self, user_id: str) -> str:
        token = self.token(user_id, ttl=7 * 86400)
        return f"{self.base_url}/?api_key={self.settings.api_key}&token={token}"

    async def start(self) -> None:
        import uvicorn

        from appliance.server.api.httpguard import uvicorn_options
        from appliance.server.app import create_app
        from appliance.server.tls import tls_files

        app = create_app(self.settings, clock=self.clock)
        tls = tls_files(self.settings)
        if tls is not None and self.settings.tls == "self-signed":
            self.ca_file = str(tls.cert)  # our own client trusts exactly this certificate
        config = uvicorn.Config(
            app,
            host=self.settings.host,
            port=self.settings.port,
            # uvicorn's default dictConfig would close the daemon's handlers (the audit
            # trail's journal one too); with None its loggers propagate to the CLI's.
            log_config=None,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
            ssl_certfile=str(tls.cert) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
            **uvicorn_options(self.settings),
        )
        self._server = uvicorn.Server(config)
        # the daemon owns the signals
        self._server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        sock = self._bind()
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                err = self._task.exception()
                raise HardwareError(f"embedded server did not start: {err or 'exited'}")
            await asyncio.sleep(0.02)
        sockets = [s for srv in self._server.servers for s in srv.sockets]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("embedded call server on %s", self.base_url)

    def _bind(self) -> socket.socket:
        """Bind here so that a busy port is one clear line, not uvicorn's exit."""
        host, port = self.settings.host, self.settings.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            sock.close()
            raise ApplianceError(
                f"the embedded server cannot listen on {host}:{port}: {err.strerror} "
                "(another appliance running? change server.embedded.port)"
            ) from err
        sock.set_inheritable(True)
        return sock

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)
            self._task = None
