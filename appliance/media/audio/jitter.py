"""Receive-side audio latency: no prefetch in aiortc, one measured playout buffer of ours.

aiortc puts every received audio packet in a jitter buffer that hands a frame to the decoder only
once four later frames have arrived (``prefetch=4``: 80 ms at 20 ms packets), and after a lost
packet it waits for sixteen more, then keeps handing out one frame per arrival — the delay of the
stall stays for the rest of the call. Our playback buffer behind the decoder absorbs jitter
anyway, so :class:`AudioJitterBuffer` replaces aiortc's on audio receivers (the hook lives in
:mod:`appliance.media.aiortc_compat`): each packet goes to the decoder as it arrives, in order;
a gap (a lost packet) is passed over at once and a packet older than the last one handed on is
dropped, counted. The playback buffer puts silence where the gap was (from the frames'
timestamps), so the playout delay does not shrink with every loss.

:class:`JitterEstimator` measures how late decoded frames arrive against their timestamps and
derives the level the playback buffer keeps: ``ceil((p95 lateness + period / 2) / period)``
periods, at least one, so on a clean LAN the buffer holds one period (20 ms) and on a jittery
link as much as the jitter needs.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket

__all__ = ["AudioJitterBuffer", "JitterEstimator"]

_RESTART = 100  # a packet this far "behind" is a restarted sender, not a late packet


class AudioJitterBuffer:
    """Drop-in for ``aiortc.jitterbuffer.JitterBuffer`` on an audio receiver (same ``add``)."""

    capacity = 16

    def __init__(self) -> None:
        self._last: int | None = None
        self.packets = 0
        self.lost = 0
        self.late = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._last is not None:
            delta = (seq - self._last + 0x8000) % 0x10000 - 0x8000
            if 0 >= delta > -_RESTART:
                self.late += 1
                return False, None
            if delta > 1:
                self.lost += delta - 1
        self._last = seq
        self.packets += 1
        data: bytes = getattr(packet, "_data", packet.payload)  # the receiver depayloads into _data
        return False, JitterFrame(data=data, timestamp=packet.timestamp)

    def __repr__(self) -> str:
        return f"AudioJitterBuffer(packets={self.packets}, lost={self.lost}, late={self.late})"


class JitterEstimator:
    """Arrival lateness of a track's frames → the playout level in periods."""

    def __init__(
        self,
        period: float,
        *,
        window: int = 250,
        initial_periods: int = 2,
        min_frames: int = 50,
        max_periods: int = 6,
    ) -> None:
        self._period = period
        self._offsets: deque[float] = deque(maxlen=window)
        self._initial = initial_periods
        self._min_frames = min_frames
        self._max = max(1, max_periods)
        self.jitter_ms: float | None = None

    def arrived(self, now: float, media_time: float) -> None:
        """A frame whose first sample belongs at ``media_time`` (seconds) arrived at ``now``."""
        self._offsets.append(now - media_time)

    def reset(self) -> None:
        """The timeline jumped (the sender restarted, a long link drop): measure afresh."""
        self._offsets.clear()

    @property
    def target_periods(self) -> int:
        if len(self._offsets) < self._min_frames:
            return min(self._initial, self._max)
        offsets = np.fromiter(self._offsets, dtype=np.float64)
        lateness = offsets - offsets.min()
        p95 = float(np.percentile(lateness, 95))
        self.jitter_ms = round(p95 * 1000, 1)
        return max(1, min(self._max, math.ceil((p95 + self._period / 2) / self._period)))

    def __repr__(self) -> str:
        return f"JitterEstimator(jitter_ms={self.jitter_ms}, frames={len(self._offsets)})"
