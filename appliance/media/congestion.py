"""The receivers' feedback turns the camera's encoder down on a thin link, and up again.

aiortc hands a REMB to its own encoder only; passthrough has none, so a 2 Mbit/s camera on a
1 Mbit/s uplink would fill the queue until the call is useless. Each video sender's RTCP is heard
through :func:`appliance.media.aiortc_compat.on_rtcp_feedback`; this controller takes, over all
peers of the one source:

* REMB (aiortc and Chromium receivers send it when ``goog-remb`` is negotiated) is counted and
  kept (:attr:`BitrateController.remb`); it steers only while reports show loss above 10 % (then
  the target is at most the estimate). Not alone: a receiver's estimate follows what
  arrives, and an encoder rebuilt at a new rate undershoots for a while, so steering by it drove
  the rate down to the floor on an idle link (measured with aiortc's estimator);
* the fraction lost in receiver reports: above 10 % the target drops by half the loss; below 2 %
  it grows 15 % (at most every ``raise_interval`` seconds) up to the configured bitrate;
* the round-trip time from the same reports: above ``rtt_limit`` (a queue building up) the target
  drops by 20 %.

Only video is ever lowered: audio (Opus, ~32 kbit/s) is not touched, so it gets through first.
What a source can change is its own business (:attr:`VideoSource.adjustable`): ``test`` and
``v4l2`` rebuild their encoder at the new rate (one IDR per change, so changes are at least
``lower_interval`` apart); a source without ``"bitrate"`` is left alone and only counted.
"""

from __future__ import annotations

import logging

from appliance.clock import Clock, SystemClock
from appliance.media.sources.base import VideoSource

logger = logging.getLogger(__name__)


class BitrateController:
    def __init__(
        self,
        source: VideoSource,
        *,
        clock: Clock | None = None,
        lower_interval: float = 1.0,
        raise_interval: float = 2.0,
        rtt_limit: float = 0.4,
    ) -> None:
        self.source = source
        self._clock: Clock = clock or SystemClock()
        self.lower_interval = lower_interval
        self.raise_interval = raise_interval
        self.rtt_limit = rtt_limit
        self._remb: dict[str, float] = {}
        self._loss: dict[str, float] = {}
        self._rtt: dict[str, float] = {}
        self._last_change: float | None = None
        self.counts: dict[str, int] = {"nack": 0, "nacked_packets": 0, "pli": 0, "remb": 0}
        self.counts.update(report=0, rtt=0, lowered=0, raised=0)

    @property
    def remb(self) -> float | None:
        """The lowest receiver estimate, bits per second (None before any REMB)."""
        return min(self._remb.values(), default=None)

    @property
    def adjusts(self) -> bool:
        return "bitrate" in self.source.adjustable

    def feedback(self, peer: str, kind: str, value: float) -> None:
        """One item from a sender's feedback hook (``kind`` as in ``on_rtcp_feedback``)."""
        if kind == "nack":
            self.counts["nack"] += 1
            self.counts["nacked_packets"] += int(value)
            return
        if kind not in self.counts:
            return
        self.counts[kind] += 1
        if kind == "remb":
            self._remb[peer] = value
            logger.debug("%s REMB %d", peer, value)
        elif kind == "report":
            self._loss[peer] = value
        elif kind == "rtt":
            self._rtt[peer] = value
        else:
            return
        self._update()

    def forget(self, peer: str) -> None:
        """The peer left or its connection was replaced: its last reports no longer count."""
        for table in (self._remb, self._loss, self._rtt):
            table.pop(peer, None)

    def target(self) -> int:
        """The bitrate the feedback asks for now (not yet clamped by the source)."""
        current = float(self.source.bitrate)
        loss = max(self._loss.values(), default=0.0)
        rtt = max(self._rtt.values(), default=0.0)
        remb = self.remb
        if loss > 0.10:
            target = current * (1.0 - loss / 2)
            if remb is not None:
                # Losing packets: what arrives (the receiver's estimate) is what the link carries.
                target = min(target, remb)
        elif rtt > self.rtt_limit:
            target = current * 0.8
        elif loss < 0.02:
            target = current * 1.15
        else:
            target = current
        return int(target)

    def _update(self) -> None:
        if not self.adjusts:
            return
        current = self.source.bitrate
        target = self.target()
        if abs(target - current) < 0.05 * current:
            return
        now = self._clock.monotonic()
        since = None if self._last_change is None else now - self._last_change
        wait = self.lower_interval if target < current else self.raise_interval
        if since is not None and since < wait:
            return
        if self.source.set_bitrate(target):
            self._last_change = now
            self.counts["lowered" if self.source.bitrate < current else "raised"] += 1

    def __repr__(self) -> str:
        return f"BitrateController({self.source!r}, {self.counts})"
