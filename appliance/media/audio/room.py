"""A simulated room for the echo canceller: the speaker heard again by the microphone.

The daemon's real ALSA code path runs against it. alsa-lib's ``file`` plugin (over ``null``)
writes the speaker's samples into a named pipe and reads the microphone's samples from another
(``infile``); this module is the other end of both pipes. Why pipes and not ``snd-aloop``: this
kernel has no sound modules at all (no ``/proc/asound``, ``modprobe snd-aloop`` finds nothing),
and alsa-lib's ``file``/``null`` plugins have no clock of their own. The room is the clock: every
period it takes what the speaker played from its pipe and writes what the microphone hears into
the other; the pipes are two pages small (~80 ms), so a writer that runs ahead blocks and a reader that
runs ahead waits, as with a sound card. The microphone's pipe also empties like a card's capture
buffer: nothing piles up while nobody reads it, and a reader a whole buffer late loses the buffer
(an overrun), not just the newest period.

What the microphone hears each period:

- the speaker's output convolved with a room response — exponentially decaying noise with the
  configured RT60, normalised to unit energy and scaled to ``echo_db`` — heard ``delay_ms`` later
  (:meth:`Room.set_delay_ms` moves it while running);
- ``delay_change`` (seconds after start, new delay) moves it at that microphone sample;
- with ``drift_ppm`` the speaker's clock runs that much faster than the microphone's, as two
  separate USB devices do: each period the speaker gives up ``(1 + drift) x period`` samples, and
  the echo is read from that stream at fractional positions (linear interpolation);
- white noise at ``noise_dbfs`` and, optionally, a near-end talker (``near_end`` samples from
  ``near_start_s``).

It records the speaker's samples and the microphone's echo, near-end and total signals, for the
benchmark and the tests to compare with what the daemon sent.

``python -m appliance.media.audio.room DIR [options]`` creates ``DIR/asound.conf`` (PCMs
``room_mic`` and ``room_speaker``) and the pipes, and runs until SIGTERM / Ctrl-C, then writes
the recordings as raw S16 files into DIR. Run the daemon with ``ALSA_CONFIG_PATH=DIR/asound.conf``
and ``media.audio.capture_device: room_mic``, ``playback_device: room_speaker``.
"""

from __future__ import annotations

import argparse
import array
import fcntl
import logging
import os
import signal
import sys
import termios
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.clock import Clock, SystemClock
from appliance.media.audio.pacer import Pacer, raise_priority

__all__ = ["Room", "RoomSettings", "room_response"]

logger = logging.getLogger(__name__)

_PIPE_BYTES = 8192  # two pages: ~4 periods of 48 kHz mono S16, the "device buffer"
_FULL_SCALE = 32768.0
# a reader that has taken nothing for this many periods (1 s) is gone: the call has ended
_READER_GONE_PERIODS = 50


@dataclass(frozen=True)
class RoomSettings:
    delay_ms: float = 40.0
    rt60_s: float = 0.3
    echo_db: float = -6.0
    """Echo energy relative to the speaker's output."""
    noise_dbfs: float = -60.0
    drift_ppm: float = 0.0
    """How much faster the speaker's clock runs than the microphone's."""
    rate: int = 48000
    period_ms: int = 20
    seed: int = 1

    def __post_init__(self) -> None:
        if not 10 <= self.delay_ms <= 150:
            raise ValueError(f"delay_ms {self.delay_ms}: use 10..150")
        if not 0.2 <= self.rt60_s <= 0.6:
            raise ValueError(f"rt60_s {self.rt60_s}: use 0.2..0.6")
        if abs(self.drift_ppm) > 1000:
            raise ValueError(f"drift_ppm {self.drift_ppm}: use -1000..1000")

    @property
    def period_frames(self) -> int:
        return self.rate * self.period_ms // 1000


def room_response(rate: int, rt60_s: float, seed: int = 1) -> np.ndarray:
    """Decaying white noise (-60 dB at ``rt60_s``), unit energy, ``rt60_s`` long."""
    n = round(rt60_s * rate)
    t = np.arange(n) / rate
    rng = np.random.default_rng(seed)
    h = rng.standard_normal(n) * 10.0 ** (-3.0 * t / rt60_s)
    return h / np.sqrt(np.sum(h * h))


