"""Settings, device errors, half-duplex and the AudioDevices facade the daemon uses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from appliance.clock import ManualClock
from appliance.errors import AudioDeviceError, ConfigError, HardwareError
from appliance.media.audio import (
    AudioCapture,
    AudioDevices,
    AudioSettings,
    HalfDuplex,
    HalfDuplexSettings,
    open_capture,
    open_playback,
)
from appliance.media.audio.duplex import level_dbfs
from appliance.media.audio.settings import ProcessingSettings
from tests.support import poll
from tests.support.alsa import AlsaSandbox
from tests.support.tone import (
    FedToneTrack,
    dominant_frequency,
    read_pcm,
    tone_samples,
    write_tone_file,
)


@pytest.fixture
def alsa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AlsaSandbox:
    return AlsaSandbox.activate(tmp_path / "alsa", monkeypatch)


def test_settings_accept_alsa_names_and_reject_others() -> None:
    for name in ("default", "pipewire", "plughw:1,0", "plughw:CARD=Device,DEV=0", "dmix"):
        assert AudioSettings(capture_device=name).capture_device == name
    with pytest.raises(ValidationError, match="not an ALSA PCM name"):
        AudioSettings(playback_device="hw 0")
    with pytest.raises(ValidationError, match="extra"):
        AudioSettings.model_validate({"capture_devise": "default"})
    settings = AudioSettings(rate=44100, channels=2, period_ms=10, buffer_ms=100)
    assert settings.playback_format().period_frames == 441
    assert settings.capture_format().rate == 48000 and settings.capture_format().channels == 1
    assert settings.buffer_periods == 10


def test_a_missing_device_is_an_audio_device_error(alsa: AlsaSandbox) -> None:
    with pytest.raises(AudioDeviceError, match="'no-such-mic'") as caught:
        open_capture("no-such-mic")
    assert isinstance(caught.value, HardwareError)
    with pytest.raises(AudioDeviceError, match="playback device 'no-such-speaker'"):
        open_playback("no-such-speaker")


def test_half_duplex_turns_the_mic_down_while_the_far_end_talks() -> None:
    clock = ManualClock()
    duplex = HalfDuplex(HalfDuplexSettings(attenuation_db=20, hold_ms=300), clock)
    assert duplex.mic_gain() == 1.0
    assert level_dbfs(np.zeros(960, dtype=np.int16)) == float("-inf")
    duplex.note_far_end(tone_samples(500.0, 0.02, amplitude=0.001))  # about -63 dBFS: quiet
    assert duplex.mic_gain() == 1.0
    duplex.note_far_end(tone_samples(500.0, 0.02, amplitude=0.3))
    assert duplex.mic_gain() == pytest.approx(0.1)
    clock.advance(0.29)
    assert duplex.active
    clock.advance(0.02)
    assert not duplex.active and duplex.mic_gain() == 1.0


async def test_capture_is_attenuated_while_playback_is_loud(
    alsa: AlsaSandbox, tmp_path: Path
) -> None:
    mic = alsa.capture_from("mic", write_tone_file(tmp_path / "in.raw", 440.0, 2.0))
    clock = ManualClock()
    settings = AudioSettings(
        capture_device=mic,
        playback_device=alsa.null("speaker"),
        half_duplex=HalfDuplexSettings(attenuation_db=20, hold_ms=100),
        processing=ProcessingSettings(noise_suppression=False, high_pass=False),
    )
    devices = AudioDevices.open(settings, clock=clock)
    capture = devices.new_capture()
    # the first period is due at once
    await poll.until(lambda: devices.playback.stats.periods >= 1, every=0.002)
    try:
        quiet = await asyncio.wait_for(capture.recv(), 5.0)
        far_end = FedToneTrack(1000.0, periods=2)
        devices.playback.attach(far_end)
        far_end.feed(2)
        await poll.until(lambda: devices.playback.stats.frames_received >= 2 * 960, every=0.002)
        clock.advance(0.020)  # playback plays the far end; capture may read before or after
        await poll.until(lambda: devices.playback.stats.periods >= 2, every=0.002)
        await asyncio.wait_for(capture.recv(), 5.0)
        clock.advance(0.020)
        loud = await asyncio.wait_for(capture.recv(), 5.0)
        await poll.until(lambda: devices.playback.stats.periods >= 3, every=0.002)
        for _ in range(7):  # the 100 ms hold time passes
            clock.advance(0.020)
            later = await asyncio.wait_for(capture.recv(), 5.0)
    finally:
        await devices.close()
    peak = [int(np.abs(f.to_ndarray()).max()) for f in (quiet, loud, later)]
    assert peak[1] == pytest.approx(peak[0] / 10, rel=0.05)
    assert peak[2] == peak[0]
    assert capture.stats.attenuated >= 1


async def test_devices_stats_add_up_over_calls(alsa: AlsaSandbox, tmp_path: Path) -> None:
    mic = alsa.capture_from("mic", write_tone_file(tmp_path / "in.raw", 440.0, 2.0))
    speaker = alsa.playback_to("speaker", tmp_path / "out.raw")
    clock = ManualClock()
    devices = AudioDevices.open(
        AudioSettings(capture_device=mic, playback_device=speaker), clock=clock
    )
    await poll.until(lambda: devices.playback.stats.periods >= 1, every=0.002)
    try:
        for _call in range(2):
            capture = devices.new_capture()
            assert isinstance(capture, AudioCapture)
            for _ in range(3):
                await asyncio.wait_for(capture.recv(), 5.0)
                clock.advance(0.020)
            capture.stop()
        chime = devices.chimes.play("preannounce")
        for _ in range(40):  # 0.8 s; the pre-announce lasts 0.66 s
            before = devices.playback.stats.periods
            clock.advance(0.020)
            await poll.until(
                lambda before=before: devices.playback.stats.periods > before, every=0.002
            )
        await asyncio.wait_for(chime.wait(), 5.0)
        stats = devices.stats()
    finally:
        await devices.close()
    assert stats["capture"]["periods"] == 6
    assert stats["capture"]["frames_captured"] == 6 * 960
    assert stats["capture"]["overruns"] == 0
    assert stats["playback"]["sounds_played"] == 1
    assert stats["playback"]["underruns"] == 0
    assert stats["devices"] == {"capture": "mic", "playback": "speaker", "half_duplex": False}
    out = read_pcm(tmp_path / "out.raw")
    first_beep = out[np.argmax(np.abs(out) > 1000) :][:4800]
    assert dominant_frequency(first_beep) == pytest.approx(880.0, abs=5.0)


async def test_a_bad_configured_sound_fails_the_open(alsa: AlsaSandbox, tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_text("not audio")
    settings = AudioSettings(playback_device=alsa.null("speaker"), sounds={"chime": broken})
    with pytest.raises(ConfigError, match=r"broken\.wav"):
        AudioDevices.open(settings)


def test_public_names_and_the_alsa_seam() -> None:
    import ast

    import appliance.media.audio as audio

    assert sorted(audio.__all__) == sorted(set(audio.__all__))
    for name in audio.__all__:
        assert hasattr(audio, name), name
    package = Path(audio.__file__).resolve().parents[2]  # appliance/
    importers = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "alsaaudio" for n in names):
                importers.append(path.relative_to(package).as_posix())
    assert importers == ["media/audio/pcm.py"]
