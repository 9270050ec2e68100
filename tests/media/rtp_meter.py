"""What a participant really puts on the wire: every RTP packet counted where aiortc hands it to
the socket, independent of the code under test.

:class:`RtpMeter` wraps aiortc's ``RTCDtlsTransport._send_rtp`` for the whole process (the one
place every RTP and RTCP packet passes on its way to SRTP and the ICE socket; RTCP is left out).
Each packet is kept with its SSRC and the monotonic time it left. Which participant and which kind
an SSRC belongs to comes from the SDPs that participant sent through the call's signaling
(``CallSignaling.send`` is wrapped too): a peer connection can only carry media to a remote that
got its offer or answer, so every packet that reaches anyone is attributed.

It touches aiortc internals on purpose: it is a test instrument that must keep counting whatever
the package under test does with aiortc.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import is_rtcp
from aiortc.sdp import SessionDescription

from appliance.daemon.callsignaling import CallSignaling


@dataclass(frozen=True)
class Sent:
    at: float
    """``time.monotonic()`` when aiortc had handed it to the ICE transport."""
    ssrc: int
    size: int


@dataclass
class RtpMeter:
    packets: list[Sent] = field(default_factory=list, repr=False)
    ssrcs: dict[str, dict[str, set[int]]] = field(default_factory=dict, repr=False)
    """participant session id → kind → SSRCs (RTX included) from the SDPs it sent."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> RtpMeter:
        meter = self
        send_rtp = RTCDtlsTransport._send_rtp
        send_signal = CallSignaling.send

        async def counting_send_rtp(transport: RTCDtlsTransport, data: bytes) -> None:
            await send_rtp(transport, data)
            if not is_rtcp(data) and len(data) >= 12:
                ssrc = int.from_bytes(data[8:12], "big")
                with meter._lock:
                    meter.packets.append(Sent(time.monotonic(), ssrc, len(data)))

        async def noting_send(signaling: CallSignaling, to: str, signal: dict[str, Any]) -> None:
            sdp = signal.get("sdp")
            if isinstance(sdp, str) and signaling.session_id:
                meter.note_sdp(signaling.session_id, sdp)
            await send_signal(signaling, to, signal)

        monkeypatch.setattr(RTCDtlsTransport, "_send_rtp", counting_send_rtp)
        monkeypatch.setattr(CallSignaling, "send", noting_send)
        return self

    def note_sdp(self, session_id: str, sdp: str) -> None:
        kinds = self.ssrcs.setdefault(session_id, {})
        for media in SessionDescription.parse(sdp).media:
            found = kinds.setdefault(media.kind, set())
            found.update(s.ssrc for s in media.ssrc)
            for group in media.ssrc_group:
                found.update(int(i) for i in group.items)

    def ssrcs_of(self, session_id: str, kind: str) -> set[int]:
        """The SSRCs that participant described for ``kind`` so far (all its connections)."""
        return set(self.ssrcs.get(session_id, {}).get(kind, set()))

    def times(
        self, session_id: str, kind: str, *, since: float = 0.0, ssrcs: set[int] | None = None
    ) -> list[float]:
        """Send times of ``kind`` packets by that participant (optionally: of these SSRCs)."""
        wanted = (
            self.ssrcs_of(session_id, kind)
            if ssrcs is None
            else ssrcs & self.ssrcs_of(session_id, kind)
        )
        with self._lock:
            return [p.at for p in self.packets if p.ssrc in wanted and p.at >= since]

    def count(self, session_id: str, kind: str, **kwargs: Any) -> int:
        return len(self.times(session_id, kind, **kwargs))

    def first_after(self, session_id: str, kind: str, since: float) -> float | None:
        """Seconds from ``since`` to the first ``kind`` packet after it, or None."""
        times = self.times(session_id, kind, since=since)
        return min(times) - since if times else None


@contextmanager
def rtp_meter() -> Iterator[RtpMeter]:
    """An installed meter for code that has no ``monkeypatch`` fixture at hand."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield RtpMeter().install(monkeypatch)
