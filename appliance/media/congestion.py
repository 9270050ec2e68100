"""The receivers' feedback turns the camera's encoder down on a thin link at once, and up slowly.

aiortc hands a REMB to its own encoder only; passthrough has none, so a 2 Mbit/s camera on a
1 Mbit/s uplink would fill the queue until the call is useless. Each video sender's RTCP is heard
through :func:`appliance.media.aiortc_compat.on_rtcp_feedback`, and the fanout tells the controller
what the source really sends (:meth:`BitrateController.sent`: bytes per second over the last
second — an encoder may undershoot its target a lot on a still picture). Over all peers of the one
source, the worst receiver decides:

* **congestion** is any of: the fraction lost in two receiver reports in a row above
  ``loss_limit`` (10 %; random loss of a few percent is not congestion and is left to NACK/RTX and
  keyframes; a link that was out for a moment loses everything once, then nothing); more than
  20 % of the packets of the last half second NACKed, in both halves of it (one burst is a flap)
  (:meth:`BitrateController.nacked`: seen within a round trip, where reports come once a
  second); a REMB
  (aiortc and Chromium receivers send one when ``goog-remb`` is negotiated: a delay-based
  estimate of what the path carries) below 90 % of what is really sent; the round-trip time
  ``rtt_margin`` above the lowest seen and still rising (a queue building up in front of the
  link); loss and RTT only from reports that arrived a ``window`` after the last drop (a report
  covers the second before it: it must not drop the new rate again for the old rate's loss);
* on congestion the bitrate drops **at once** (multiplicative): to 0.85 x the estimated receive
  rate (sent x (1 - loss)) on loss or NACKs, to 0.85 x the REMB when the REMB is lower, to 0.85 x the
  current target on a rising RTT — the lowest of those that apply; at most once per
  ``lower_interval`` (each change costs an IDR on the ``test`` and ``v4l2`` sources);
* without congestion it climbs **additively**: ``step`` (5 % of the configured bitrate, at least
  30 kbit/s) every ``raise_interval``, not before ``hold`` seconds after the last drop, and not
  above a REMB that is there, up to the configured bitrate.

A REMB alone never lowers the rate below what it says the link carries: the receiver's estimate
follows what arrives, so an encoder that undershoots gets an estimate above what it sends, not
below it (steering by the raw REMB drove the rate to the floor on an idle link, measured with
aiortc's estimator).

Only video is ever lowered: audio (Opus, ~32 kbit/s) is not touched, so it gets through first.
What a source can change is its own business (:attr:`VideoSource.adjustable`): ``test`` and
``v4l2`` rebuild their encoder at the new rate (one IDR per change); a source without
``"bitrate"`` is left alone and only counted.
"""

from __future__ import annotations

import logging
from collections import deque

from appliance.clock import Clock, SystemClock
from appliance.media.sources.base import VideoSource

logger = logging.getLogger(__name__)

DECREASE = 0.85
"""What a congested link gets: this share of what it was shown to carry."""
PACKET_PAYLOAD = 1200
"""About what aiortc puts in one H.264 RTP packet: access units are counted in packets with it."""
NACK_WINDOW = 0.5
NACK_MIN = 10
NACK_LIMIT = 0.2
"""Packets NACKed for the first time within ``NACK_WINDOW``: at least ``NACK_MIN`` and more than
``NACK_LIMIT`` of the packets sent meanwhile is congestion, seen long before the next receiver
report (random loss of 5 % reaches it about once in an hour of windows)."""


