"""Which NACKed packets are sent again: what the history holds, within a share of the bitrate.

aiortc resends every packet a receiver NACKs, from its 128-packet history, at once. On a link that
is losing packets because it is full, that only fills it more (the bench's 1 Mbit/s uplink once
carried 5,495 retransmissions in 25 s). :class:`RetransmitGate` is asked before each
retransmission (the hook is :func:`appliance.media.aiortc_compat.on_retransmit`) and refuses

* a packet beyond the budget: retransmissions get ``share`` of the source's current bitrate (a
  token bucket holding ``burst`` seconds of it, and never less than ``MIN_BURST_PACKETS``
  full-size packets);
* a packet the history no longer holds (aiortc would skip it silently).

Not a rule: the packet's age. A NACK is the receiver saying it still needs the packet: Chromium
stops asking for packets it has decoded past, and an aiortc receiver (our own display path)
releases nothing behind a hole until 512 later packets have arrived (10-15 s at 300 kbit/s; a
keyframe does not help it) and asks again only at its next gap, often more than a second later.
An age limit (one round trip + 1 s, until this was measured) refused exactly those second requests
and froze the aiortc receiver for 12-15 s in 6 of 7 runs of the 5 % loss test under load.

While receiver reports show random loss (``duplicate_loss``: 1-10 %; more is congestion and gets no
extra traffic), each retransmission goes out twice when the budget allows: a resent packet is
lost as often as the original, and a receiver asks again only after a round trip (Chromium) or
at its next gap (aiortc), which is a visible freeze; two copies are both lost at 5 % loss once in
400 times.

A refused packet leaves a hole the receiver cannot fill, so each refusal calls ``on_unserved`` —
the peer asks the camera for a keyframe there (rate-limited by
:class:`~appliance.media.keyframes.KeyframeLimiter`) instead of waiting for the receiver's PLI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from appliance.clock import Clock, SystemClock

logger = logging.getLogger(__name__)

PACKET_BYTES = 1300
"""The largest RTP payload aiortc's H.264 packetizer makes (``PACKET_MAX``)."""
MIN_BURST_PACKETS = 4
"""The bucket holds at least this many full-size packets: one NACK (a new loss and one asked
again) with both copies each. ``burst`` seconds of the share alone are 2.3 kB at 300 kbit/s, less
than one full packet twice, so the second copy of one packet used to leave too little for the next
one and that packet was refused."""


class RetransmitGate:
    def __init__(
        self,
        bitrate: Callable[[], float],
        *,
        on_unserved: Callable[[str], None] | None = None,
        share: float = 0.25,
        burst: float = 0.25,
        duplicate_loss: tuple[float, float] = (0.01, 0.10),
        clock: Clock | None = None,
    ) -> None:
        self._bitrate = bitrate
        self._on_unserved = on_unserved
        self.share = share
        self.burst = burst
        self._clock: Clock = clock or SystemClock()
        self.duplicate_loss = duplicate_loss
        self.loss = 0.0
        """The fraction lost in the latest receiver report."""
        self._tokens: float | None = None
        self._refilled = 0.0
        self.counts: dict[str, int] = {"resent": 0, "over_budget": 0, "gone": 0}
        self.counts["duplicated"] = 0
        self.resent_bytes = 0

    def _capacity(self) -> float:
        """Bytes the bucket holds at most: ``burst`` seconds of the retransmission share, and at
        least ``MIN_BURST_PACKETS`` full-size packets."""
        return max(MIN_BURST_PACKETS * PACKET_BYTES, self.share * self._bitrate() / 8 * self.burst)

    def decide(self, seq: int, age: float | None, size: int) -> int:
        """How many times to resend packet ``seq`` (``size`` payload bytes; ``age`` None: the
        history no longer has it, otherwise how far behind the newest packet sent, which does not
        matter: see above): 0, 1 or 2."""
        if age is None:
            return self._refuse("gone", seq)
        now = self._clock.monotonic()
        capacity = self._capacity()
        if self._tokens is None:
            self._tokens = capacity
        else:
            rate = self.share * self._bitrate() / 8
            self._tokens = min(capacity, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens < size:
            return self._refuse("over_budget", seq)
        self._tokens -= size
        self.counts["resent"] += 1
        self.resent_bytes += size
        low, high = self.duplicate_loss
        if low <= self.loss <= high and self._tokens >= size:
            self._tokens -= size
            self.counts["duplicated"] += 1
            self.resent_bytes += size
            return 2
        return 1

    def _refuse(self, why: str, seq: int) -> int:
        self.counts[why] += 1
        logger.debug("%r not resending %d: %s", self, seq, why)
        if self._on_unserved is not None:
            self._on_unserved(why)
        return 0

    def __repr__(self) -> str:
        return f"RetransmitGate({self.share:.0%} of the bitrate, {self.counts})"
