"""Overruns and underruns (-EPIPE, injected around real alsa-lib PCMs) are survived and counted."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from appliance.clock import ManualClock
from appliance.errors import AudioDeviceError
from appliance.media.audio import (
    EPIPE,
    PCM,
    AudioCapture,
    AudioPlayback,
    XrunInjectingPcm,
    open_capture,
    open_playback,
)
from tests.support import poll
from tests.support.alsa import AlsaSandbox
from tests.support.tone import dominant_frequency, read_pcm, tone_samples, write_tone_file

PERIOD = 960


@pytest.fixture
def alsa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AlsaSandbox:
    return AlsaSandbox.activate(tmp_path / "alsa", monkeypatch)


async def test_injected_epipe_looks_like_pyalsaaudio(alsa: AlsaSandbox, tmp_path: Path) -> None:
    mic = alsa.capture_from("mic", write_tone_file(tmp_path / "in.raw", 440.0, 1.0))
    pcm = XrunInjectingPcm(open_capture(mic))
    pcm.inject(1)
    try:
        assert pcm.read() == (-EPIPE, b"")
        frames, data = pcm.read()
        assert (frames, len(data)) == (PERIOD, PERIOD * 2)
    finally:
        pcm.close()
    assert pcm.injected == 1


async def test_capture_survives_and_counts_overruns(alsa: AlsaSandbox, tmp_path: Path) -> None:
    mic = alsa.capture_from("mic", write_tone_file(tmp_path / "in.raw", 523.0, 2.0))
    clock = ManualClock()
    capture = AudioCapture(XrunInjectingPcm(open_capture(mic), every=4), clock=clock)
    frames = []
    try:
        for _ in range(40):
            frames.append(await asyncio.wait_for(capture.recv(), 5.0))
            clock.advance(0.020)
    finally:
        capture.stop()

    assert capture.stats.overruns == 10
    assert capture.stats.periods == 40
    assert capture.stats.frames_captured == 40 * PERIOD
    # Time keeps going through an overrun: pts advance by one period per frame, no gaps, no repeats.
    assert [f.pts for f in frames] == [i * PERIOD for i in range(40)]
    assert {(f.sample_rate, f.samples, f.format.name, f.layout.name) for f in frames} == {
        (48000, PERIOD, "s16", "mono")
    }
    # Every 4th period is the silence that replaced the lost one; the others carry the tone.
    levels = [int(np.abs(f.to_ndarray()).max()) for f in frames]
    assert [i for i, level in enumerate(levels) if level == 0] == list(range(3, 40, 4))
    audio = np.concatenate([f.to_ndarray().reshape(-1) for f in frames[:3]])
    assert dominant_frequency(audio) == pytest.approx(523.0, abs=5.0)


async def test_playback_survives_and_counts_underruns(alsa: AlsaSandbox, tmp_path: Path) -> None:
    speaker = alsa.playback_to("speaker", tmp_path / "out.raw")
    clock = ManualClock()
    pcm = XrunInjectingPcm(open_playback(speaker), every=5)
    playback = AudioPlayback(pcm, clock=clock)
    voice = playback.play(tone_samples(784.0, 0.5))  # 25 periods
    try:
        # the first period is due at once
        await poll.until(lambda: playback.stats.periods >= 1, every=0.002)
        for written in range(2, 32):
            clock.advance(0.020)
            await poll.until(lambda n=written: playback.stats.periods >= n, every=0.002)
        await asyncio.wait_for(voice.wait(), 5.0)
    finally:
        await playback.stop()

    assert playback.stats.underruns >= 6
    assert pcm.injected >= playback.stats.underruns
    out = read_pcm(tmp_path / "out.raw")
    # Each period that hit an underrun was written again (after a silent cushion): no tone is lost.
    blocks = out[: out.size // PERIOD * PERIOD].reshape(-1, PERIOD)
    loud = np.abs(blocks).max(axis=1) > 5000
    assert int(np.count_nonzero(loud)) == 25
    # Between the cushions, the tone continues where it left off.
    assert dominant_frequency(blocks[loud].reshape(-1)) == pytest.approx(784.0, abs=1.0)


class _BreaksAfter:
    """A real PCM that fails like an unplugged USB device after ``calls`` reads/writes."""

    def __init__(self, inner: PCM, calls: int) -> None:
        self._inner = inner
        self._left = calls
        self.name = inner.name
        self.format = inner.format

    def _tick(self) -> None:
        self._left -= 1
        if self._left < 0:
            raise AudioDeviceError(f"ALSA device {self.name!r} failed: No such device")

    def read(self) -> tuple[int, bytes]:
        self._tick()
        return self._inner.read()

    def write(self, data: bytes) -> int:
        self._tick()
        return self._inner.write(data)

    def close(self) -> None:
        self._inner.close()


async def test_a_failing_microphone_ends_the_track(alsa: AlsaSandbox, tmp_path: Path) -> None:
    mic = alsa.capture_from("mic", write_tone_file(tmp_path / "in.raw", 440.0, 1.0))
    clock = ManualClock()
    capture = AudioCapture(_BreaksAfter(open_capture(mic), 2), clock=clock)
    assert (await asyncio.wait_for(capture.recv(), 5.0)).pts == 0
    clock.advance(0.020)
    assert (await asyncio.wait_for(capture.recv(), 5.0)).pts == PERIOD
    clock.advance(0.020)
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(capture.recv(), 5.0)
    assert capture.readyState == "ended"
    assert isinstance(capture.error, AudioDeviceError)
    assert not [t for t in threading.enumerate() if t.name.startswith("audio-capture:")]
    capture.stop()  # idempotent


async def test_a_failing_speaker_stops_its_writer(alsa: AlsaSandbox) -> None:
    clock = ManualClock()
    playback = AudioPlayback(
        _BreaksAfter(open_playback(alsa.null("speaker")), 3), clock=clock, prefill_periods=2
    )
    playback.start()
    await poll.until(lambda: playback.stats.periods >= 1, every=0.002)
    chime = playback.play(tone_samples(600.0, 1.0))
    clock.advance(0.020)
    await poll.until(lambda: playback.error is not None, every=0.002)
    await asyncio.wait_for(chime.wait(), 5.0)  # a pre-announce never hangs its waiter
    late = playback.play(tone_samples(600.0, 1.0))  # on a dead device: finished at once
    await asyncio.wait_for(late.wait(), 5.0)
    assert playback.stats.periods == 1
    assert "No such device" in str(playback.error)
    await playback.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("audio-playback:")]
