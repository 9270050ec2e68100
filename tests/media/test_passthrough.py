"""Passthrough: queues drop to keyframes, the gate holds everything, H.264 reaches a real receiver."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av
from aiortc import RTCSessionDescription

from appliance.media.annexb import access_units, is_keyframe, nal_types, nal_units
from appliance.media.negotiation import negotiated_codec, prefer_h264
from appliance.media.passthrough import VideoFanout
from appliance.media.sources.base import EncodedFrame
from appliance.media.sources.test import TestSource
from tests.media.video_helpers import ScriptedSource, VideoReader, loopback_pc
from tests.support import poll


async def test_track_starts_at_a_keyframe_and_returns_av_packets() -> None:
    source = ScriptedSource()
    await source.start()
    fanout = VideoFanout(source, gate_open=True)
    track = fanout.track("bob")
    track.activate()
    assert source.force_next  # activation asks the source for a keyframe
    source.force_next = False
    source.push()  # libx264's first picture is an IDR
    source.push()
    assert track.packets_offered == 2
    packet = await track.recv()
    assert isinstance(packet, av.Packet)
    assert packet.pts == 0 and packet.time_base == Fraction(1, 90000)
    assert is_keyframe(bytes(packet))
    assert nal_types(bytes(packet))[:2] == [7, 8]  # SPS and PPS in front of the IDR
    assert track.first_packet_keyframe is True


async def test_packets_before_the_first_keyframe_are_dropped() -> None:
    source = ScriptedSource()
    await source.start()
    source.push(keyframe=True)
    fanout = VideoFanout(source, gate_open=True)
    track = fanout.track("late")
    track.activate()
    source.force_next = False
    for _ in range(3):
        source.push()
    assert (track.packets_offered, track.packets_dropped, len(track._queue)) == (3, 3, 0)
    source.push(keyframe=True)
    source.push()
    assert len(track._queue) == 2
    assert is_keyframe(bytes(await track.recv()))
    assert track.first_packet_keyframe is True


async def test_overflow_drops_to_the_next_keyframe_never_single_p_frames() -> None:
    source = ScriptedSource()
    await source.start()
    fanout = VideoFanout(source, gate_open=True, max_queue=4, keyframe_interval=0)
    slow = fanout.track("slow")
    fast = fanout.track("fast")
    slow.activate()
    fast.activate()
    source.force_next = False
    source.push(keyframe=True)
    for _ in range(3):
        source.push()
    assert len(slow._queue) == 4
    requests = source.keyframe_requests
    source.push()  # P-frame into a full queue: the queue is dropped, wait for a keyframe
    assert slow.overflows == 1 and len(slow._queue) == 0
    assert source.keyframe_requests == requests + 2  # one per overflowing peer, no rate limit here
    source.force_next = False  # the camera has not reacted yet: another P-frame, dropped
    source.push()
    assert len(slow._queue) == 0
    source.push(keyframe=True)
    assert len(slow._queue) == 1 and slow._queue[0].keyframe
    # Each peer has its own queue: the other one overflowed on its own and recovered the same way.
    assert fast.overflows == 1 and fast._queue[0].keyframe


async def test_gate_and_camera_mute_hold_every_packet() -> None:
    source = ScriptedSource()
    await source.start()
    fanout = VideoFanout(source, keyframe_interval=0)  # gate closed
    track = fanout.track("bob")
    track.activate()
    source.push(keyframe=True)
    source.push()
    assert track.packets_offered == 0 and fanout.frames_held == 2
    source.force_next = False
    fanout.open_gate()
    assert source.force_next  # opening the gate asks for a keyframe for the waiting peers
    source.push()
    assert len(track._queue) == 1 and track._queue[0].keyframe
    fanout.pause()
    assert len(track._queue) == 0  # queued before the mute: dropped, never sent after it
    source.push()
    assert len(track._queue) == 0 and not fanout.valve.open
    waiting = asyncio.ensure_future(track.next_frame())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()  # the sender gets nothing while muted
    fanout.resume()
    assert len(track._queue) == 0 and fanout.valve.open
    source.push()
    assert (await waiting).keyframe  # unmuted: a fresh keyframe first


def test_access_units_split_an_elementary_stream() -> None:
    encoded: list[EncodedFrame] = []
    source = ScriptedSource()
    source._running = True
    source.add_sink(encoded.append)
    for i in range(6):
        source.push(keyframe=i == 3)
    stream = b"".join(f.data for f in encoded)
    units = list(access_units(stream))
    assert [is_keyframe(u) for u in units] == [f.keyframe for f in encoded]
    assert [list(nal_units(u)) for u in units] == [list(nal_units(f.data)) for f in encoded]


async def test_h264_passthrough_reaches_a_real_receiver() -> None:
    """Two aiortc peer connections in loopback: the receiver decodes our packets."""
    source = TestSource(width=320, height=240, framerate=15)
    fanout = VideoFanout(source, gate_open=True)
    track = fanout.track("receiver")
    sender_pc = loopback_pc()
    receiver_pc = loopback_pc()
    transceiver = sender_pc.addTransceiver(track, direction="sendonly")
    prefer_h264(transceiver)
    readers: list[VideoReader] = []
    receiver_pc.on("track", lambda t: readers.append(VideoReader(t)))
    states: list[str] = []
    sender_pc.on("connectionstatechange", lambda: states.append(sender_pc.connectionState))
    try:
        await source.start()
        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await receiver_pc.setRemoteDescription(sender_pc.localDescription)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(
            RTCSessionDescription(receiver_pc.localDescription.sdp, "answer")
        )
        codec = negotiated_codec(transceiver)
        assert codec is not None and codec.mimeType == "video/H264"
        await poll.until(lambda: sender_pc.connectionState == "connected", within=20.0)
        track.activate()
        await poll.until(lambda: bool(readers), within=20.0)
        await readers[0].wait_for(10)
        counters = [c.counter for c in readers[0].codes]
        assert counters == sorted(counters) and len(set(counters)) == len(counters)
        assert track.packets_sent >= 10 and track.first_packet_keyframe is True
        assert states == ["connecting", "connected"]
    finally:
        for reader in readers:
            await reader.close()
        await sender_pc.close()
        await receiver_pc.close()
        await source.stop()
        fanout.close()
    await asyncio.sleep(0)
