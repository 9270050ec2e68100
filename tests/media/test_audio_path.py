"""A tone captured by real alsa-lib is found at its frequency in the far end's playback file."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from appliance.media.audio import (
    AudioCapture,
    AudioPlayback,
    PcmFormat,
    open_capture,
    open_playback,
)
from tests.support import poll
from tests.support.alsa import AlsaSandbox
from tests.support.tone import dominant_frequency, read_pcm, write_tone_file

RATE = 48000


@pytest.fixture
def alsa_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AlsaSandbox:
    return AlsaSandbox.activate(tmp_path / "alsa", monkeypatch)


async def test_direct_path_carries_the_tone(alsa_sandbox: AlsaSandbox, tmp_path: Path) -> None:
    mic = alsa_sandbox.capture_from("mic", write_tone_file(tmp_path / "in.raw", 697.0, 5.0))
    speaker = alsa_sandbox.playback_to("speaker", tmp_path / "out.raw")
    capture = AudioCapture(open_capture(mic))
    playback = AudioPlayback(
        open_playback(speaker, PcmFormat(rate=44100, channels=2, period_frames=882))
    )
    playback.attach(capture)
    await poll.until(lambda: playback.stats.frames_played >= 44100, every=0.02)
    capture.stop()
    await playback.stop()

    out = read_pcm(tmp_path / "out.raw", channels=2)
    assert out.size >= 44100
    assert dominant_frequency(out, rate=44100) == pytest.approx(697.0, abs=2.0)
    assert capture.stats.overruns == 0
    assert capture.stats.frames_captured >= 0.9 * RATE


async def test_tone_crosses_two_peer_connections(alsa_sandbox: AlsaSandbox, tmp_path: Path) -> None:
    mic = alsa_sandbox.capture_from("mic", write_tone_file(tmp_path / "in.raw", 1209.0, 10.0))
    speaker = alsa_sandbox.playback_to("speaker", tmp_path / "out.raw")
    capture = AudioCapture(open_capture(mic))
    playback = AudioPlayback(open_playback(speaker))
    config = RTCConfiguration(iceServers=[])
    sender, receiver = RTCPeerConnection(config), RTCPeerConnection(config)
    received: list[MediaStreamTrack] = []

    @receiver.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        received.append(track)
        playback.attach(track)

    try:
        sender.addTrack(capture)
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        await poll.until(
            lambda: playback.stats.frames_received >= 2 * RATE, within=20.0, every=0.02
        )
    finally:
        await sender.close()
        await receiver.close()
        capture.stop()
        await playback.stop()

    assert [t.kind for t in received] == ["audio"]
    out = read_pcm(tmp_path / "out.raw")
    assert out.size >= 1.5 * RATE
    # Skip the start (Opus and the jitter buffer settle) and look at the tone that came through.
    assert dominant_frequency(out[RATE // 2 :]) == pytest.approx(1209.0, abs=3.0)
    assert capture.stats.frames_captured >= 2 * RATE