class BitrateController:
    def __init__(
        self,
        source: VideoSource,
        *,
        clock: Clock | None = None,
        lower_interval: float = 0.5,
        raise_interval: float = 1.0,
        hold: float = 3.0,
        loss_limit: float = 0.10,
        rtt_margin: float = 0.15,
        window: float = 1.0,
    ) -> None:
        self.source = source
        self._clock: Clock = clock or SystemClock()
        self.lower_interval = lower_interval
        self.raise_interval = raise_interval
        self.hold = hold
        self.loss_limit = loss_limit
        self.rtt_margin = rtt_margin
        self.window = window
        self._remb: dict[str, float] = {}
        self._loss: dict[str, tuple[float, float, float]] = {}
        """Per peer: (fraction lost, the one before it, when it arrived)."""
        self._rtt: dict[str, tuple[float, float, float]] = {}
        """Per peer: (round trip, the one before it, when it arrived)."""
        self._base_rtt: dict[str, float] = {}
        self._sent: deque[tuple[float, int]] = deque()
        self._packets: deque[tuple[float, int]] = deque()
        self._nacked: dict[str, dict[int, float]] = {}
        self._sent_bytes = 0
        self._started: float | None = None
        self._last_change: float | None = None
        self._last_lower: float | None = None
        self.last_reason = ""
        self.counts: dict[str, int] = {"nack": 0, "nacked_packets": 0, "pli": 0, "remb": 0}
        self.counts.update(report=0, rtt=0, lowered=0, raised=0)

    @property
    def remb(self) -> float | None:
        """The lowest receiver estimate, bits per second (None before any REMB)."""
        return min(self._remb.values(), default=None)

    @property
    def adjusts(self) -> bool:
        return "bitrate" in self.source.adjustable

    @property
    def step(self) -> float:
        return max(30_000.0, 0.05 * self.source.max_bitrate)

    # -- input ----------------------------------------------------------------------------

    def sent(self, size: int) -> None:
        """The source handed ``size`` bytes (one access unit) to the peers."""
        now = self._clock.monotonic()
        if self._started is None:
            self._started = now
        self._sent.append((now, size))
        self._sent_bytes += size
        while self._sent and self._sent[0][0] < now - self.window:
            self._sent_bytes -= self._sent.popleft()[1]
        self._packets.append((now, -(-size // PACKET_PAYLOAD)))
        while self._packets and self._packets[0][0] < now - NACK_WINDOW:
            self._packets.popleft()

    def nacked(self, peer: str, seq: int) -> None:
        """``peer`` asked for packet ``seq`` again (once per sequence number the NACK names)."""
        now = self._clock.monotonic()
        seen = self._nacked.setdefault(peer, {})
        for old in [s for s, at in seen.items() if at < now - NACK_WINDOW]:
            del seen[old]
        if seq in seen:
            return
        seen[seq] = now
        if len(seen) >= NACK_MIN:
            self._update()

    def nack_loss(self) -> float:
        """The worst peer's share of the packets sent in the last ``NACK_WINDOW`` that it NACKed
        for the first time (0 below ``NACK_MIN`` packets, and for NACKs from before the last drop
        plus a window: those are about packets sent at the old rate)."""
        now = self._clock.monotonic()
        since = now - NACK_WINDOW
        if self._last_lower is not None:
            since = max(since, self._last_lower + NACK_WINDOW)
        sent = sum(n for at, n in self._packets if at >= since)
        half = now - NACK_WINDOW / 2
        worst = 0.0
        for seen in self._nacked.values():
            times = [at for at in seen.values() if at >= since]
            # Spread over both halves of the window: one burst (the NACK after a flap names
            # everything the outage lost at once) is not a full link.
            early = sum(1 for at in times if at < half)
            if len(times) >= NACK_MIN and sent and min(early, len(times) - early) >= NACK_MIN // 4:
                worst = max(worst, min(1.0, len(times) / sent))
        return worst

    def sent_rate(self) -> float | None:
        """Bits per second the source really sent over the last ``window`` (None before a
        whole window has passed)."""
        now = self._clock.monotonic()
        if self._started is None or now - self._started < self.window:
            return None
        while self._sent and self._sent[0][0] < now - self.window:
            self._sent_bytes -= self._sent.popleft()[1]
        return 8 * self._sent_bytes / self.window

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
            # Loss counts only when two reports in a row show it: a link that was out for a
            # moment (a flap) loses everything once and then nothing, a full link keeps losing.
            previous = self._loss.get(peer, (0.0, 0.0, 0.0))[0]
            self._loss[peer] = (value, previous, self._clock.monotonic())
        elif kind == "rtt":
            previous = self._rtt.get(peer, (value, value, 0.0))[0]
            self._rtt[peer] = (value, previous, self._clock.monotonic())
            self._base_rtt[peer] = min(value, self._base_rtt.get(peer, value))
        else:
            return
        self._update()

    def forget(self, peer: str) -> None:
        """The peer left or its connection was replaced: its last reports no longer count."""
        for table in (self._remb, self._loss, self._rtt, self._base_rtt, self._nacked):
            table.pop(peer, None)

    # -- policy ---------------------------------------------------------------------------

    def congestion(self) -> tuple[float, str] | None:
        """(the bitrate to drop to, why) when the feedback shows congestion, else None."""
        current = float(self.source.bitrate)
        sent = self.sent_rate()
        shown = min(current, sent) if sent else current
        # A report covers about the second before it: one from before the last drop (or just
        # after it) describes the old rate and must not drop the new one again.
        since = -1.0 if self._last_lower is None else self._last_lower + self.window
        loss = max((min(v, b) for v, b, at in self._loss.values() if at >= since), default=0.0)
        remb = self.remb
        drops: list[tuple[float, str]] = []
        if loss > self.loss_limit:
            drops.append((DECREASE * shown * (1.0 - loss), f"loss {loss:.0%}"))
        nack_loss = self.nack_loss()
        if nack_loss > NACK_LIMIT:
            drops.append((DECREASE * shown * (1.0 - nack_loss), f"NACKs for {nack_loss:.0%}"))
        if remb is not None and sent and remb < 0.9 * shown:
            drops.append((DECREASE * remb, f"REMB {remb / 1000:.0f} kbps"))
        # aiortc smooths its RTT estimate: it counts while it still rises, not on its way down.
        rising = [
            rtt - self._base_rtt[peer]
            for peer, (rtt, before, at) in self._rtt.items()
            if at >= since and rtt > before and rtt - self._base_rtt[peer] > self.rtt_margin
        ]
        if rising:
            drops.append((DECREASE * current, f"RTT +{max(rising) * 1000:.0f} ms"))
        return min(drops) if drops else None

    def target(self) -> tuple[int, str]:
        """The bitrate the feedback asks for now, and why (not yet clamped by the source)."""
        current = float(self.source.bitrate)
        congested = self.congestion()
        if congested is not None:
            target, reason = congested
            return int(min(current, target)), reason
        target = min(float(self.source.max_bitrate), current + self.step)
        remb = self.remb
        if remb is not None:
            target = min(target, max(current, remb))
        return int(target), "no congestion"

    def _update(self) -> None:
        if not self.adjusts:
            return
        current = self.source.bitrate
        target, reason = self.target()
        if target == current or (target > current and target - current < 0.02 * current):
            return
        now = self._clock.monotonic()
        if target < current:
            if self._last_change is not None and now - self._last_change < self.lower_interval:
                return
        else:
            if self._last_change is not None and now - self._last_change < self.raise_interval:
                return
            if self._last_lower is not None and now - self._last_lower < self.hold:
                return
        if self.source.set_bitrate(target):
            self._last_change = now
            self.last_reason = reason
            lowered = self.source.bitrate < current
            if lowered:
                self._last_lower = now
                # What was sent at the old rate says nothing about the new one.
                self._sent.clear()
                self._sent_bytes = 0
                self._started = now
            self.counts["lowered" if lowered else "raised"] += 1
            logger.info(
                "%r %s: %d -> %d kbps", self, reason, current // 1000, self.source.bitrate // 1000
            )

    def __repr__(self) -> str:
        return f"BitrateController({self.source!r}, {self.counts})"
