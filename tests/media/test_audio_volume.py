"""Volumes from the device config (issue #5 "media ... volumes"): microphone gain, far-end voice
volume and sounds volume, each in dB, clipped at full scale."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import numpy as np
import pytest
from pydantic import ValidationError

from appliance.media.audio import (
    AudioCapture,
    AudioPlayback,
    AudioSettings,
    open_capture,
    open_playback,
)
from appliance.media.audio.playback import _TrackBuffer
from appliance.media.audio.voice import Voice
from tests.support.alsa import AlsaSandbox
from tests.support.tone import write_tone_file


@pytest.fixture
def alsa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AlsaSandbox:
    return AlsaSandbox.activate(tmp_path / "alsa", monkeypatch)


async def first_frame(mic: str, gain_db: float) -> np.ndarray:
    capture = AudioCapture(open_capture(mic), gain_db=gain_db)
    try:
        frame = await asyncio.wait_for(capture.recv(), 5.0)
    finally:
        capture.stop()
    return frame.to_ndarray().astype(np.int32)


async def test_mic_gain_scales_and_clips(alsa: AlsaSandbox, tmp_path: Path) -> None:
    tone = write_tone_file(tmp_path / "in.raw", 440.0, 1.0, amplitude=0.3)
    unity = await first_frame(alsa.capture_from("mic0", tone), 0.0)
    quieter = await first_frame(alsa.capture_from("mic1", tone), -20.0)
    louder = await first_frame(alsa.capture_from("mic2", tone), 20.0)
    assert unity.max() > 5000
    assert quieter.max() == pytest.approx(unity.max() / 10, rel=0.02)
    # 3x full scale: clipped, not wrapped around
    assert (louder.max(), louder.min()) == (32767, -32768)
    assert np.all(np.sign(louder) == np.sign(unity))


async def test_call_and_sounds_volumes_in_the_mix(alsa: AlsaSandbox) -> None:
    pcm = open_playback(alsa.null("speaker"))
    playback = AudioPlayback(pcm, call_volume_db=-20.0, sounds_volume_db=-6.0)
    fmt = pcm.format
    n = fmt.period_frames * fmt.channels
    far_end = _TrackBuffer("far", fmt, 6, playback.stats, target_periods=1)
    frame = av.AudioFrame.from_ndarray(
        np.full((1, fmt.period_frames), 10000, dtype=np.int16), format="s16", layout="mono"
    )
    frame.sample_rate = fmt.rate
    far_end.push(frame)
    playback._buffers["far"] = far_end
    chime = Voice(
        np.full(n, 8000, dtype=np.int16),
        loop=False,
        duck=False,
        loop_ref=asyncio.get_running_loop(),
    )
    playback._voices.append(chime)
    out = np.frombuffer(playback._mix(), dtype="<i2")
    expected = 10000 * 10 ** (-20 / 20) + 8000 * 10 ** (-6 / 20)
    assert out.size == n
    assert np.all(np.abs(out - expected) <= 2)


def test_volumes_are_bounded() -> None:
    AudioSettings(mic_gain_db=6, call_volume_db=-10, sounds_volume_db=-30)
    for bad in ({"mic_gain_db": 40}, {"call_volume_db": 30}, {"sounds_volume_db": -100}):
        with pytest.raises(ValidationError):
            AudioSettings(**bad)  # type: ignore[arg-type]
