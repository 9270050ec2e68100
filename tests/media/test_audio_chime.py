"""Chimes: packaged WAVs, decoding to the device format, mixing and ducking on the playback path."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from appliance.clock import ManualClock
from appliance.errors import ConfigError
from appliance.media.audio import (
    PACKAGED_SOUNDS,
    AudioPlayback,
    ChimePlayer,
    PcmFormat,
    load_wav,
    open_playback,
)
from appliance.media.audio.tones import write_sounds, write_wav
from tests.support import poll
from tests.support.alsa import AlsaSandbox
from tests.support.tone import FedToneTrack, dominant_frequency, read_pcm, tone_samples

PERIOD = 960


@pytest.fixture
def alsa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AlsaSandbox:
    return AlsaSandbox.activate(tmp_path / "alsa", monkeypatch)


def test_packaged_sounds_are_what_tones_py_makes(tmp_path: Path) -> None:
    written = write_sounds(tmp_path)
    assert {p.name for p in written} == {"chime.wav", "ringback.wav", "preannounce.wav"}
    for path in written:
        packaged = PACKAGED_SOUNDS / path.name
        assert packaged.read_bytes() == path.read_bytes(), path.name
        assert packaged.stat().st_size < 100_000


def test_load_wav_converts_to_the_device_format(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "t.wav", tone_samples(1000.0, 1.0, rate=16000), 16000)
    out = load_wav(wav, PcmFormat(rate=44100, channels=2, period_frames=882))
    left = out[::2]
    assert abs(left.size - 44100) < 100
    assert np.array_equal(out[::2], out[1::2])
    assert dominant_frequency(left, rate=44100) == pytest.approx(1000.0, abs=1.0)
    ringback = load_wav(PACKAGED_SOUNDS / "ringback.wav", PcmFormat())
    assert ringback.size == 3 * 48000
    assert dominant_frequency(ringback[:48000]) == pytest.approx(425.0, abs=1.0)


def test_bad_sounds_are_config_errors(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.wav"
    bogus.write_bytes(b"RIFF....not a wav")
    with pytest.raises(ConfigError, match=r"bogus\.wav: cannot read WAV"):
        load_wav(bogus, PcmFormat())


async def test_unknown_sound_name_is_a_config_error(alsa: AlsaSandbox) -> None:
    playback = AudioPlayback(open_playback(alsa.null("speaker")))
    try:
        with pytest.raises(ConfigError, match=r"no sound named 'doorbell'.*chime"):
            ChimePlayer(playback).play("doorbell")
    finally:
        await playback.stop()


async def test_chime_plays_at_its_frequency_and_wait_returns(
    alsa: AlsaSandbox, tmp_path: Path
) -> None:
    speaker = alsa.playback_to("speaker", tmp_path / "out.raw")
    clock = ManualClock()
    playback = AudioPlayback(open_playback(speaker), clock=clock)
    chimes = ChimePlayer(playback)
    voice = chimes.play("ringback")
    try:
        # the first period is due at once
        await poll.until(lambda: playback.stats.periods >= 1, every=0.002)
        for n in range(2, 153):  # one 3 s ringback cycle (150 periods) and its end
            clock.advance(0.020)
            await poll.until(lambda n=n: playback.stats.periods >= n, every=0.002)
        await asyncio.wait_for(voice.wait(), 5.0)
    finally:
        await playback.stop()
    out = read_pcm(tmp_path / "out.raw")
    assert dominant_frequency(out[:48000]) == pytest.approx(425.0, abs=1.0)
    assert np.abs(out[int(1.1 * 48000) : 3 * 48000]).max() == 0  # the 2 s pause of the cadence
    assert playback.stats.sounds_played == 1


async def test_looping_ringtone_runs_until_stopped(alsa: AlsaSandbox, tmp_path: Path) -> None:
    speaker = alsa.playback_to("speaker", tmp_path / "out.raw")
    clock = ManualClock()
    playback = AudioPlayback(open_playback(speaker), clock=clock)
    chimes = ChimePlayer(playback)
    voice = chimes.play("preannounce", loop=True)  # 0.66 s long
    try:
        await poll.until(lambda: playback.stats.periods >= 1, every=0.002)
        for n in range(2, 102):  # 2 s: three times round
            clock.advance(0.020)
            await poll.until(lambda n=n: playback.stats.periods >= n, every=0.002)
        assert not voice.done
        chimes.stop_all()
        clock.advance(0.020)
        await asyncio.wait_for(voice.wait(), 5.0)
    finally:
        await playback.stop()
    out = read_pcm(tmp_path / "out.raw")
    beeps = [dominant_frequency(out[start : start + 4800]) for start in (0, 31680, 63360)]
    assert beeps == pytest.approx([880.0] * 3, abs=5.0)


async def test_chime_ducks_call_audio_and_mixes_on_top(alsa: AlsaSandbox, tmp_path: Path) -> None:
    speaker = alsa.playback_to("speaker", tmp_path / "out.raw")
    clock = ManualClock()
    playback = AudioPlayback(open_playback(speaker), clock=clock, duck_db=12.0)
    call = FedToneTrack(300.0, periods=61)
    consumer = playback.attach(call)
    call.feed(1)
    await poll.until(lambda: playback.stats.frames_received >= PERIOD, every=0.002)
    # the first period is due at once
    await poll.until(lambda: playback.stats.periods >= 1, every=0.002)
    try:
        for n in range(1, 61):
            if n == 20:
                voice = playback.play(tone_samples(2000.0, 0.4), duck=True)  # periods 20..39
            call.feed(1)
            await poll.until(
                lambda n=n: playback.stats.frames_received >= (n + 1) * PERIOD, every=0.002
            )
            clock.advance(0.020)
            await poll.until(lambda n=n: playback.stats.periods >= n + 1, every=0.002)
        call.feed(1)
        await asyncio.wait_for(consumer, 5.0)  # the track ended; its consumer finished
    finally:
        await playback.stop()
    await voice.wait()

    out = read_pcm(tmp_path / "out.raw")
    blocks = out[: out.size // PERIOD * PERIOD].reshape(-1, PERIOD).astype(np.float64)

    def level(block: np.ndarray, freq: float) -> float:
        spectrum = np.abs(np.fft.rfft(block * np.hanning(PERIOD)))
        return float(spectrum[round(freq * PERIOD / 48000)])

    before = np.median([level(b, 300.0) for b in blocks[5:15]])
    during = np.median([level(b, 300.0) for b in blocks[25:35]])
    after = np.median([level(b, 300.0) for b in blocks[45:55]])
    assert before > 0
    assert during / before == pytest.approx(10 ** (-12 / 20), rel=0.1)
    assert after / before == pytest.approx(1.0, rel=0.05)
    assert all(level(b, 2000.0) > level(b, 300.0) for b in blocks[25:35])
    assert all(level(b, 2000.0) < before / 100 for b in blocks[45:55])
    assert playback.stats.dropped == 0
    assert playback.tracks == []


async def test_a_full_track_buffer_drops_its_oldest_periods(
    alsa: AlsaSandbox, tmp_path: Path
) -> None:
    clock = ManualClock()
    playback = AudioPlayback(
        open_playback(alsa.playback_to("speaker", tmp_path / "out.raw")),
        clock=clock,
        buffer_periods=6,
    )
    call = FedToneTrack(300.0, periods=20)
    playback.attach(call)
    await poll.until(lambda: playback.stats.periods >= 1, every=0.002)
    call.feed(20)
    try:
        await poll.until(lambda: playback.stats.frames_received >= 20 * PERIOD, every=0.002)
        assert playback.stats.dropped == 14
    finally:
        await playback.stop()


async def test_a_standing_backlog_is_trimmed_to_the_target_level(
    alsa: AlsaSandbox, tmp_path: Path
) -> None:
    clock = ManualClock()
    playback = AudioPlayback(
        open_playback(alsa.null("speaker")), clock=clock, buffer_periods=6, target_periods=2
    )
    call = FedToneTrack(300.0, periods=200)
    playback.attach(call)
    await poll.until(lambda: playback.stats.periods >= 1, every=0.002)
    call.feed(5)  # a burst at the start of the call: 100 ms of standing delay
    await poll.until(lambda: playback.stats.frames_received >= 5 * PERIOD, every=0.002)
    levels = []
    try:
        for n in range(2, 102):
            call.feed(1)
            await poll.until(
                lambda n=n: playback.stats.frames_received >= (n + 4) * PERIOD, every=0.002
            )
            clock.advance(0.020)
            await poll.until(lambda n=n: playback.stats.periods >= n, every=0.002)
            levels.append(playback.buffered_periods())
    finally:
        await playback.stop()
    assert playback.stats.trimmed == 3
    assert levels[0] == 5 and levels[-1] == 2
    assert playback.stats.dropped == 0 and playback.stats.starved == 0
