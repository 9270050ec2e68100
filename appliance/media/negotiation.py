"""Codec negotiation: H.264 constrained baseline with packetization-mode=1 wins whoever offers.

Chromium offers VP8 first and aiortc's answer follows the offer's order, so a naive call runs VP8
and passthrough H.264 sent as VP8 never decodes. aiortc orders the codecs it negotiates by the
transceiver's codec preferences (``filter_preferred_codecs``) both when it offers and when it
answers an offer matched to a transceiver we created beforehand, so every video transceiver gets
the H.264-first preference list below. VP8 stays at the end: a peer without H.264 still gets
video, from aiortc's own encoder (see :func:`needs_reencode`).
"""

from __future__ import annotations

import logging

from aiortc import RTCRtpSender, RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters

from appliance.media.aiortc_compat import negotiated_codecs

logger = logging.getLogger(__name__)

CONSTRAINED_BASELINE = "42e01f"


def _h264_rank(codec: RTCRtpCodecCapability) -> int:
    params = codec.parameters
    if str(params.get("packetization-mode")) != "1":
        return 3
    return 0 if str(params.get("profile-level-id", "")).lower() == CONSTRAINED_BASELINE else 1


def video_preferences() -> list[RTCRtpCodecCapability]:
    """aiortc's video codecs, H.264 constrained baseline first, other H.264, then the rest, RTX last."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    h264 = sorted((c for c in codecs if c.name.lower() == "h264"), key=_h264_rank)
    rtx = [c for c in codecs if c.name.lower() == "rtx"]
    rest = [c for c in codecs if c.name.lower() not in ("h264", "rtx")]
    return h264 + rest + rtx


def prefer_h264(transceiver: RTCRtpTransceiver) -> None:
    if transceiver.kind == "video":
        transceiver.setCodecPreferences(video_preferences())


def negotiated_codec(transceiver: RTCRtpTransceiver) -> RTCRtpCodecParameters | None:
    """The codec the transceiver sends with (the first negotiated one that is not RTX)."""
    for codec in negotiated_codecs(transceiver):
        if codec.name.lower() != "rtx":
            return codec
    return None


def is_passthrough_codec(codec: RTCRtpCodecParameters | None) -> bool:
    return (
        codec is not None
        and codec.name.lower() == "h264"
        and str(codec.parameters.get("packetization-mode")) == "1"
    )


def needs_reencode(transceiver: RTCRtpTransceiver, peer: str) -> bool:
    """True (and a warning) when the peer cannot take our H.264 as is."""
    codec = negotiated_codec(transceiver)
    if is_passthrough_codec(codec):
        return False
    name = codec.mimeType if codec is not None else "none"
    logger.warning(
        "Peer(%s) negotiated %s instead of H.264: video is decoded and re-encoded by aiortc "
        "(costs CPU, a Pi may not keep up)",
        peer,
        name,
    )
    return True


def sdp_video_codecs(sdp: str) -> list[str]:
    """Codec names of the first video m-line of an SDP, in order (for tests and logs)."""
    rtpmap: dict[str, str] = {}
    order: list[str] = []
    in_video = False
    for line in sdp.splitlines():
        if line.startswith("m="):
            if in_video:
                break
            in_video = line.startswith("m=video")
            if in_video:
                order = line.split()[3:]
        elif in_video and line.startswith("a=rtpmap:"):
            pt, _, name = line[len("a=rtpmap:") :].partition(" ")
            rtpmap[pt] = name.split("/")[0]
    return [rtpmap.get(pt, pt) for pt in order]