class _Recording:
    """Float chunks of one signal, joined on demand."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []

    def add(self, chunk: np.ndarray) -> None:
        self._chunks.append(chunk.astype(np.float32))

    def samples(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)


class Room:
    """The two pipes and the room thread. ``start()``, ``stop()``; ``stop()`` is idempotent."""

    def __init__(
        self,
        directory: Path,
        settings: RoomSettings | None = None,
        *,
        clock: Clock | None = None,
        near_end: np.ndarray | None = None,
        near_start_s: float = 0.0,
        delay_change: tuple[float, float] | None = None,
        record: bool = True,
        priority: int = 20,
    ) -> None:
        self.settings = s = settings or RoomSettings()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.speaker_path = self.dir / "speaker.fifo"
        self.mic_path = self.dir / "mic.fifo"
        self._clock = clock or SystemClock()
        self._rir = room_response(s.rate, s.rt60_s, s.seed) * 10.0 ** (s.echo_db / 20.0)
        self._fft_size = 1 << (s.period_frames * 2 + self._rir.size).bit_length()
        self._rir_spectrum = np.fft.rfft(self._rir, self._fft_size)
        self._tail = np.zeros(self._fft_size, dtype=np.float64)
        self._rng = np.random.default_rng(s.seed + 1)
        self._noise = _FULL_SCALE * 10.0 ** (s.noise_dbfs / 20.0)
        self._near = None if near_end is None else near_end.astype(np.float64)
        self._near_start = round(near_start_s * s.rate)
        self._delay = s.delay_ms * s.rate / 1000.0
        self._change = None
        if delay_change is not None:
            self._change = (round(delay_change[0] * s.rate), delay_change[1] * s.rate / 1000.0)
        self._ratio = 1.0 + s.drift_ppm * 1e-6
        # the echo ("wet") stream in speaker samples, and the global index of its first sample
        self._wet = np.zeros(0, dtype=np.float64)
        self._wet_start = 0
        self._speaker_due = 0.0  # fractional speaker samples owed by the clock
        self._speaker_pending = b""
        self._speaker_running = False
        self._mic_index = 0
        self._record = record
        self._priority = priority
        self.speaker = _Recording()
        self.echo = _Recording()
        self.near = _Recording()
        self.mic = _Recording()
        self.periods = 0
        self.speaker_underruns = 0
        self.underrun_periods: list[int] = []
        self.mic_overruns = 0
        """Periods the microphone's reader was a whole buffer late for (it lost the buffer)."""
        self.mic_unread = 0
        """Periods heard while nobody read the microphone (before and after a call)."""
        self._mic_level = 0
        self._mic_read_period: int | None = None
        self._mic_lost = 0  # buffers dropped since the reader last took something
        for path in (self.speaker_path, self.mic_path):
            if path.exists():
                path.unlink()
            os.mkfifo(path, 0o600)
        # O_RDWR: opening never blocks, and neither side sees EOF while the other reopens
        self._speaker_fd = os.open(self.speaker_path, os.O_RDWR | os.O_NONBLOCK)
        self._mic_fd = os.open(self.mic_path, os.O_RDWR | os.O_NONBLOCK)
        for fd in (self._speaker_fd, self._mic_fd):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.pacer = Pacer(self._clock, s.period_ms / 1000.0)
        self._closed = False

    def set_delay_ms(self, delay_ms: float) -> None:
        """Move the echo (a person walks past, the unit is moved): effective at the next period."""
        with self._lock:
            self._delay = delay_ms * self.settings.rate / 1000.0

    def alsa_pcms(self, mic: str = "room_mic", speaker: str = "room_speaker") -> str:
        """ALSA config text defining the two PCMs over this room's pipes."""
        return (
            f'pcm.{mic} {{\n  type file\n  slave.pcm null\n  file "/dev/null"\n'
            f'  infile "{self.mic_path}"\n  format "raw"\n}}\n'
            f'pcm.{speaker} {{\n  type file\n  slave.pcm null\n  file "{self.speaker_path}"\n'
            '  format "raw"\n}\n'
        )

    def start(self) -> None:
        if self._thread is not None or self._closed:
            return
        self._thread = threading.Thread(target=self._run, name="audio-room", daemon=True)
        self._thread.start()
        logger.info("Room(%s) started: %s", self.dir, self.settings)

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        os.close(self._speaker_fd)
        os.close(self._mic_fd)
        logger.info(
            "Room(%s) stopped after %d periods (speaker underruns %d, mic overruns %d,"
            " mic periods nobody read %d)",
            self.dir,
            self.periods,
            self.speaker_underruns,
            self.mic_overruns,
            self.mic_unread,
        )

    def __enter__(self) -> Room:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the room thread ---------------------------------------------------------------

    def _run(self) -> None:
        raise_priority(self._priority)  # the room is the sound card: it keeps time
        while self.pacer.wait(self._stop):
            self.tick()

    def tick(self) -> None:
        """One microphone period: take the speaker's due samples, write what the mic hears."""
        s = self.settings
        n = s.period_frames
        self._speaker_due += n * self._ratio
        take = int(self._speaker_due)
        self._speaker_due -= take
        played = self._take_speaker(take)
        self._convolve(played)
        with self._lock:
            if self._change is not None and self._mic_index >= self._change[0]:
                self._delay, self._change = self._change[1], None
            delay = self._delay
        positions = (self._mic_index + np.arange(n)) * self._ratio - delay - self._wet_start
        echo = np.interp(positions, np.arange(self._wet.size), self._wet, left=0.0, right=0.0)
        near = self._near_chunk(n)
        noise = self._rng.standard_normal(n) * self._noise
        mic = echo + near + noise
        self._write_mic(np.clip(np.round(mic), -32768, 32767).astype("<i2").tobytes())
        self._mic_index += n
        # keep only the echo history the next periods can still reach (a delay may grow by
        # up to 150 ms while running)
        keep_from = int(self._mic_index * self._ratio - delay - self._wet_start) - s.rate // 5
        if keep_from > 0:
            self._wet = self._wet[keep_from:]
            self._wet_start += keep_from
        if self._record:
            self.speaker.add(played)
            self.echo.add(echo)
            self.near.add(near)
            self.mic.add(mic)
        self.periods += 1

    def _queued_speaker_bytes(self) -> int:
        buf = array.array("i", [0])
        fcntl.ioctl(self._speaker_fd, termios.FIONREAD, buf, True)
        return int(buf[0]) + len(self._speaker_pending)

    def _take_speaker(self, count: int) -> np.ndarray:
        # Like a sound card: playback starts once three periods are queued (the start
        # threshold) and stops at an underrun, to start again at the threshold.
        if not self._speaker_running:
            if self._queued_speaker_bytes() < 3 * self.settings.period_frames * 2:
                return np.zeros(count)
            self._speaker_running = True
        need = count * 2 - len(self._speaker_pending)
        if need > 0:
            try:
                self._speaker_pending += os.read(self._speaker_fd, need)
            except BlockingIOError:
                pass
        data, self._speaker_pending = (
            self._speaker_pending[: count * 2],
            self._speaker_pending[count * 2 :],
        )
        samples = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float64)
        if samples.size < count:
            self.speaker_underruns += 1
            self.underrun_periods.append(self.periods)
            self._speaker_running = False
            samples = np.concatenate([samples, np.zeros(count - samples.size)])
        return samples

    def _convolve(self, block: np.ndarray) -> None:
        """Overlap-add: the block's echo joins the tails of the earlier blocks."""
        wet = np.fft.irfft(np.fft.rfft(block, self._fft_size) * self._rir_spectrum, self._fft_size)
        self._tail += wet
        self._wet = np.concatenate([self._wet, self._tail[: block.size]])
        self._tail = np.concatenate([self._tail[block.size :], np.zeros(block.size)])

    def _near_chunk(self, n: int) -> np.ndarray:
        out = np.zeros(n)
        if self._near is None:
            return out
        start = self._mic_index - self._near_start
        lo, hi = max(start, 0), min(start + n, self._near.size)
        if hi > lo:
            out[lo - start : hi - start] = self._near[lo:hi]
        return out

    def _queued_mic_bytes(self) -> int:
        buf = array.array("i", [0])
        fcntl.ioctl(self._mic_fd, termios.FIONREAD, buf, True)
        return int(buf[0])

    def _discard_mic(self) -> None:
        """Empty the microphone's pipe (we hold it read-write): the buffer of a card whose
        capture stream is not running, or has just overrun, holds nothing."""
        while True:
            try:
                if not os.read(self._mic_fd, _PIPE_BYTES):
                    return
            except BlockingIOError:
                return

    def _write_mic(self, data: bytes) -> None:
        """Like a sound card's capture buffer, not a recorder: before the daemon reads the
        microphone (and after it stops) nothing piles up, so a capture starts on fresh audio
        as on a card that starts empty; a reader that falls a whole buffer behind overruns, and
        as at a card's overrun the stale buffer is dropped and capture goes on from this period
        (keeping it would leave the reader a full buffer late, and at every later hiccup one
        more period would be lost)."""
        level = self._queued_mic_bytes()
        if level < self._mic_level:  # the reader took something since the last period
            self._mic_read_period = self.periods
            # it was late, not gone: the buffers it lost were overruns
            self.mic_overruns += self._mic_lost
            self._mic_lost = 0
        reading = (
            self._mic_read_period is not None
            and self.periods - self._mic_read_period <= _READER_GONE_PERIODS
        )
        if not reading:  # before the call, or it has ended
            self.mic_unread += (1 if level else 0) + self._mic_lost
            self._mic_lost = 0
            self._discard_mic()
        try:
            os.write(self._mic_fd, data)
        except BlockingIOError:
            self._mic_lost += 1  # the reader is a whole buffer behind (or has gone)
            self._discard_mic()
            os.write(self._mic_fd, data)
        self._mic_level = self._queued_mic_bytes()

    def __repr__(self) -> str:
        return f"Room({self.dir}, {self.settings}, periods={self.periods})"


