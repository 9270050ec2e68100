"""Audio processing on the device: config, the far-end reference (chimes included), the room.

The APM is the real one (livekit's WebRTC); :class:`RecordingApm` only notes what passes
through it, so the tests see exactly what the echo canceller was given.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from appliance.clock import ManualClock
from appliance.daemon.config import load_config
from appliance.errors import ConfigError
from appliance.media.audio import AudioDevices, AudioSettings
from appliance.media.audio.apm import open_apm
from appliance.media.audio.room import Room, RoomSettings
from tests.daemon.test_config import GOOD, write
from tests.support import poll
from tests.support.alsa import AlsaSandbox
from tests.support.speech import FAR_END, speech
from tests.support.tone import dominant_frequency, read_pcm, write_tone_file


class RecordingApm:
    """The real APM, with a note of every reference and capture frame it is given."""

    def __init__(self) -> None:
        self._inner = open_apm(
            echo_cancellation=True, noise_suppression=True, high_pass=True, auto_gain=False
        )
        self.reverse: list[np.ndarray] = []
        self.capture: list[np.ndarray] = []
        self.order: list[str] = []

    def process_reverse(self, frame: np.ndarray, rate: int, channels: int) -> None:
        self.reverse.append(frame.copy())
        self.order.append("r")
        self._inner.process_reverse(frame, rate, channels)

    def process(self, frame: np.ndarray, rate: int) -> np.ndarray:
        self.capture.append(frame.copy())
        self.order.append("c")
        return self._inner.process(frame, rate)

    def set_stream_delay_ms(self, delay_ms: int) -> None:
        self._inner.set_stream_delay_ms(delay_ms)

    def close(self) -> None:
        self._inner.close()


@pytest.fixture
def alsa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AlsaSandbox:
    return AlsaSandbox.activate(tmp_path / "alsa", monkeypatch)


# -- config --------------------------------------------------------------------------------

AUDIO = "media:\n  audio:\n    capture_device: default\n"


@pytest.mark.parametrize(
    ("extra", "line", "needle"),
    [
        (
            "    processing: {echo_cancellation: true}\n    half_duplex: {hold_ms: 300}\n",
            13,
            "media.audio.half_duplex: half_duplex and processing.echo_cancellation cannot both",
        ),
        ("    processing: {echo_canceller: true}\n", 12, "media.audio.processing.echo_canceller"),
        ("    period_ms: 25\n", 10, "period_ms 25 is not a multiple of 10"),
        ("    jitter_ms: 5000\n", 12, "media.audio.jitter_ms"),
    ],
)
def test_processing_config_mistakes_name_file_and_line(
    tmp_path: Path, extra: str, line: int, needle: str
) -> None:
    path = write(tmp_path, GOOD + AUDIO + extra)
    with pytest.raises(ConfigError) as info:
        load_config(path, state_dir=tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert needle in message


def test_processing_defaults_and_half_duplex_as_the_fallback() -> None:
    on = AudioSettings()
    assert (on.echo_cancellation, on.processing.noise_suppression, on.processing.high_pass) == (
        True,
        True,
        True,
    )
    assert on.processing.auto_gain is False and on.target_periods is None
    fallback = AudioSettings.model_validate({"half_duplex": {}})
    assert fallback.echo_cancellation is False and fallback.processing.noise_suppression
    off = AudioSettings.model_validate({"processing": {"echo_cancellation": False}})
    assert off.echo_cancellation is False and off.half_duplex is None


# -- the reference: exactly what the speaker took, chimes included ---------------------------


async def test_the_reference_is_what_the_speaker_played_chime_included(
    alsa: AlsaSandbox, tmp_path: Path
) -> None:
    mic = alsa.capture_from("mic", write_tone_file(tmp_path / "in.raw", 300.0, 10.0))
    speaker_file = tmp_path / "out.raw"
    speaker = alsa.playback_to("speaker", speaker_file)
    clock = ManualClock()
    apm = RecordingApm()
    settings = AudioSettings(capture_device=mic, playback_device=speaker, sounds_volume_db=-6)
    devices = AudioDevices(settings, _open(speaker, settings), clock=clock, apm=apm)
    devices.playback.start()
    capture = devices.new_capture()
    capture.start()
    chime = devices.chimes.play("chime")
    try:
        for step in range(1, 61):  # 1.2 s of both threads, in lockstep with the manual clock
            await poll.until(lambda s=step: devices.playback.stats.periods >= s)  # type: ignore[misc]
            await asyncio.wait_for(capture.recv(), 5.0)
            clock.advance(0.020)
    finally:
        chime.stop()
        await devices.close()
    assert apm.reverse and apm.capture
    reference = np.concatenate(apm.reverse)
    played = read_pcm(speaker_file)
    # every frame handed to the APM is the speaker's output, in order, from the period the
    # microphone started on (the speaker ran first); the file plugin writes one buffer late
    n = min(played.size, reference.size) - 20 * 960
    assert n > 25 * 960
    starts = [
        k for k in range(0, 20 * 960, 480) if np.array_equal(reference[:n], played[k : k + n])
    ]
    assert starts, "the reference is not the speaker's output"
    # the chime is in it, at its volume (E5 first: 659 Hz), not just silence
    loud = int(np.flatnonzero(np.abs(reference) > 1000)[0])
    assert dominant_frequency(reference[loud : loud + 9600]) == pytest.approx(659.25, abs=3)
    assert int(np.abs(reference).max()) == pytest.approx(0.5 * 32767 * 10 ** (-6 / 20), rel=0.05)
    # 10 ms frames; the reference reaches the APM all along the capture, not in one lump (how
    # many capture periods pass before the speaker's first period depends on the machine's load)
    assert {f.size for f in apm.reverse} == {480} and {f.size for f in apm.capture} == {480}
    order = "".join(apm.order)
    half = len(order) // 2
    assert order[:half].count("r") >= 10 and order[half:].count("r") >= 10, order
    status = devices.stats()["processing"]
    assert status["state"] == "on" and status["echo_cancellation"] is True
    assert status["reference_frames"] == len(apm.reverse)


def _open(speaker: str, settings: AudioSettings):  # type: ignore[no-untyped-def]
    from appliance.media.audio.pcm import open_playback

    return open_playback(speaker, settings.playback_format())


# -- the room: echo in, echo out ---------------------------------------------------------------


async def test_the_echo_of_far_end_speech_is_removed_in_the_simulated_room(
    alsa: AlsaSandbox, tmp_path: Path
) -> None:
    far = speech(tmp_path, FAR_END, level_dbfs=-20)
    with Room(tmp_path / "room", RoomSettings(delay_ms=40, rt60_s=0.3)) as room:
        mic = alsa.capture_from("room_mic", room.mic_path)
        speaker = alsa.playback_to("room_speaker", room.speaker_path)
        settings = AudioSettings(capture_device=mic, playback_device=speaker)
        devices = AudioDevices.open(settings)
        capture = devices.new_capture()
        out: list[np.ndarray] = []
        try:
            devices.playback.play(far.astype(np.int16), loop=True, duck=False)
            for _ in range(400):  # 8 s
                frame = await asyncio.wait_for(capture.recv(), 5.0)
                out.append(frame.to_ndarray().reshape(-1).astype(np.float64))
            status = devices.stats()["processing"]
        finally:
            await devices.close()
    echo = room.mic.samples().astype(np.float64)
    # the setup carries what it checks: loud echo reached the microphone
    assert 10 * np.log10(np.mean(echo[48000 * 4 :] ** 2) / 32768**2) > -40
    processed = np.concatenate(out)[48000 * 4 :]
    reduction = 10 * np.log10(np.mean(echo[48000 * 4 :] ** 2) / np.mean(processed**2))
    assert reduction > 20, reduction
    assert status["state"] == "on"
    assert status["delay_ms"] is not None and 40 < status["delay_ms"] < 400
    assert status["erle_db"] is not None and status["erle_db"] > 10


async def test_without_echo_cancellation_the_echo_goes_out(
    alsa: AlsaSandbox, tmp_path: Path
) -> None:
    """The control for the test above: the same room with processing off keeps the echo."""
    far = speech(tmp_path, FAR_END, level_dbfs=-20)
    with Room(tmp_path / "room", RoomSettings(delay_ms=40, rt60_s=0.3)) as room:
        mic = alsa.capture_from("room_mic", room.mic_path)
        speaker = alsa.playback_to("room_speaker", room.speaker_path)
        settings = AudioSettings.model_validate(
            {
                "capture_device": mic,
                "playback_device": speaker,
                "processing": {
                    "echo_cancellation": False,
                    "noise_suppression": False,
                    "high_pass": False,
                },
            }
        )
        devices = AudioDevices.open(settings)
        capture = devices.new_capture()
        out: list[np.ndarray] = []
        try:
            devices.playback.play(far.astype(np.int16), loop=True, duck=False)
            for _ in range(250):
                frame = await asyncio.wait_for(capture.recv(), 5.0)
                out.append(frame.to_ndarray().reshape(-1).astype(np.float64))
            assert devices.stats()["processing"] == {"state": "off"}
        finally:
            await devices.close()
    processed = np.concatenate(out)[48000 * 2 :]
    assert 10 * np.log10(np.mean(processed**2) / 32768**2) > -40
