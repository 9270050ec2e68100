"""Keyframe requests: PLI from a real aiortc receiver reaches the source through the sender hook."""

from __future__ import annotations

import asyncio

from aiortc import RTCSessionDescription

from appliance.clock import ManualClock
from appliance.media.aiortc_compat import on_keyframe_request
from appliance.media.keyframes import KeyframeLimiter
from appliance.media.negotiation import prefer_h264
from appliance.media.passthrough import VideoFanout
from appliance.media.sources.test import TestSource
from tests.media.video_helpers import VideoReader, loopback_pc
from tests.support import poll


async def test_limiter_forwards_one_then_collapses_a_burst_into_one_deferred() -> None:
    clock = ManualClock()
    calls: list[float] = []
    limiter = KeyframeLimiter(
        lambda: calls.append(clock.monotonic()), min_interval=1.0, clock=clock
    )
    limiter.request("pli")
    for _ in range(29):  # a peer that cannot decode: one PLI per frame
        limiter.request("pli")
        await asyncio.sleep(0)
    assert calls == [0.0]
    clock.advance(0.5)
    await asyncio.sleep(0)
    assert calls == [0.0]
    clock.advance(0.5)
    for _ in range(3):
        await asyncio.sleep(0)
    assert calls == [0.0, 1.0]
    assert (limiter.requested, limiter.forwarded) == (30, 2)
    clock.advance(5)
    limiter.request("fir")
    assert calls == [0.0, 1.0, 6.0]
    limiter.request("peer connected", urgent=True)  # never deferred
    assert calls == [0.0, 1.0, 6.0, 6.0]
    limiter.close()


async def test_pli_from_a_real_receiver_reaches_the_source() -> None:
    source = TestSource(width=192, height=160, framerate=15)
    fanout = VideoFanout(source, gate_open=True, keyframe_interval=0.2)
    track = fanout.track("receiver")
    sender_pc, receiver_pc = loopback_pc(), loopback_pc()
    transceiver = sender_pc.addTransceiver(track, direction="sendonly")
    prefer_h264(transceiver)
    on_keyframe_request(transceiver.sender, lambda: fanout.request_keyframe("PLI"))
    readers: list[VideoReader] = []
    receiver_pc.on("track", lambda t: readers.append(VideoReader(t)))
    try:
        await source.start()
        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await receiver_pc.setRemoteDescription(sender_pc.localDescription)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(
            RTCSessionDescription(receiver_pc.localDescription.sdp, "answer")
        )
        await poll.until(lambda: sender_pc.connectionState == "connected", within=20.0)
        track.activate()
        await poll.until(lambda: bool(readers), within=20.0)
        await readers[0].wait_for(3)
        await asyncio.sleep(0.3)  # past the limiter's interval of the activation request
        before = (source.keyframe_requests, source.keyframes_delivered)
        receiver = receiver_pc.getTransceivers()[0].receiver
        await receiver._send_rtcp_pli(transceiver.sender._ssrc)
        await poll.until(lambda: source.keyframe_requests > before[0], within=20.0)
        await poll.until(lambda: source.keyframes_delivered > before[1], within=20.0)
        assert fanout.limiter.reasons.get("PLI") == 1
    finally:
        for reader in readers:
            await reader.close()
        await sender_pc.close()
        await receiver_pc.close()
        await source.stop()
        fanout.close()
