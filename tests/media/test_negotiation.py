"""H.264 wins whoever offers; a peer without H.264 gets aiortc's encoder; mDNS never blocks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from appliance.media.mdns import is_mdns_candidate, strip_mdns
from appliance.media.negotiation import sdp_video_codecs, video_preferences
from appliance.media.passthrough import DecodedVideoTrack, VideoFanout
from appliance.media.peer import Peer
from appliance.media.sources.test import TestSource
from tests.media.video_helpers import VideoReader, Wire, loopback_pc
from tests.support import poll


def browser_like(pc: RTCPeerConnection, *, h264: bool = True) -> None:
    """A receive-only peer that lists VP8 first, as Chromium does."""
    transceiver = pc.addTransceiver("video", direction="recvonly")
    codecs = RTCRtpSender.getCapabilities("video").codecs
    vp8 = [c for c in codecs if c.name == "VP8"]
    rest = [c for c in codecs if c.name != "VP8" and (h264 or c.name != "H264")]
    transceiver.setCodecPreferences(vp8 + rest)


def vp8_first(sdp: str) -> str:
    """Move VP8 to the front of the video m-line, as a VP8-preferring answerer would."""
    lines = sdp.split("\r\n")
    vp8 = next(x.split()[0][len("a=rtpmap:") :] for x in lines if x.endswith("VP8/90000"))
    for i, line in enumerate(lines):
        if line.startswith("m=video"):
            head, pts = line.split()[:3], line.split()[3:]
            lines[i] = " ".join([*head, vp8, *[p for p in pts if p != vp8]])
    return "\r\n".join(lines)


class Capture:
    def __init__(self) -> None:
        self.signals: list[dict[str, Any]] = []

    async def __call__(self, signal: dict[str, Any]) -> None:
        self.signals.append(signal)


def test_preferences_put_constrained_baseline_first() -> None:
    names = [(c.name, c.parameters.get("profile-level-id")) for c in video_preferences()]
    assert names[0] == ("H264", "42e01f")
    assert names[1] == ("H264", "42001f")
    assert names[2][0] == "VP8" and names[-1][0] == "rtx"


async def _answer_browser_offer(
    *, h264: bool, mdns: bool = False
) -> tuple[Peer, RTCPeerConnection, VideoFanout, TestSource, list[VideoReader]]:
    source = TestSource(width=192, height=160, framerate=15)
    fanout = VideoFanout(source, gate_open=True)
    browser = loopback_pc()
    browser_like(browser, h264=h264)
    readers: list[VideoReader] = []
    browser.on("track", lambda t: readers.append(VideoReader(t)))
    capture = Capture()
    peer = Peer("browser", offerer=False, send=capture, ice_servers=[], fanout=fanout)
    await source.start()
    await peer.start()
    await browser.setLocalDescription(await browser.createOffer())
    offer = browser.localDescription.sdp
    assert sdp_video_codecs(offer)[0] == "VP8"
    if mdns:
        # Chromium without camera permission: host candidates hidden behind mDNS names.
        offer = offer.replace(
            "a=end-of-candidates",
            "a=candidate:1 1 udp 2122260223 "
            "1f0e7a9c-0000-4000-8000-000000000001.local 50000 typ host\r\n"
            "a=end-of-candidates",
        )
    peer.deliver({"kind": "offer", "sdp": offer})
    await poll.until(lambda: bool(capture.signals), within=20.0)
    answer = capture.signals[0]
    assert answer["kind"] == "answer" and answer["generation"] == 0
    await browser.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    return peer, browser, fanout, source, readers


async def _teardown(
    peer: Peer,
    browser: RTCPeerConnection,
    fanout: VideoFanout,
    source: TestSource,
    readers: list[VideoReader],
) -> None:
    for reader in readers:
        await reader.close()
    await peer.close()
    await browser.close()
    await source.stop()
    fanout.close()


async def test_h264_wins_when_a_vp8_first_browser_offers() -> None:
    parts = await _answer_browser_offer(h264=True)
    peer, browser, _fanout, _source, readers = parts
    try:
        transceiver = peer._video_transceiver()
        assert transceiver is not None and transceiver.direction == "sendonly"
        assert peer.video_codec == "video/H264"
        assert sdp_video_codecs(peer.pc.localDescription.sdp)[0] == "H264"  # type: ignore[union-attr]
        await poll.until(lambda: peer.state == "connected", within=20.0)
        await poll.until(lambda: bool(readers), within=20.0)
        await readers[0].wait_for(5)
        assert peer.video_track is not None and peer.video_track.packets_sent >= 5
        assert not isinstance(peer.video_track, DecodedVideoTrack)
        # The pictures decoded at the browser side came through the H.264 payload type: a
        # VP8 decoder fed our packets decodes nothing (what a naive answer would have run).
        assert browser.getTransceivers()[0].kind == "video"
    finally:
        await _teardown(*parts)


async def test_h264_wins_when_we_offer_to_a_vp8_first_peer() -> None:
    source = TestSource(width=192, height=160, framerate=15)
    fanout = VideoFanout(source, gate_open=True)
    remote = loopback_pc()
    capture = Capture()
    peer = Peer("remote", offerer=True, send=capture, ice_servers=[], fanout=fanout)
    readers: list[VideoReader] = []
    remote.on("track", lambda t: readers.append(VideoReader(t)))
    try:
        await source.start()
        await peer.start()
        offer = capture.signals[0]
        assert offer["kind"] == "offer" and sdp_video_codecs(offer["sdp"])[0] == "H264"
        # The answerer prefers VP8 and says so first in its answer.
        await remote.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await remote.setLocalDescription(await remote.createAnswer())
        answer = vp8_first(remote.localDescription.sdp)
        assert sdp_video_codecs(answer)[0] == "VP8"
        peer.deliver({"kind": "answer", "sdp": answer, "generation": 0})
        await poll.until(lambda: peer.state == "connected", within=20.0)
        assert peer.video_codec == "video/H264"
        await poll.until(lambda: bool([r for r in readers if r.track.kind == "video"]), within=20.0)
        video = next(r for r in readers if r.track.kind == "video")
        await video.wait_for(5)
    finally:
        for reader in readers:
            await reader.close()
        await peer.close()
        await remote.close()
        await source.stop()
        fanout.close()


async def test_a_peer_without_h264_gets_aiortc_encoder_and_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="appliance.media.negotiation")
    parts = await _answer_browser_offer(h264=False)
    peer, _browser, _fanout, _source, readers = parts
    try:
        assert peer.video_codec == "video/VP8"
        assert isinstance(peer.video_track, DecodedVideoTrack)
        assert "negotiated video/VP8 instead of H.264" in caplog.text
        await poll.until(lambda: bool(readers), within=20.0)
        await readers[0].wait_for(3)  # VP8 re-encoded from our decoded pictures, code intact
    finally:
        await _teardown(*parts)


def test_strip_mdns_removes_local_candidates_and_end_of_candidates() -> None:
    sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\n"
        "a=candidate:1 1 udp 2122260223 abcd-ef.local 50000 typ host\r\n"
        "a=candidate:2 1 udp 2122260223 192.0.2.7 50001 typ host\r\n"
        "a=end-of-candidates\r\n"
    )
    stripped, removed = strip_mdns(sdp)
    assert removed == 1
    assert ".local" not in stripped and "192.0.2.7" in stripped
    assert "end-of-candidates" not in stripped
    assert strip_mdns(stripped) == (stripped, 0)
    assert is_mdns_candidate("candidate:1 1 udp 1 x.local 9 typ host")
    assert not is_mdns_candidate("candidate:1 1 udp 1 10.0.0.1 9 typ host")


async def test_mdns_candidates_never_reach_aioice_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    resolved: list[object] = []

    async def no_mdns(subscriber: object) -> object:
        resolved.append(subscriber)
        raise AssertionError("mDNS resolution attempted")

    monkeypatch.setattr(aioice.ice, "get_or_create_mdns_protocol", no_mdns)
    parts = await _answer_browser_offer(h264=True, mdns=True)
    peer = parts[0]
    try:
        assert peer._mdns_dropped == 1
        peer.deliver(
            {
                "kind": "candidate",
                "candidate": {
                    "candidate": "candidate:3 1 udp 2122260223 99-aa.local 50002 typ host",
                    "sdpMid": "0",
                    "sdpMLineIndex": 0,
                },
            }
        )
        peer.deliver({"kind": "candidate", "candidate": None})
        await poll.until(lambda: peer.state == "connected", within=20.0)
        assert peer._mdns_dropped == 2 and resolved == []
    finally:
        await _teardown(*parts)


async def test_glare_the_smaller_session_id_keeps_its_offer() -> None:
    """Both sides believe they are the newcomer (a join race): they still connect, once."""
    wire = Wire()
    source = TestSource(width=192, height=160, framerate=15)
    fanout = VideoFanout(source, gate_open=True)
    a = Peer(
        "b-2", local="a-1", offerer=True, send=wire.sender("b-2"), ice_servers=[], fanout=fanout
    )
    b = Peer(
        "a-1",
        local="b-2",
        offerer=True,
        send=wire.sender("a-1"),
        ice_servers=[],
        receive_video=True,
    )
    wire.peers = {"a-1": a, "b-2": b}
    readers: list[VideoReader] = []
    b._on_track = lambda _peer, track: readers.append(VideoReader(track))
    try:
        await source.start()
        await asyncio.gather(a.start(), b.start())
        await poll.until(lambda: a.state == "connected" and b.state == "connected", within=20.0)
        assert (a.offerer, b.offerer) == (True, False)
        assert (a.generation, b.generation) == (0, 0)
        assert (a.connections, b.connections) == (1, 2)  # b dropped its own offer, answered anew
        video = next(r for r in readers if r.track.kind == "video")
        await video.wait_for(3)
    finally:
        for reader in readers:
            await reader.close()
        await a.close()
        await b.close()
        await source.stop()
        fanout.close()
