"""The one small interface every video source implements.

A source produces H.264 (constrained baseline, Annex-B), one access unit per :class:`EncodedFrame`,
and hands each to its sinks on the event loop. Sources that capture or encode on a worker thread
come back to the loop with ``call_soon_threadsafe`` (see :meth:`VideoSource._deliver_threadsafe`).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from appliance.clock import Clock, SystemClock

logger = logging.getLogger(__name__)

VIDEO_TIME_BASE = Fraction(1, 90000)


@dataclass(frozen=True)
class EncodedFrame:
    """One Annex-B access unit: what the camera's encoder produced for one picture."""

    data: bytes
    pts: int
    time_base: Fraction
    keyframe: bool
    capture_time: float
    """Seconds since the epoch when the picture was captured (the source's clock)."""


PacketSink = Callable[[EncodedFrame], None]


class VideoSource(ABC):
    """start/stop, packets to sinks, ``request_keyframe()``, ``bitrate``, ``set_bitrate()``."""

    kind: str = "abstract"
    adjustable: frozenset[str] = frozenset()
    """What the source can change while it runs: ``{"bitrate"}`` for ``test`` and ``v4l2``
    (their encoder is rebuilt at the new rate, starting with an IDR); empty for ``file`` and
    ``picamera2`` (see :mod:`appliance.media.congestion`)."""
    min_bitrate = 100_000

    def __init__(
        self,
        *,
        width: int = 640,
        height: int = 480,
        framerate: float = 30.0,
        bitrate: int = 1_000_000,
        clock: Clock | None = None,
    ) -> None:
        self.width = width
        self.height = height
        self.framerate = framerate
        self._bitrate = bitrate
        self.max_bitrate = bitrate
        """The configured bitrate: :meth:`set_bitrate` never goes above it."""
        self.bitrate_changes = 0
        self.clock: Clock = clock or SystemClock()
        self._sinks: list[PacketSink] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self.frames_delivered = 0
        self.keyframes_delivered = 0
        self.keyframe_requests = 0

    @property
    def bitrate(self) -> int:
        """Target bits per second: the configured one, or lower after :meth:`set_bitrate`."""
        return self._bitrate

    def set_bitrate(self, bps: int) -> bool:
        """Ask the encoder for ``bps`` (clamped to ``min_bitrate..max_bitrate``); False when the
        source cannot change its bitrate while running or the value is already set."""
        if "bitrate" not in self.adjustable:
            return False
        bps = max(min(self.min_bitrate, self.max_bitrate), min(self.max_bitrate, int(bps)))
        if bps == self._bitrate:
            return False
        logger.info("%r bitrate -> %d kbps", self, bps // 1000)
        self._bitrate = bps
        self.bitrate_changes += 1
        return True

    @property
    def running(self) -> bool:
        return self._running

    def add_sink(self, sink: PacketSink) -> None:
        self._sinks.append(sink)

    def remove_sink(self, sink: PacketSink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    async def start(self) -> None:
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        # Running before _start(): a camera may deliver its first keyframe while starting.
        self._running = True
        try:
            await self._start()
        except BaseException:
            self._running = False
            raise
        logger.info("%r started", self)

    async def stop(self) -> None:
        """Idempotent."""
        if not self._running:
            return
        self._running = False
        await self._stop()
        logger.info("%r stopped", self)

    def request_keyframe(self) -> None:
        """Make the next picture an IDR with SPS/PPS (callers rate-limit, see keyframes.py)."""
        self.keyframe_requests += 1
        logger.debug("%r keyframe requested", self)
        self._request_keyframe()

    @abstractmethod
    async def _start(self) -> None: ...

    @abstractmethod
    async def _stop(self) -> None: ...

    @abstractmethod
    def _request_keyframe(self) -> None: ...

    def _deliver(self, frame: EncodedFrame) -> None:
        if not self._running:
            return
        self.frames_delivered += 1
        if frame.keyframe:
            self.keyframes_delivered += 1
        for sink in list(self._sinks):
            sink(frame)

    def _deliver_threadsafe(self, frame: EncodedFrame) -> None:
        """From a worker thread: hand the frame to the loop, never touch sinks here."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._deliver, frame)
            except RuntimeError:
                # The loop closed between the check and the call: the call is over.
                pass

    async def __aenter__(self) -> VideoSource:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return (
            f"{type(self).__name__}({self.width}x{self.height}@{self.framerate:g}, "
            f"{self._bitrate // 1000} kbps, {state})"
        )
