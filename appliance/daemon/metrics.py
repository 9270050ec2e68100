"""The daemon's figures for Prometheus (``metrics: {listen: 127.0.0.1:9310}`` in the device
YAML; off by default).

Everything is read at scrape time from what the daemon already keeps for ``appliance status``
(``DaemonCollector``): call state and server link as one-hot gauges, the audio path's overruns
and underruns, and per call the peers' ICE restarts and video frames sent. ``process_*`` (CPU
seconds, resident memory, open files) come from ``prometheus_client``'s process collector.

The endpoint is a small HTTP/1.1 responder on the daemon's own loop (no thread, one request a
connection, ``GET /metrics`` only). It listens on loopback unless configured otherwise; any
other address needs ``metrics.token`` (``Authorization: Bearer <token>``; the config refuses
one without the other).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector
from prometheus_client import generate_latest as exposition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from appliance.daemon.ports import CallState, LinkState

if TYPE_CHECKING:
    from appliance.daemon.config import MetricsConfig
    from appliance.daemon.machine import Daemon

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8192
READ_TIMEOUT_SECONDS = 5.0


class DaemonCollector(Collector):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        state = GaugeMetricFamily(
            "appliance_daemon_call_state", "1 for the call state the daemon is in", labels=["state"]
        )
        for s in CallState:
            state.add_metric([s.value], float(d.call_state is s))
        yield state
        link = GaugeMetricFamily(
            "appliance_daemon_server_link",
            "1 for the state of the link to the call server",
            labels=["state"],
        )
        for ls in LinkState:
            link.add_metric([ls.value], float(d.link_state is ls))
        yield link
        audio = _audio(d)
        yield CounterMetricFamily(
            "appliance_daemon_audio_capture_overruns",
            "Microphone reads the ALSA device reported as overruns (data lost)",
            value=float(audio.get("capture", {}).get("overruns", 0)),
        )
        yield CounterMetricFamily(
            "appliance_daemon_audio_playback_underruns",
            "Speaker writes the ALSA device reported as underruns (it ran dry)",
            value=float(audio.get("playback", {}).get("underruns", 0)),
        )
        peers = _peers(d)
        restarts = sum(int(p.get("restarts", 0)) for p in peers)
        frames = sum(int(p.get("video_packets_sent", 0)) for p in peers)
        yield CounterMetricFamily(
            "appliance_daemon_ice_restarts",
            "ICE restarts in the current call (starts at 0 with each call: a counter reset)",
            value=float(restarts),
        )
        yield CounterMetricFamily(
            "appliance_daemon_video_frames_sent",
            "Video frames sent to the peers of the current call (0 with each call)",
            value=float(frames),
        )
        connected = GaugeMetricFamily(
            "appliance_daemon_peers", "Peers of the current call, by state", labels=["state"]
        )
        counts: dict[str, int] = {}
        for p in peers:
            counts[str(p.get("state"))] = counts.get(str(p.get("state")), 0) + 1
        for name, n in sorted(counts.items()):
            connected.add_metric([name], float(n))
        yield connected


def _audio(d: Daemon) -> dict[str, Any]:
    with contextlib.suppress(Exception):
        if d.audio_stats is not None:
            found = d.audio_stats()
            if isinstance(found, dict):
                return found
    return {}


def _peers(d: Daemon) -> list[dict[str, Any]]:
    session = getattr(d.media, "session", None)
    stats = getattr(session, "stats", None)
    if not callable(stats):
        return []
    try:
        peers = stats().get("peers") or {}
    except Exception:
        log.exception("%r: media stats unreadable", d)
        return []
    return [p for p in peers.values() if isinstance(p, dict)]


def registry_for(daemon: Daemon) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(DaemonCollector(daemon))
    ProcessCollector(registry=registry)
    return registry


class MetricsEndpoint:
    """``GET /metrics`` over plain HTTP on ``cfg.listen``."""

    def __init__(self, cfg: MetricsConfig, registry: CollectorRegistry) -> None:
        self.cfg = cfg
        self.registry = registry
        self._server: asyncio.Server | None = None
        self.port = 0

    def __repr__(self) -> str:
        return f"MetricsEndpoint({self.cfg.host}:{self.port or self.cfg.port})"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.cfg.host, self.cfg.port, limit=MAX_HEAD_BYTES
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("%r serving", self)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_SECONDS)
            status, body, ctype = self._answer(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, body, ctype = 400, b"bad request\n", "text/plain"
        except ConnectionError:
            writer.close()
            return
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
        writer.write(
            f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def _answer(self, head: bytes) -> tuple[int, bytes, str]:
        if len(head) > MAX_HEAD_BYTES:
            return 400, b"request head too large\n", "text/plain"
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[0] != "GET" or parts[1].split("?", 1)[0] != "/metrics":
            return 404, b"only GET /metrics here\n", "text/plain"
        if self.cfg.token:
            given = ""
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "authorization":
                    given = value.strip()
            want = f"Bearer {self.cfg.token}"
            if not hmac.compare_digest(given.encode("latin-1"), want.encode("latin-1")):
                return 401, b"metrics.token required (Authorization: Bearer ...)\n", "text/plain"
        return 200, exposition(self.registry), CONTENT_TYPE_LATEST
