"""What may leave the device, enforced at our own tracks.

Every outgoing frame comes out of one of our tracks (:class:`GatedTrack` for the microphone, the
passthrough video tracks for the camera), and aiortc sends only what a track's ``recv()`` returns.
A :class:`Valve` per kind says whether that kind may leave: open only while the call's gate is
open and that kind is not muted. A closed valve makes the tracks withhold every frame (they keep
reading their source and drop what it gives, so nothing captured while closed is sent later), so
whatever aiortc does to its senders — an answer applied, an ICE restart, a new peer connection —
there is nothing to send. A muted kind sends no packets at all: no silence, no black picture.

aiortc asks a track for its next frame only once it has sent the previous one, so a valve also
knows when closing it has fully taken effect: :meth:`Valve.drained` returns when no frame let
through before the close can still be on its way out (what the LEDs wait for before they say
"nothing leaves").
"""

from __future__ import annotations

import asyncio
import logging

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av.frame import Frame
from av.packet import Packet

logger = logging.getLogger(__name__)

DRAIN_TIMEOUT = 1.0


class Valve:
    """Open or closed for one kind of outgoing media; counts the frames still on their way out."""

    def __init__(self, kind: str, name: str = "call") -> None:
        self.kind = kind
        self.name = name
        self._open = False
        self._in_flight: set[object] = set()
        self._drained = asyncio.Event()
        self._drained.set()

    @property
    def open(self) -> bool:
        return self._open

    def set(self, open_: bool, reason: str) -> None:
        if open_ != self._open:
            self._open = open_
            logger.info("%r %s -> %s (%s)", self, _word(not open_), _word(open_), reason)

    def passed(self, track: object) -> None:
        """``track`` handed a frame to its sender; it is in flight until :meth:`idle`."""
        self._in_flight.add(track)
        self._drained.clear()

    def idle(self, track: object) -> None:
        """``track`` was asked for its next frame (so the last one is out) or stopped."""
        self._in_flight.discard(track)
        if not self._in_flight:
            self._drained.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def drained(self, within: float = DRAIN_TIMEOUT) -> bool:
        """Wait until no frame let through is still being sent; ``False`` if that took longer
        than ``within`` seconds (a sender stuck on a dead transport: it sends nothing either)."""
        try:
            await asyncio.wait_for(self._drained.wait(), within)
        except TimeoutError:
            logger.warning(
                "%r still had %d frame(s) in flight after %.1fs", self, self.in_flight, within
            )
            return False
        return True

    def __repr__(self) -> str:
        return f"Valve({self.name} {self.kind}, {_word(self._open)})"


def _word(open_: bool) -> str:
    return "open" if open_ else "closed"


class GatedTrack(MediaStreamTrack):
    """One peer connection's view of a source track, passing frames only while ``valve`` is open.

    Stopping it stops its source (a per-connection subscription of the call's microphone)."""

    def __init__(self, source: MediaStreamTrack, valve: Valve) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self._valve = valve
        self.frames_passed = 0
        self.frames_withheld = 0

    async def recv(self) -> Frame | Packet:
        self._valve.idle(self)
        while True:
            frame = await self._source.recv()
            if self.readyState != "live":
                raise MediaStreamError
            if self._valve.open:
                self.frames_passed += 1
                self._valve.passed(self)
                return frame
            self.frames_withheld += 1

    def stop(self) -> None:
        super().stop()
        self._source.stop()
        self._valve.idle(self)

    def __repr__(self) -> str:
        return (
            f"GatedTrack({self.kind}, {self._valve!r}, passed={self.frames_passed}, "
            f"withheld={self.frames_withheld})"
        )