def _read_wav(path: Path, rate: int) -> np.ndarray:
    """A WAV file at ``rate`` mono, as float samples."""
    from appliance.media.audio.chime import load_wav
    from appliance.media.audio.pcm import PcmFormat

    return load_wav(path, PcmFormat(rate=rate, channels=1)).astype(np.float64)


def _save(path: Path, samples: np.ndarray) -> None:
    path.write_bytes(np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A simulated room for the echo canceller.")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--delay-ms", type=float, default=40.0)
    parser.add_argument("--rt60", type=float, default=0.3)
    parser.add_argument("--echo-db", type=float, default=-6.0)
    parser.add_argument("--noise-dbfs", type=float, default=-60.0)
    parser.add_argument("--drift-ppm", type=float, default=0.0)
    parser.add_argument("--near-end", type=Path, help="a WAV file the near-end talker says")
    parser.add_argument("--near-start", type=float, default=0.0, help="seconds after start")
    parser.add_argument("--near-db", type=float, default=0.0, help="near-end gain")
    parser.add_argument("--change-at", type=float, help="seconds after start: move the echo")
    parser.add_argument("--change-delay-ms", type=float, help="the echo delay from then on")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = RoomSettings(
        delay_ms=args.delay_ms,
        rt60_s=args.rt60,
        echo_db=args.echo_db,
        noise_dbfs=args.noise_dbfs,
        drift_ppm=args.drift_ppm,
    )
    near = None
    if args.near_end is not None:
        near = _read_wav(args.near_end, settings.rate) * 10.0 ** (args.near_db / 20.0)
    change = None
    if args.change_at is not None and args.change_delay_ms is not None:
        change = (args.change_at, args.change_delay_ms)
    room = Room(
        args.dir, settings, near_end=near, near_start_s=args.near_start, delay_change=change
    )
    config = args.dir / "asound.conf"
    config.write_text("</usr/share/alsa/alsa.conf>\n\n" + room.alsa_pcms())
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    room.start()
    print(f"ALSA_CONFIG_PATH={config}", flush=True)
    done.wait()
    room.stop()
    print(
        f"periods={room.periods} speaker_underruns={room.speaker_underruns}"
        f" mic_overruns={room.mic_overruns} mic_unread={room.mic_unread}"
        f" underrun_periods={room.underrun_periods}"
        f" resyncs={room.pacer.resyncs}",
        flush=True,
    )
    for name in ("speaker", "echo", "near", "mic"):
        _save(args.dir / f"{name}.raw", getattr(room, name).samples())
    sys.exit(0)


if __name__ == "__main__":
    main()
