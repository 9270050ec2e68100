"""Worker threads move with OUR clock, not with the (clockless) device."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from appliance.clock import ManualClock
from appliance.media.audio import AudioCapture, AudioPlayback, open_capture, open_playback
from appliance.media.audio.pacer import Pacer
from tests.support import poll
from tests.support.alsa import AlsaSandbox
from tests.support.tone import write_tone_file


@pytest.fixture
def alsa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AlsaSandbox:
    return AlsaSandbox.activate(tmp_path / "alsa", monkeypatch)


def test_pacer_ticks_on_schedule_and_resyncs_after_a_stall() -> None:
    clock = ManualClock()
    pacer = Pacer(clock, 0.020, max_lag=5)
    stop = threading.Event()
    assert pacer.wait(stop)  # the first period is due at once
    clock.advance(0.050)  # 2.5 periods late: catch up period by period, no resync
    assert pacer.wait(stop) and pacer.wait(stop)
    assert pacer.resyncs == 0
    clock.advance(1.0)  # a stall far beyond max_lag: restart the schedule from now
    assert pacer.wait(stop)
    assert pacer.resyncs == 1
    assert pacer.ticks == 4

    released = threading.Event()

    def waiter() -> None:
        if pacer.wait(stop):
            released.set()

    thread = threading.Thread(target=waiter, name="test-pacer")
    thread.start()
    assert not released.wait(0.05)  # the next period is 20 ms of *our* clock away
    clock.advance(0.020)
    assert released.wait(5.0)
    thread.join()

    stop.set()
    assert pacer.wait(stop) is False


async def test_capture_reads_one_period_per_clock_period(alsa: AlsaSandbox, tmp_path: Path) -> None:
    mic = alsa.capture_from("mic", write_tone_file(tmp_path / "in.raw", 440.0, 2.0))
    clock = ManualClock()
    capture = AudioCapture(open_capture(mic), clock=clock)
    try:
        first = await asyncio.wait_for(capture.recv(), 5.0)
        # The device would hand out 100 periods at once; without the clock moving we get none.
        await asyncio.sleep(0.05)
        assert capture.stats.periods == 1
        clock.advance(0.105)  # five periods (float-safe margin)
        frames = [await asyncio.wait_for(capture.recv(), 5.0) for _ in range(5)]
        await asyncio.sleep(0.05)
        assert capture.stats.periods == 6
    finally:
        capture.stop()
    assert [first.pts] + [f.pts for f in frames] == [0, 960, 1920, 2880, 3840, 4800]
    assert first.time_base == frames[0].time_base and float(first.time_base) == 1 / 48000
    assert capture.readyState == "ended"
    assert not [t for t in threading.enumerate() if t.name.startswith("audio-capture:")]


async def test_playback_writes_one_period_per_clock_period(
    alsa: AlsaSandbox, tmp_path: Path
) -> None:
    speaker = alsa.playback_to("speaker", tmp_path / "out.raw")
    clock = ManualClock()
    playback = AudioPlayback(open_playback(speaker), clock=clock)
    playback.start()
    try:
        await poll.until(lambda: playback.stats.periods == 1, every=0.002)
        clock.advance(0.085)  # four periods behind: caught up one by one (within max_lag)
        await poll.until(lambda: playback.stats.periods == 5, every=0.002)
        await asyncio.sleep(0.05)
        assert playback.stats.periods == 5
    finally:
        await playback.stop()
    # Two periods of silence prefill the device, then one period per period of our clock.
    assert (tmp_path / "out.raw").stat().st_size == (2 + 5) * 960 * 2
    assert not [t for t in threading.enumerate() if t.name.startswith("audio-playback:")]


async def test_an_unread_capture_drops_its_oldest_periods(
    alsa: AlsaSandbox, tmp_path: Path
) -> None:
    mic = alsa.capture_from("mic", write_tone_file(tmp_path / "in.raw", 440.0, 2.0))
    clock = ManualClock()
    capture = AudioCapture(open_capture(mic), clock=clock, queue_periods=5)
    try:
        assert (await asyncio.wait_for(capture.recv(), 5.0)).pts == 0
        for n in range(2, 13):  # 11 periods nobody reads
            clock.advance(0.020)
            await poll.until(lambda n=n: capture.stats.periods >= n, every=0.002)
        await poll.until(lambda: capture.stats.dropped == 6, every=0.002)
        # What is left is the newest audio, still in order.
        pts = [(await capture.recv()).pts for _ in range(5)]
    finally:
        capture.stop()
    assert pts == [n * 960 for n in range(7, 12)]
