"""ICE details the peer needs: trickled candidates from the signaling, and a liveness figure.

A trickled candidate arrives as the browser's ``RTCIceCandidate.toJSON()``
(``{candidate, sdpMid, sdpMLineIndex, usernameFragment}``); ``.local`` ones are refused here (see
mdns.py). Liveness is the count of packets of any kind (RTP, RTCP, STUN) the connection received.
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc import RTCIceCandidate, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

from appliance.media.aiortc_compat import transport_stats
from appliance.media.mdns import is_mdns_candidate

logger = logging.getLogger(__name__)


class MdnsCandidate(Exception):
    """The candidate hides its address behind an mDNS name; it is not used."""


def candidate_from_signal(data: dict[str, Any]) -> RTCIceCandidate | None:
    """The candidate of a ``candidate`` signal; ``None`` when malformed.

    Raises :class:`MdnsCandidate` for a ``.local`` one.
    """
    line = str(data.get("candidate", "")).removeprefix("a=")
    if is_mdns_candidate(line):
        raise MdnsCandidate(line)
    try:
        candidate = candidate_from_sdp(line.removeprefix("candidate:"))
    except (AssertionError, ValueError, IndexError):
        logger.debug("ignored a malformed candidate %r", line)
        return None
    candidate.sdpMid = data.get("sdpMid")
    candidate.sdpMLineIndex = data.get("sdpMLineIndex")
    if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
        candidate.sdpMLineIndex = 0
    return candidate


def received_packets(pc: RTCPeerConnection | None) -> int:
    """Packets received on the connection's (bundled) transport so far."""
    if pc is None:
        return 0
    for transceiver in pc.getTransceivers():
        if transceiver.mid is None:
            continue
        stats = transport_stats(transceiver.receiver.transport).values()
        return sum(getattr(s, "packetsReceived", 0) or 0 for s in stats)
    return 0
