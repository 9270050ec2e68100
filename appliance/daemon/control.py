"""The local control endpoint: a Unix socket next to the daemon's state, token-protected.

One request per connection, one JSON line each way::

    → {"token": "...", "cmd": "status"}
    ← {"ok": true, "status": {...}}
    → {"token": "...", "cmd": "press", "button": "call", "hold": false}
    ← {"ok": true}

The token is random, written 0600 next to the socket at start; whoever can read it may press
the simulated buttons (``appliance press``) and read the state (``appliance status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
TOKEN_NAME = "control.token"
MAX_REQUEST = 64 * 1024


class ControlError(ApplianceError):
    """The control endpoint could not be reached or refused the request."""


Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlServer:
    def __init__(self, directory: Path, handler: Handler, socket_path: Path | None = None) -> None:
        self.directory = directory
        self.socket_path = socket_path or directory / SOCKET_NAME
        self.token_path = self.socket_path.with_name(TOKEN_NAME)
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self.token = ""

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_urlsafe(24)
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.token + "\n")
        os.chmod(self.token_path, 0o600)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.socket_path))
        os.chmod(self.socket_path, 0o600)
        log.info("control endpoint listening on %s", self.socket_path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            reply = await self._answer(line)
        except (TimeoutError, ValueError, ConnectionError) as err:
            reply = {"ok": False, "error": f"bad request: {err}"}
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        if len(line) > MAX_REQUEST:
            return {"ok": False, "error": "request too large"}
        try:
            request = json.loads(line)
        except json.JSONDecodeError:
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "request is not a JSON object"}
        token = request.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token, self.token):
            log.warning("control: request with a wrong token refused")
            return {"ok": False, "error": "wrong token"}
        try:
            return await self._handler(request)
        except KeyError as err:
            return {"ok": False, "error": str(err.args[0]) if err.args else "not found"}
        except (ValueError, ApplianceError) as err:
            return {"ok": False, "error": str(err)}

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for path in (self.socket_path, self.token_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def request(socket_path: Path, payload: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    """Blocking client for the CLI: reads the token next to the socket and sends ``payload``."""
    token_path = socket_path.with_name(TOKEN_NAME)
    try:
        token = token_path.read_text().strip()
    except FileNotFoundError:
        raise ControlError(
            f"no daemon running here (no {token_path}); is `appliance run` up?"
        ) from None
    except PermissionError:
        raise ControlError(f"cannot read {token_path}: permission denied") from None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(socket_path))
            sock.sendall(json.dumps({**payload, "token": token}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"no daemon listening on {socket_path}") from None
        except OSError as err:
            raise ControlError(f"control socket {socket_path}: {err}") from err
    try:
        reply: dict[str, Any] = json.loads(data)
    except json.JSONDecodeError:
        raise ControlError("the daemon sent no answer") from None
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "refused")))
    return reply
