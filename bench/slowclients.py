"""Slow and greedy HTTP clients against a real ``appliance serve`` on loopback.

1. slowloris header: a request line and half a header, then one more byte every
   ``--trickle`` seconds: how long until the server closes the socket;
2. idle: a connection that sends nothing;
3. slow body: a complete header announcing 1,000 bytes, then one byte every ``--trickle`` s;
4. connections per address: ``--connections`` sockets opened at once from 127.0.0.1 (the
   config lists no unlimited addresses, so loopback is capped like any client): how many are
   accepted and how many answered 503 at once.

A socket still open after ``--max-wait`` seconds is reported as held (">N"). Prints a table; the
last line is one JSON object. Nothing here asserts: it measures.

    .venv/bin/python bench/slowclients.py [--trickle 2] [--max-wait 60] [--connections 200]
                                          [--legacy]   # a server without the new limits keys
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start(tmp: Path, legacy: bool) -> tuple[asyncio.subprocess.Process, int]:
    port = _free_port()
    config: dict[str, Any] = {
        "api_key": "bench",
        "api_secret": secrets.token_urlsafe(32),
        "state_dir": str(tmp / "state"),
        "host": "127.0.0.1",
        "port": port,
    }
    if not legacy:
        config["limits"] = {"unlimited_addresses": []}
    path = tmp / "server.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = (tmp / "server.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "appliance", "serve", "--config", str(path)),
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    async with httpx.AsyncClient(timeout=2.0) as http:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return proc, port
            await asyncio.sleep(0.1)
    raise RuntimeError((tmp / "server.log").read_text())


async def _lifetime(port: int, opening: bytes, trickle: float, max_wait: float) -> float | None:
    """Seconds until the server closes a connection that sends ``opening`` and then one byte
    every ``trickle`` seconds (none when ``trickle`` is 0); None when still open at max_wait."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    writer.write(opening)
    try:
        while time.monotonic() - start < max_wait:
            wait = trickle if trickle > 0 else max_wait
            try:
                data = await asyncio.wait_for(reader.read(4096), min(wait, max_wait))
            except TimeoutError:
                if trickle > 0:
                    writer.write(b"x")
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                continue
            except ConnectionError:
                return time.monotonic() - start
            if not data:
                return time.monotonic() - start
        return None
    finally:
        writer.close()


async def _per_address(port: int, count: int) -> tuple[int, int]:
    """(accepted, refused) of ``count`` connections opened together from one address."""
    opened = []
    for _ in range(count):
        opened.append(await asyncio.open_connection("127.0.0.1", port))
    refused = 0
    for reader, _ in opened:
        try:
            data = await asyncio.wait_for(reader.read(64), 0.5)
        except TimeoutError:
            continue
        if data.startswith(b"HTTP/1.1 503") or not data:
            refused += 1
    for _, writer in opened:
        writer.close()
    return count - refused, refused


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trickle", type=float, default=2.0)
    parser.add_argument("--max-wait", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--legacy", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-slowclients-") as tmp:
        proc, port = await _start(Path(tmp), args.legacy)
        try:
            header, idle, body = await asyncio.gather(
                _lifetime(
                    port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ", args.trickle, args.max_wait
                ),
                _lifetime(port, b"", 0, args.max_wait),
                _lifetime(
                    port,
                    b"POST /api/v2/users?api_key=bench HTTP/1.1\r\nHost: x\r\n"
                    b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n{",
                    args.trickle,
                    args.max_wait,
                ),
            )
            accepted, refused = await _per_address(port, args.connections)
        finally:
            proc.terminate()
            await proc.wait()
    load = os.getloadavg()[0]

    def show(value: float | None) -> str:
        return f">{args.max_wait:.0f} s (held)" if value is None else f"{value:.1f} s"

    print(f"{'figure':<52} measured")
    print(
        f"{'slowloris header (1 byte / ' + str(args.trickle) + ' s), socket lifetime':<52} {show(header)}"
    )
    print(f"{'idle connection (no bytes), socket lifetime':<52} {show(idle)}")
    print(f"{'slow body (1 byte / ' + str(args.trickle) + ' s), socket lifetime':<52} {show(body)}")
    print(
        f"{'connections from one address: accepted / refused':<52} "
        f"{accepted} / {refused} of {args.connections}"
    )
    print(f"load average (1 min): {load:.2f}")
    figures = {
        "slowloris_header_s": None if header is None else round(header, 2),
        "idle_s": None if idle is None else round(idle, 2),
        "slow_body_s": None if body is None else round(body, 2),
        "max_wait_s": args.max_wait,
        "per_address_accepted": accepted,
        "per_address_refused": refused,
        "per_address_tried": args.connections,
        "load_average": round(load, 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
