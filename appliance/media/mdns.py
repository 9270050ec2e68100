"""Browser ``.local`` (mDNS) ICE candidates must never block call set-up.

aiortc resolves mDNS candidates inside ``setRemoteDescription``/``addIceCandidate``; where mDNS does
not answer (here, and on many managed networks) that blocks about a second. We drop them instead:
the browser's own connectivity checks reach our candidates and aioice pairs them as
peer-reflexive. When candidates were dropped, ``a=end-of-candidates`` goes too, so aioice keeps
waiting for those peer-reflexive checks instead of failing at once.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def is_mdns_candidate(candidate: str) -> bool:
    """``candidate`` is an SDP ``candidate:`` attribute value (with or without ``a=``)."""
    parts = candidate.split()
    # candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
    return len(parts) > 4 and parts[4].lower().rstrip(".").endswith(".local")


def strip_mdns(sdp: str, *, peer: str = "?") -> tuple[str, int]:
    """Remove mDNS candidates from an SDP; returns the new SDP and how many were removed."""
    lines = sdp.splitlines()
    kept = [x for x in lines if not (x.startswith("a=candidate:") and is_mdns_candidate(x))]
    removed = len(lines) - len(kept)
    if removed:
        kept = [x for x in kept if x != "a=end-of-candidates"]
        logger.debug("Peer(%s) dropped %d mDNS candidate(s) from the remote SDP", peer, removed)
    return "\r\n".join(kept) + "\r\n", removed
