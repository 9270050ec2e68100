"""Audio benchmark: echo cancellation in a simulated room, and mouth-to-ear latency.

**Echo cancellation** (``aec_*``): the real ALSA path (``file`` PCMs over the pipes of
:class:`appliance.media.audio.room.Room`) with WebRTC's APM in it. The speaker plays far-end
speech (espeak-ng) through the same mixer as chimes; the room feeds it back to the microphone
(room response, delay, noise, optionally a near-end talker and clock drift); the capture track's
output is compared with what ALSA handed the microphone, period by period:

- ``aec_erle_db``: far-end single talk, delay 40 ms, RT60 0.3 s, echo -6 dB, from 2 s after the
  echo first reached the microphone to the end: 10 log10(energy in / energy out);
- ``aec_erle_drift_db``: the same with the speaker's clock 100 ppm fast and the delay growing by
  20 ms halfway;
- ``aec_double_talk_near_db``: the near-end talker's level in the output while the far end talks
  too, against a run where the near end talks alone;
- ``aec_convergence_s``: from the first echo at the microphone (cold APM) until the ERLE of every
  later 0.5 s stays >= 20 dB (0.5 s windows with echo only);
- ``aec_cpu_pct``: the APM alone (AEC3 + NS + high-pass, 48 kHz mono, 10 ms frames) in a loop,
  % of one core;
- ``aec_delay_ms``: the echo path delay the processor reports (written → read back).

**Latency** (``audio_latency_*``): microphone → Opus → two aiortc peers on loopback → speaker.

Real alsa-lib with ``file`` PCMs (a private ALSA config in a temp dir): the microphone replays
tone bursts (100 ms of 1 kHz every second), the speaker writes a raw file. Both PCMs are wrapped
to record *when* each period was read / written (our clock), so the latency is measured from the
moment a burst's first sample was read from the capture device to the moment it was handed to
the playback device. A real speaker adds its own buffer on top (``prefill_periods`` x 20 ms).
aiortc's 4-packet prefetch is replaced (``appliance.media.audio.jitter``); our playout buffer
holds the level the measured jitter needs (one 20 ms period on loopback).
CPU is the whole process (both peers, Opus encode + decode, resampling, both worker threads).

    .venv/bin/python bench/audio.py [--seconds 20] [--aec-seconds 15]

Prints a table (median, p95) and, last, one JSON line of the same figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from appliance.media.audio import (
    PCM,
    AudioCapture,
    AudioPlayback,
    PcmFormat,
    open_capture,
    open_playback,
)
from appliance.media.audio.apm import open_apm
from appliance.media.audio.processor import AudioProcessor
from appliance.media.audio.room import RoomSettings
from appliance.media.audio.tones import write_wav
from tests.support.alsa import AlsaSandbox
from tests.support.speech import FAR_END, NEAR_END, speech

RATE = 48000
PERIOD = 960
ROOT = str(Path(__file__).resolve().parent.parent)
BURST_HZ = 1000.0
BURST_S = 0.1


class TimedPcm:
    """Records the monotonic time of every read / write of the PCM it wraps."""

    def __init__(self, inner: PCM) -> None:
        self._inner = inner
        self.times: list[float] = []
        self.chunks: list[bytes] = []
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def format(self) -> PcmFormat:
        return self._inner.format

    def read(self) -> tuple[int, bytes]:
        frames, data = self._inner.read()
        with self._lock:
            self.times.append(time.monotonic())
            self.chunks.append(data)
        return frames, data

    def write(self, data: bytes) -> int:
        written = self._inner.write(data)
        with self._lock:
            self.times.append(time.monotonic())
            self.chunks.append(data if written >= 0 else b"")
        return written

    def close(self) -> None:
        self._inner.close()


def burst_input(seconds: float) -> np.ndarray:
    samples = np.zeros(round(seconds * RATE), dtype=np.int16)
    t = np.arange(round(BURST_S * RATE)) / RATE
    burst = (np.sin(2 * np.pi * BURST_HZ * t) * 0.5 * 32767).astype(np.int16)
    for start in range(RATE // 2, samples.size - burst.size, RATE):
        samples[start : start + burst.size] = burst
    return samples


def onsets(timed: TimedPcm, threshold: int = 3000) -> list[float]:
    """Times at which bursts start, at sample precision within the period that carried them."""
    found: list[float] = []
    quiet_since = 0
    position = 0
    for when, chunk in zip(timed.times, timed.chunks, strict=True):
        samples = np.frombuffer(chunk, dtype="<i2")
        loud = np.flatnonzero(np.abs(samples) > threshold)
        if loud.size and position + loud[0] - quiet_since > RATE // 4:
            # the period was read/written at `when`; its sample i sits i/RATE into it
            found.append(when + loud[0] / RATE)
        if loud.size:
            quiet_since = position + loud[-1]
        position += samples.size
    return found


async def run(seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        directory = Path(tmp)
        sandbox = AlsaSandbox(directory / "alsa")
        (directory / "in.raw").write_bytes(burst_input(seconds + 10).astype("<i2").tobytes())
        mic = sandbox.capture_from("mic", directory / "in.raw")
        speaker = sandbox.playback_to("speaker", directory / "out.raw")
        os.environ["ALSA_CONFIG_PATH"] = str(sandbox.config_path)

        mic_pcm = TimedPcm(open_capture(mic))
        speaker_pcm = TimedPcm(open_playback(speaker))
        capture = AudioCapture(mic_pcm)
        # as on the device: the playout level follows the measured jitter (jitter_ms: auto)
        playback = AudioPlayback(speaker_pcm, prefill_periods=0, target_periods=None)
        config = RTCConfiguration(iceServers=[])
        sender, receiver = RTCPeerConnection(config), RTCPeerConnection(config)

        @receiver.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            playback.attach(track)

        sender.addTrack(capture)
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)

        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.monotonic()
        await asyncio.sleep(seconds)
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        wall1 = time.monotonic()
        levels = playback.playout()

        await sender.close()
        await receiver.close()
        capture.stop()
        await playback.stop()

    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    sent = onsets(mic_pcm)
    heard = onsets(speaker_pcm)
    latencies = []
    for start in sent:
        after = [h - start for h in heard if 0 < h - start < 0.5]
        if after:
            latencies.append(after[0] * 1000)
    if not latencies:
        raise SystemExit("no burst came through: the audio path is broken")
    return {
        "audio_latency_p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "audio_latency_p95_ms": round(float(np.percentile(latencies, 95)), 1),
        "audio_bursts_heard": len(latencies),
        "audio_bursts_sent": len(sent),
        "audio_loop_cpu_pct": round(100 * cpu / (wall1 - wall0), 1),
        "audio_underruns": playback.stats.underruns,
        "audio_overruns": capture.stats.overruns,
        "audio_dropped": playback.stats.dropped + capture.stats.dropped,
        "audio_playout_target": max((t["target"] or 0 for t in levels.values()), default=0),
        "audio_jitter_ms": max((t["jitter_ms"] or 0 for t in levels.values()), default=0),
        "audio_trimmed": playback.stats.trimmed,
        "audio_starved": playback.stats.starved,
    }


# -- echo cancellation ---------------------------------------------------------------------


class EchoRun:
    """One run of the simulated room: raw microphone periods in, processed periods out, and the
    room's own recordings (its timeline starts ``offset`` samples before the first read)."""

    def __init__(
        self,
        raw: list[bytes],
        out: list[np.ndarray],
        room_dir: Path,
        settings: RoomSettings,
        stats: dict[str, Any],
    ) -> None:
        self.raw = np.concatenate([np.frombuffer(c, dtype="<i2") for c in raw]).astype(float)
        self.out = np.concatenate(out).astype(float)
        n = min(self.raw.size, self.out.size)
        self.raw, self.out = self.raw[:n], self.out[:n]
        self.settings = settings
        self.stats = stats
        mic = np.frombuffer((room_dir / "mic.raw").read_bytes(), dtype="<i2")
        self.near = np.frombuffer((room_dir / "near.raw").read_bytes(), dtype="<i2").astype(float)
        self.offset = _find(mic, self.raw[PERIOD : 2 * PERIOD].astype(np.int16)) - PERIOD

    def first_echo(self, floor_db: float = 20.0) -> int:
        """Sample index of the first 10 ms whose level is ``floor_db`` above the room noise."""
        frames = self.raw[: self.raw.size // 480 * 480].reshape(-1, 480)
        loud = np.flatnonzero(np.mean(frames**2, axis=1) > self._noise() * 10 ** (floor_db / 10))
        if loud.size == 0:
            raise SystemExit("no echo reached the microphone: the simulated room is broken")
        return int(loud[0]) * 480

    def _noise(self) -> float:
        return float((32768 * 10 ** (self.settings.noise_dbfs / 20)) ** 2)

    def erle_db(self, start: int, stop: int | None = None) -> float:
        a, b = self.raw[start:stop], self.out[start:stop]
        return float(10 * np.log10(np.sum(a * a) / max(np.sum(b * b), 1.0)))

    def convergence_s(self, target_db: float = 20.0, window: int = 24000) -> float:
        start = self.first_echo()
        last_bad = start
        for lo in range(start, self.raw.size - window + 1, window // 5):
            a, b = self.raw[lo : lo + window], self.out[lo : lo + window]
            if np.mean(a * a) < self._noise() * 100:  # no echo in this window: nothing to judge
                continue
            if 10 * np.log10(np.sum(a * a) / max(np.sum(b * b), 1.0)) < target_db:
                last_bad = lo + window
        return (last_bad - start) / RATE

    def near_active(self) -> np.ndarray:
        """Mask of output samples during which the near-end talker spoke (in 10 ms frames)."""
        near = self.near[self.offset : self.offset + self.out.size]
        near = np.pad(near, (0, self.out.size - near.size))
        frames = near[: near.size // 480 * 480].reshape(-1, 480)
        loud = np.mean(frames**2, axis=1) > self._noise() * 1000
        return np.pad(np.repeat(loud, 480), (0, near.size % 480))


def _find(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Index at which ``needle`` occurs in ``haystack`` (the room's mic vs what ALSA returned)."""
    candidates = np.flatnonzero(haystack[: haystack.size - needle.size] == needle[0])
    for i in candidates:
        if np.array_equal(haystack[i : i + needle.size], needle):
            return int(i)
    raise SystemExit("the capture does not match the room's microphone: the path is broken")


async def echo_run(
    workdir: Path,
    settings: RoomSettings,
    seconds: float,
    *,
    far: np.ndarray | None,
    near_wav: Path | None = None,
    near_start_s: float = 0.0,
    delay_change: tuple[float, float] | None = None,
) -> EchoRun:
    """The room in a process of its own (as beside the daemon), this process the device."""
    room_dir = workdir / "room"
    args = [
        sys.executable, "-m", "appliance.media.audio.room", str(room_dir),
        "--delay-ms", str(settings.delay_ms), "--rt60", str(settings.rt60_s),
        "--echo-db", str(settings.echo_db), "--noise-dbfs", str(settings.noise_dbfs),
        "--drift-ppm", str(settings.drift_ppm),
    ]  # fmt: skip
    if near_wav is not None:
        args += ["--near-end", str(near_wav), "--near-start", str(near_start_s)]
    if delay_change is not None:
        args += ["--change-at", str(delay_change[0]), "--change-delay-ms", str(delay_change[1])]
    room = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
    )  # fmt: skip
    assert room.stdout is not None
    line = (await asyncio.wait_for(room.stdout.readline(), 30)).decode().strip()
    if not line.startswith("ALSA_CONFIG_PATH="):
        raise SystemExit(f"the room did not start: {line!r}")
    os.environ["ALSA_CONFIG_PATH"] = line.split("=", 1)[1]
    apm = open_apm(echo_cancellation=True, noise_suppression=True, high_pass=True, auto_gain=False)
    processor = AudioProcessor(apm, PcmFormat())
    mic_pcm = TimedPcm(open_capture("room_mic"))
    playback = AudioPlayback(open_playback("room_speaker"), processor=processor, priority=10)
    capture = AudioCapture(mic_pcm, processor=processor, queue_periods=1000, priority=10)
    out: list[np.ndarray] = []
    try:
        playback.start()
        if far is not None:
            playback.play(np.clip(far, -32768, 32767).astype(np.int16), loop=True, duck=False)
        capture.start()
        for _ in range(round(seconds / 0.020)):
            frame = await capture.recv()
            out.append(frame.to_ndarray().reshape(-1))
    finally:
        capture.stop()
        await playback.stop()
        room.terminate()
        tail = (await room.communicate())[0].decode().strip()
        processor.close()
    stats = processor.stats()
    stats["underruns"] = playback.stats.underruns
    stats["overruns"] = capture.stats.overruns
    stats["room"] = tail
    return EchoRun(mic_pcm.chunks, out, room_dir, settings, stats)


def apm_cpu_pct(far: np.ndarray, seconds: float = 20.0) -> float:
    """The APM alone: AEC3 + NS + high-pass on 48 kHz mono, 10 ms frames, % of one core."""
    apm = open_apm(echo_cancellation=True, noise_suppression=True, high_pass=True, auto_gain=False)
    n = round(seconds * RATE) // 480 * 480
    reference = np.resize(np.clip(far, -32768, 32767).astype(np.int16), n)
    rng = np.random.default_rng(3)
    echo = np.roll(reference, 1920) // 2 + rng.normal(0, 30, n).astype(np.int16)
    cpu0 = time.process_time()
    for i in range(0, n, 480):
        apm.process_reverse(reference[i : i + 480], RATE, 1)
        apm.set_stream_delay_ms(40)
        apm.process(echo[i : i + 480], RATE)
    cpu = time.process_time() - cpu0
    apm.close()
    return 100 * cpu / seconds


async def run_aec(seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-aec-") as tmp:
        directory = Path(tmp)
        far = speech(directory, FAR_END, level_dbfs=-20)
        near = speech(directory, NEAR_END, voice="en+f3", level_dbfs=-26)
        near_wav = write_wav(directory / "near.wav", np.clip(near, -32768, 32767), RATE)
        base = RoomSettings(delay_ms=40, rt60_s=0.3, echo_db=-6, noise_dbfs=-60)
        single = await echo_run(directory / "single", base, seconds, far=far)
        start = single.first_echo() + 2 * RATE
        drift_settings = RoomSettings(
            delay_ms=40, rt60_s=0.3, echo_db=-6, noise_dbfs=-60, drift_ppm=100
        )
        drift = await echo_run(
            directory / "drift", drift_settings, seconds, far=far, delay_change=(seconds / 2, 60)
        )
        near_at = 5.0
        runs = {}
        for name, talker in (("both", far), ("alone", None)):
            runs[name] = await echo_run(
                directory / name, base, near_at + 8, far=talker, near_wav=near_wav,
                near_start_s=near_at,
            )  # fmt: skip
        energies = [float(np.sum(r.out[r.near_active()] ** 2)) for r in runs.values()]
        near_db = 10 * np.log10(energies[0] / energies[1])
        cpu = apm_cpu_pct(far)
    return {
        "aec_erle_db": round(single.erle_db(start), 1),
        "aec_erle_drift_db": round(drift.erle_db(drift.first_echo() + 2 * RATE), 1),
        "aec_double_talk_near_db": round(float(near_db), 1),
        "aec_convergence_s": round(single.convergence_s(), 2),
        "aec_cpu_pct": round(cpu, 2),
        "aec_delay_ms": single.stats["delay_ms"] or -1,
        "aec_status_erle_db": single.stats["erle_db"] or -1,
        "aec_room": f"{single.stats['room']}; drift: {drift.stats['room']}",
        "aec_underruns": single.stats["underruns"] + drift.stats["underruns"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--aec-seconds", type=float, default=15.0)
    parser.add_argument("--only", choices=["aec", "latency"])
    args = parser.parse_args()
    figures: dict[str, float] = {}
    if args.only != "latency":
        figures.update(asyncio.run(run_aec(args.aec_seconds)))
    if args.only != "aec":
        figures.update(asyncio.run(run(args.seconds)))
    figures["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(
        f"echo cancellation: simulated room through ALSA file PCMs, {args.aec_seconds:.0f} s runs;"
        f" audio loop: {args.seconds:.0f} s, 48 kHz mono 20 ms, Opus, two peers on loopback"
    )
    print(f"{'figure':<40}{'value':>10}")
    labels = {
        "aec_erle_db": "ERLE, single talk, after 2 s (dB)",
        "aec_erle_drift_db": "ERLE, 100 ppm drift + delay +20 ms (dB)",
        "aec_double_talk_near_db": "near end kept in double talk (dB)",
        "aec_convergence_s": "convergence to 20 dB ERLE (s)",
        "aec_cpu_pct": "APM CPU, 48 kHz mono (% core)",
        "aec_delay_ms": "echo delay reported (ms)",
        "aec_status_erle_db": "ERLE reported by status (dB)",
        "aec_room": "room (single talk; drift)",
        "aec_underruns": "playback underruns (AEC runs)",
        "load_average_1m": "load average (1 min)",
        "audio_latency_p50_ms": "capture→playback p50 (ms)",
        "audio_latency_p95_ms": "capture→playback p95 (ms)",
        "audio_bursts_heard": "bursts heard",
        "audio_bursts_sent": "bursts sent",
        "audio_loop_cpu_pct": "CPU, both peers (% core)",
        "audio_underruns": "underruns",
        "audio_overruns": "overruns",
        "audio_dropped": "periods dropped (full)",
        "audio_trimmed": "periods trimmed (delay)",
        "audio_starved": "buffer ran dry (refilled)",
        "audio_playout_target": "playout level (periods)",
        "audio_jitter_ms": "arrival jitter p95 (ms)",
    }
    for key, value in figures.items():
        print(f"{labels[key]:<40}{value:>10}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
