"""Two (and three) CallMedia sessions in one call through a REAL server and the real client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from appliance.client import Client
from appliance.daemon.callsignaling import CallSignaling
from appliance.media.passthrough import DecodedVideoTrack
from appliance.media.session import CallMedia
from appliance.media.sources.test import TestSource
from tests.media.rtp_meter import RtpMeter
from tests.media.video_helpers import Participant, ToneTrack
from tests.support import poll
from tests.support.server import ServerHandle, running_server
from tests.support.tone import dominant_frequency

CALL_ID = "door-1"
DOOR_TONE, ALICE_TONE = 697.0, 1209.0


def participant(srv: ServerHandle, user: str, **media: object) -> Participant:
    return Participant(srv.base_url, srv.api_key, srv.user_token(user), user, CALL_ID, **media)


@pytest_asyncio.fixture
async def srv(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    async with running_server(tmp_path, users=["door", "alice", "bob"]) as handle:
        yield handle


async def test_two_sessions_exchange_h264_passthrough_and_audio(
    srv: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    meter = RtpMeter().install(monkeypatch)
    source = TestSource(width=320, height=240, framerate=15)
    door = participant(srv, "door", video=source, audio=ToneTrack(DOOR_TONE))
    alice = participant(srv, "alice", audio=ToneTrack(ALICE_TONE), receive_video=True)
    try:
        await door.media.start()
        info = await alice.media.start()  # the newcomer offers to the door
        assert info.participants == [door.media.session_id]
        assert alice.media.peers[door.media.session_id].offerer
        await poll.until(lambda: len(door.kinds("peer.connected")) == 1, within=20.0)
        await poll.until(lambda: len(alice.kinds("peer.connected")) == 1, within=20.0)
        door_peer = door.media.peers[alice.media.session_id]

        # The gate: connected, the camera runs, but nothing leaves until the daemon opens it
        # (15 frames: a second in which ~50 audio packets would have left; every negotiation
        # and restart case is in test_privacy.py).
        await poll.until(lambda: door.media.fanout.frames_held >= 15, within=20.0)  # type: ignore[union-attr]
        assert door_peer.video_track is not None and door_peer.video_track.packets_sent == 0
        assert door.kinds("first_packet") == []
        door_id = door.media.session_id or ""
        assert meter.count(door_id, "audio") == 0 == meter.count(door_id, "video")
        door.media.open_gate()
        alice.media.open_gate()

        # A device without a display: send-only video; H.264 negotiated and carried by passthrough.
        video = door_peer._video_transceiver()
        assert video is not None and video.currentDirection == "sendonly"
        assert door_peer.video_codec == "video/H264"
        await poll.until(lambda: len(alice.video) == 1, within=20.0)
        await alice.video[0].wait_for(15)
        counters = [c.counter for c in alice.video[0].codes]
        assert counters == sorted(counters) and counters[-1] > counters[0]
        track = door_peer.video_track
        assert not isinstance(track, DecodedVideoTrack)
        assert track.packets_sent >= 15 and track.first_packet_keyframe is True
        first = door.kinds("first_packet")
        assert [(e.peer, e.detail["keyframe"]) for e in first] == [(alice.media.session_id, True)]  # type: ignore[index]

        # Audio both ways, found by its frequency.
        await poll.until(lambda: bool(alice.audio) and alice.audio[0].seconds > 1.5, within=20.0)
        await poll.until(lambda: bool(door.audio) and door.audio[0].seconds > 1.5, within=20.0)
        assert dominant_frequency(alice.audio[0].samples(1.0)) == pytest.approx(DOOR_TONE, abs=5)
        assert dominant_frequency(door.audio[0].samples(1.0)) == pytest.approx(ALICE_TONE, abs=5)

        # Microphone mute: the door stops sending audio (video goes on), then sends again.
        door.media.mute_microphone(True)
        await asyncio.sleep(0.1)  # packets already on the way
        heard = alice.audio[0].seconds
        await alice.video[0].wait_for(len(alice.video[0].codes) + 20)  # ~1.3 s of video
        assert alice.audio[0].seconds - heard < 0.3  # (unmuted: ~1.3 s)
        door.media.mute_microphone(False)
        await poll.until(lambda: alice.audio[0].seconds > heard + 0.5, within=20.0)

        # A keyframe request from the receiver (a real RTCP PLI) reaches the source.
        requests = source.keyframe_requests
        alice_peer = alice.media.peers[door.media.session_id]
        receiver = alice_peer._video_transceiver().receiver  # type: ignore[union-attr]
        await receiver._send_rtcp_pli(video.sender._ssrc)
        await poll.until(lambda: source.keyframe_requests > requests, within=20.0)
        assert door.media.fanout.limiter.reasons.get(f"{alice.media.session_id} PLI/FIR")  # type: ignore[union-attr]

        # Peer media survives the server going away.
        seen = len(alice.video[0].codes)
        await srv.stop()
        await alice.video[0].wait_for(seen + 10)
        assert door_peer.state == "connected"
    finally:
        await alice.close()
        await door.close()


async def test_late_joiner_first_packet_is_a_keyframe_and_mute_stops_sending(
    srv: ServerHandle,
) -> None:
    source = TestSource(width=192, height=160, framerate=15, keyframe_interval=30.0)
    door = participant(srv, "door", video=source, gate_open=True)
    alice = participant(srv, "alice", receive_video=True, gate_open=True)
    bob = participant(srv, "bob", receive_video=True, gate_open=True)
    try:
        await door.media.start()
        await alice.media.start()
        await poll.until(lambda: len(alice.video) == 1, within=20.0)
        await alice.video[0].wait_for(10)  # long past the first keyframe (none due for 30 s)
        info = await bob.media.start()
        assert sorted(info.participants) == sorted([door.media.session_id, alice.media.session_id])
        await poll.until(lambda: len(bob.video) == 1, within=20.0)
        await bob.video[0].wait_for(3)
        bob_track = door.media.peers[bob.media.session_id].video_track
        assert bob_track is not None and bob_track.first_packet_keyframe is True
        assert bob.media.peers[alice.media.session_id].state == "connected"

        # Camera mute: nothing is offered to the peers while the source keeps running.
        door.media.mute_camera(True)
        sent = bob_track.packets_sent
        frames_in = door.media.fanout.frames_in  # type: ignore[union-attr]
        await poll.until(lambda: door.media.fanout.frames_in >= frames_in + 5, within=20.0)  # type: ignore[union-attr]
        assert bob_track.packets_sent == sent
        door.media.mute_camera(False)
        await bob.video[0].wait_for(len(bob.video[0].codes) + 3)

        # Leaving: the others see the peer leave.
        await bob.media.stop()
        await poll.until(lambda: bool(door.kinds("peer.left")), within=20.0)
        assert bob.media.session_id not in door.media.peers
    finally:
        await bob.close()
        await alice.close()
        await door.close()


async def test_received_tracks_without_a_consumer_are_drained(srv: ServerHandle) -> None:
    """A device that neither plays the far end's audio nor shows its video still reads both
    tracks; otherwise aiortc queues every decoded frame forever (memory grows all call long)."""
    source = TestSource(width=192, height=160, framerate=15)
    door = participant(srv, "door", video=source, audio=ToneTrack(697.0), gate_open=True)
    client = Client(srv.base_url, srv.api_key, srv.user_token("alice"))
    quiet = CallMedia(
        CallSignaling(client.call("default", CALL_ID), create=True),
        receive_video=True,
        gate_open=True,
        name="alice-no-consumer",
    )
    try:
        await door.media.start()
        await quiet.start()
        await poll.until(lambda: door.media.session_id in quiet.peers, within=20.0)
        peer = quiet.peers[door.media.session_id]
        await poll.until(lambda: peer.state == "connected", within=20.0)

        async def received() -> dict[str, int]:
            assert peer.pc is not None
            stats = (await peer.pc.getStats()).values()
            return {
                s.kind: s.packetsReceived for s in stats if getattr(s, "type", "") == "inbound-rtp"
            }

        await poll.until(lambda: len(quiet._drains) == 2, within=20.0)  # audio and video
        first = await received()

        async def arrived() -> bool:  # ~2 s of audio (100 frames) and video
            now = await received()
            return now.get("audio", 0) >= first.get("audio", 0) + 100 and now.get("video", 0) > 30

        await poll.until(arrived, 20.0, what=f"media after {first}", every=0.1)
        assert peer.pc is not None
        backlog = {
            r.track.kind: r.track._queue.qsize()  # type: ignore[attr-defined]
            for r in peer.pc.getReceivers()
        }
        assert backlog["audio"] <= 10 and backlog["video"] <= 10, backlog
    finally:
        await quiet.stop()
        await client.aclose()
        await door.close()
