"""One test per hook of appliance.media.aiortc_compat: each fails when aiortc stops behaving as the
hook assumes (a renamed attribute, a changed meaning), plus the version check at import and a scan
that keeps aiortc's private names out of the rest of the package.

Two real aiortc peer connections in loopback; the remote side drives the hooks with what a real
peer sends (an RTCP PLI, an answer, media packets). The tests reach into aiortc themselves where
they must observe it (the sender's own keyframe flag, the receiver's PLI).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiortc
import pytest
import pytest_asyncio
from aiortc import RTCRtpTransceiver, RTCSessionDescription
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    pack_remb_fci,
)

from appliance.errors import ApplianceError, LibraryVersionError
from appliance.media import aiortc_compat
from appliance.media.aiortc_compat import (
    AIORTC_VERSION,
    check_version,
    negotiated_codecs,
    on_keyframe_request,
    on_rtcp_feedback,
    transport_stats,
)
from appliance.media.negotiation import prefer_h264, sdp_video_codecs
from tests.media.video_helpers import ToneTrack, loopback_pc
from tests.support import poll

PACKAGE = Path(aiortc_compat.__file__).resolve().parents[1]
AIORTC = Path(aiortc.__file__).resolve().parent


class Pair:
    """An offerer sending audio and (undecodable, never started) video, and an answerer."""

    def __init__(self) -> None:
        self.offerer = loopback_pc()
        self.answerer = loopback_pc()
        self.audio = self.offerer.addTransceiver(ToneTrack(697.0), direction="sendonly")
        self.video = self.offerer.addTransceiver("video", direction="sendrecv")
        prefer_h264(self.video)
        self.answerer.on("track", lambda track: None)

    async def negotiate(self) -> None:
        await self.offerer.setLocalDescription(await self.offerer.createOffer())
        await self.answerer.setRemoteDescription(self.offerer.localDescription)
        await self.answerer.setLocalDescription(await self.answerer.createAnswer())
        answer = self.answerer.localDescription.sdp
        await self.offerer.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        # Both ends: an RTCP packet the answerer sends before its own DTLS is up is dropped
        # (aiortc's RTCRtpReceiver._send_rtcp swallows the ConnectionError).
        await poll.until(
            lambda: self.offerer.connectionState == self.answerer.connectionState == "connected",
            within=20.0,
        )

    def their(self, transceiver: RTCRtpTransceiver) -> RTCRtpTransceiver:
        return next(t for t in self.answerer.getTransceivers() if t.mid == transceiver.mid)

    async def close(self) -> None:
        await self.offerer.close()
        await self.answerer.close()


@pytest_asyncio.fixture
async def pair() -> AsyncIterator[Pair]:
    p = Pair()
    try:
        yield p
    finally:
        await p.close()


# -- the version check -----------------------------------------------------------------------------


def test_the_version_it_was_written_for_passes_and_any_other_fails_naming_both() -> None:
    check_version(AIORTC_VERSION)
    assert aiortc.__version__ == AIORTC_VERSION  # what pyproject.toml pins
    with pytest.raises(LibraryVersionError) as caught:
        check_version("1.17.0")
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, ApplianceError)
    message = str(caught.value)
    assert "aiortc 1.17.0 is installed" in message and f"aiortc {AIORTC_VERSION}" in message


def test_importing_it_with_another_aiortc_fails_loudly() -> None:
    code = (
        "import aiortc; aiortc.__version__ = '2.0.0'\n"
        "try:\n"
        "    import appliance.media.peer\n"
        "except ImportError as err:\n"
        "    print(type(err).__name__, err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("LibraryVersionError aiortc 2.0.0 is installed"), done.stdout


# -- hook: keyframe requests (RTCRtpSender._send_keyframe) -----------------------------------------


async def test_a_pli_from_the_remote_reaches_the_listener_and_aiortc_still_sees_it(
    pair: Pair,
) -> None:
    hits: list[str] = []
    sender = pair.video.sender
    on_keyframe_request(sender, lambda: hits.append("first"))
    on_keyframe_request(sender, lambda: hits.append("second"))  # installed once per sender
    await pair.negotiate()
    receiver = pair.their(pair.video).receiver
    ssrc = next(s.ssrc for s in (await sender.getStats()).values() if s.type == "outbound-rtp")
    await receiver._send_rtcp_pli(ssrc)
    await poll.until(lambda: hits == ["first"], within=20.0)
    # aiortc's own encoder flag is still set (a sender that fell back to aiortc's encoder).
    assert sender._RTCRtpSender__force_keyframe is True  # type: ignore[attr-defined]


# -- hook: receiver feedback (RTCRtpSender._handle_rtcp_packet) -----------------------------------


async def test_nack_pli_remb_and_reports_from_the_remote_reach_the_feedback_listener(
    pair: Pair,
) -> None:
    heard: list[tuple[str, float]] = []
    sender = pair.video.sender
    on_rtcp_feedback(sender, lambda kind, value: heard.append((kind, value)))
    on_rtcp_feedback(sender, lambda kind, value: heard.append(("twice", value)))  # once only
    await pair.negotiate()
    receiver = pair.their(pair.video).receiver
    ssrc = next(s.ssrc for s in (await sender.getStats()).values() if s.type == "outbound-rtp")
    await receiver._send_rtcp_nack(ssrc, [1, 2, 3])
    await receiver._send_rtcp_pli(ssrc)
    remb = RtcpPsfbPacket(
        fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(250_000, [ssrc])
    )
    await receiver._send_rtcp(remb)
    await poll.until(lambda: ("remb", 250_000.0) in heard, within=20.0)
    assert ("nack", 3.0) in heard and ("pli", 1.0) in heard
    info = RtcpReceiverInfo(
        ssrc=ssrc, fraction_lost=64, packets_lost=5, highest_sequence=100, jitter=0, lsr=0, dlsr=0
    )
    await receiver._send_rtcp(RtcpRrPacket(ssrc=1, reports=[info]))
    await poll.until(lambda: ("report", 0.25) in heard, within=20.0)
    assert all(kind != "twice" for kind, _ in heard)


# -- hook: negotiated codecs (RTCRtpTransceiver._codecs) -------------------------------------------


async def test_negotiated_codecs_are_the_answers_codecs_in_order(pair: Pair) -> None:
    assert negotiated_codecs(pair.video) == []
    await pair.negotiate()
    answered = sdp_video_codecs(pair.answerer.localDescription.sdp)
    codecs = negotiated_codecs(pair.video)
    assert [c.name for c in codecs] == answered
    assert codecs[0].mimeType == "video/H264"
    assert codecs[0].parameters.get("profile-level-id") == "42e01f"
    assert negotiated_codecs(pair.audio)[0].mimeType == "audio/opus"


# -- hook: transport statistics (RTCDtlsTransport._get_stats) --------------------------------------


async def test_transport_stats_count_the_packets_that_arrive(pair: Pair) -> None:
    await pair.negotiate()
    transport = pair.their(pair.audio).receiver.transport

    def received() -> int:
        entries = [s for s in transport_stats(transport).values() if s.type == "transport"]
        assert len(entries) == 1
        return int(entries[0].packetsReceived)

    first = received()
    # half a second of the offerer's audio
    await poll.until(lambda: received() >= first + 25, within=20.0)
    (sent,) = transport_stats(pair.audio.sender.transport).values()
    assert sent.packetsSent > 25


# -- nothing else in the package uses aiortc's private names ------------------------------------------


def _aiortc_private_names() -> set[str]:
    names: set[str] = set()
    for path in AIORTC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        names |= set(re.findall(r"def (_[a-z]\w*)", text))
        names |= set(re.findall(r"self\.(_[a-z]\w*)\s*(?::[^=\n]*)?=", text))
    return names


def test_no_aiortc_private_name_outside_the_compatibility_module() -> None:
    private = _aiortc_private_names()
    assert {"_enabled", "_codecs", "_get_stats", "_send_keyframe", "_send_rtp"} <= private
    access = re.compile(r"(\w+)\s*\.\s*(_[a-z]\w*)\b")
    by_name = re.compile(r"""(?:getattr|setattr|hasattr)\([^,]+,\s*["'](_[a-z]\w*)["']""")
    mangled = re.compile(r"_RTC\w+__\w+")
    found: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "aiortc_compat.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            names = [n for obj, n in access.findall(line) if obj not in ("self", "cls")]
            names += by_name.findall(line) + mangled.findall(line)
            for name in names:
                if name in private or name.startswith("_RTC"):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {name}")
    assert found == [], "aiortc internals outside aiortc_compat.py:\n" + "\n".join(found)
