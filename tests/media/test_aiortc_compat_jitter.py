"""The audio jitter-buffer hook of ``appliance.media.aiortc_compat``, against real aiortc."""

from __future__ import annotations

import asyncio
import importlib
import time

import aiortc
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack
from aiortc.rtp import RtpPacket

from appliance.errors import LibraryVersionError
from appliance.media import aiortc_compat
from appliance.media.audio.jitter import AudioJitterBuffer, JitterEstimator
from tests.support import poll


@pytest.fixture(autouse=True)
def _clean_hook() -> object:
    aiortc_compat.uninstall_audio_jitter_buffer()
    yield
    aiortc_compat.uninstall_audio_jitter_buffer()


def test_another_aiortc_version_fails_the_import_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    with pytest.raises(LibraryVersionError, match=r"aiortc 1\.17\.0 is installed") as info:
        importlib.reload(aiortc_compat)
    assert isinstance(info.value, ImportError)
    monkeypatch.undo()
    importlib.reload(aiortc_compat)


async def _call(
    seconds: float,
) -> tuple[RTCPeerConnection, RTCPeerConnection, list[float], list[float]]:
    """An aiortc audio call on loopback; times each frame was sent and received (same index)."""
    source = AudioStreamTrack()
    sent: list[float] = []
    received: list[float] = []
    original = source.recv

    async def recv():  # type: ignore[no-untyped-def]
        frame = await original()
        sent.append(time.monotonic())
        return frame

    source.recv = recv  # type: ignore[method-assign]
    a, b = (
        RTCPeerConnection(RTCConfiguration(iceServers=[])),
        RTCPeerConnection(RTCConfiguration(iceServers=[])),
    )

    @b.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        async def read() -> None:
            while True:
                await track.recv()
                received.append(time.monotonic())

        asyncio.get_running_loop().create_task(read())

    a.addTrack(source)
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    await poll.until(lambda: len(received) >= seconds / 0.020, 20, what="frames", every=0.02)
    return a, b, sent, received


async def test_audio_receivers_get_our_buffer_and_frames_come_out_on_arrival() -> None:
    # without the hook: aiortc's own buffer, prefetching 4 frames (our premise)
    a, b, sent, received = await _call(1.0)
    receiver = b.getTransceivers()[0].receiver
    theirs = aiortc_compat.audio_jitter_buffer(receiver)
    assert type(theirs) is JitterBuffer and theirs._prefetch == 4
    n = len(received)
    held_theirs = len(sent) - n
    await a.close()
    await b.close()

    aiortc_compat.install_audio_jitter_buffer(AudioJitterBuffer)
    a, b, sent, received = await _call(1.0)
    ours = aiortc_compat.audio_jitter_buffer(b.getTransceivers()[0].receiver)
    await a.close()
    await b.close()
    assert isinstance(ours, AudioJitterBuffer)
    assert ours.packets >= 50 and ours.lost == 0 and ours.late == 0
    # frames handed on per packet: aiortc's holds four frames back, ours none (counted, not timed)
    assert held_theirs >= 4
    assert len(sent) - len(received) <= 2


async def test_video_receivers_keep_aiortcs_buffer() -> None:
    aiortc_compat.install_audio_jitter_buffer(AudioJitterBuffer)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = pc.addTransceiver("video", direction="recvonly")
    audio = pc.addTransceiver("audio", direction="recvonly")
    assert type(aiortc_compat.audio_jitter_buffer(video.receiver)) is JitterBuffer
    assert isinstance(aiortc_compat.audio_jitter_buffer(audio.receiver), AudioJitterBuffer)
    await pc.close()


def _packet(seq: int) -> RtpPacket:
    packet = RtpPacket(payload_type=111, sequence_number=seq % 65536, timestamp=seq * 960)
    packet._data = bytes([seq % 256])  # type: ignore[attr-defined]
    return packet


def test_our_buffer_passes_gaps_drops_late_packets_and_follows_a_restart() -> None:
    buffer = AudioJitterBuffer()
    out = [buffer.add(_packet(s))[1] for s in (65534, 65535, 0, 2, 1, 3, 5000, 4999, 10, 11)]
    assert [f is not None for f in out] == [
        True,
        True,
        True,
        True,
        False,
        True,
        True,
        False,
        True,
        True,
    ]
    assert buffer.lost == 1 + (5000 - 3 - 1)  # the 1 skipped, then the jump
    assert buffer.late == 2  # 1 after 2, and 4999 after 5000; 10 after 5000 is a restart
    assert out[3] is not None and out[3].data == bytes([2])


def test_the_playout_level_follows_the_measured_jitter() -> None:
    steady = JitterEstimator(0.020)
    jittery = JitterEstimator(0.020)
    for k in range(200):
        steady.arrived(k * 0.020 + 0.001 * (k % 2), k * 0.020)
        jittery.arrived(k * 0.020 + (0.045 if k % 10 == 0 else 0.0), k * 0.020)
    assert steady.target_periods == 1
    assert jittery.target_periods == 3  # 45 ms late now and then: 45 + 10 → 3 periods
