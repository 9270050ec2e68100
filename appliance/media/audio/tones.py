"""The packaged sounds, made from numpy so they can be rebuilt and checked byte for byte.

``python -m appliance.media.audio.tones DIR`` writes ``chime.wav``, ``ringback.wav`` and
``preannounce.wav`` into DIR; the committed copies in ``appliance/media/sounds/`` are its output
(a test regenerates them and compares). Each is a small 16-bit mono WAV (< 100 KB).
"""

from __future__ import annotations

import sys
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["SOUNDS", "chime", "preannounce", "ringback", "write_sounds", "write_wav"]


def _tone(freq: float, seconds: float, rate: int, *, decay: float = 0.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    wave_ = np.sin(2 * np.pi * freq * t)
    if decay > 0:
        wave_ *= np.exp(-decay * t)
    ramp = min(len(t), round(0.005 * rate))  # 5 ms fades: no clicks at the edges
    if ramp:
        envelope = np.ones(len(t))
        envelope[:ramp] = np.linspace(0.0, 1.0, ramp)
        envelope[-ramp:] = np.linspace(1.0, 0.0, ramp)
        wave_ *= envelope
    return wave_


def _silence(seconds: float, rate: int) -> np.ndarray:
    return np.zeros(round(seconds * rate))


def _pcm(signal: np.ndarray, amplitude: float) -> np.ndarray:
    return np.round(signal * amplitude * 32767).astype(np.int16)


def chime(rate: int = 16000) -> tuple[np.ndarray, int]:
    """Ding-dong (E5 then C5) for an incoming call at a bedside unit or door."""
    signal = np.concatenate(
        [_tone(659.25, 0.6, rate, decay=4.0), _tone(523.25, 0.9, rate, decay=3.0)]
    )
    return _pcm(signal, 0.5), rate


def ringback(rate: int = 8000) -> tuple[np.ndarray, int]:
    """What the caller hears while the other side rings: 425 Hz, 1 s on, 2 s off (loop it)."""
    signal = np.concatenate([_tone(425.0, 1.0, rate), _silence(2.0, rate)])
    return _pcm(signal, 0.35), rate


def preannounce(rate: int = 16000) -> tuple[np.ndarray, int]:
    """Three rising beeps before an auto-answered call goes live."""
    parts: list[np.ndarray] = []
    for freq in (880.0, 1108.73, 1318.51):
        parts += [_tone(freq, 0.15, rate), _silence(0.07, rate)]
    return _pcm(np.concatenate(parts), 0.45), rate


SOUNDS: dict[str, Callable[[], tuple[np.ndarray, int]]] = {
    "chime": chime,
    "ringback": ringback,
    "preannounce": preannounce,
}


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return path


def write_sounds(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return [write_wav(directory / f"{name}.wav", *make()) for name, make in SOUNDS.items()]


if __name__ == "__main__":
    for written in write_sounds(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(written, written.stat().st_size)
