"""Audio path benchmark: microphone → Opus → two aiortc peers on loopback → speaker.

Real alsa-lib with ``file`` PCMs (a private ALSA config in a temp dir): the microphone replays
tone bursts (100 ms of 1 kHz every second), the speaker writes a raw file. Both PCMs are wrapped
to record *when* each period was read / written (our clock), so the latency is measured from the
moment a burst's first sample was read from the capture device to the moment it was handed to
the playback device. A real speaker adds its own buffer on top (``prefill_periods`` x 20 ms).
Of the result, about 80 ms is aiortc's audio jitter buffer (``prefetch=4`` packets) plus Opus;
our playout buffer holds ``target_periods`` (2 x 20 ms) once settled.
CPU is the whole process (both peers, Opus encode + decode, resampling, both worker threads).

    .venv/bin/python bench/audio.py [--seconds 20]

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
from tests.support.alsa import AlsaSandbox

RATE = 48000
PERIOD = 960
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
        playback = AudioPlayback(speaker_pcm, prefill_periods=0)
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
        "audio_trimmed": playback.stats.trimmed,
        "audio_starved": playback.stats.starved,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    figures = asyncio.run(run(args.seconds))
    print(f"audio loop, {args.seconds:.0f} s, 48 kHz mono 20 ms, Opus, two peers on loopback")
    print(f"{'figure':<28}{'value':>10}")
    labels = {
        "audio_latency_p50_ms": "capture→playback p50 (ms)",
        "audio_latency_p95_ms": "capture→playback p95 (ms)",
        "audio_bursts_heard": "bursts heard",
        "audio_bursts_sent": "bursts sent",
        "audio_loop_cpu_pct": "CPU, both peers (% core)",
        "audio_underruns": "underruns",
        "audio_overruns": "overruns",
        "audio_dropped": "periods dropped (full)",
        "audio_trimmed": "periods trimmed (delay)",
        "audio_starved": "periods starved",
    }
    for key, value in figures.items():
        print(f"{labels[key]:<28}{value:>10}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
