"""Chimes and ringtones from WAV files, played on the call's playback device.

Sounds are mixed into :class:`~appliance.media.audio.playback.AudioPlayback`, the same path and
device as call audio (one ALSA writer, no second open of the device). While a sound marked
``duck`` plays, call audio is turned down by the playback's ``duck_db`` rather than cut off, so a
nurse's voice stays audible under a chime. WAVs are read with :mod:`wave` (PCM 8/16/32-bit, any rate,
mono or stereo) and converted once to the device format with :class:`av.AudioResampler`.
"""

from __future__ import annotations

import logging
import wave
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import av
import numpy as np

from appliance.errors import ConfigError
from appliance.media.audio.pcm import PcmFormat
from appliance.media.audio.playback import AudioPlayback
from appliance.media.audio.voice import Voice

__all__ = ["PACKAGED_SOUNDS", "ChimePlayer", "load_wav"]

logger = logging.getLogger(__name__)

PACKAGED_SOUNDS = Path(__file__).resolve().parent.parent / "sounds"
_DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype(np.uint8), 2: np.dtype("<i2"), 4: np.dtype("<i4")}


def _read_wav(path: Path) -> tuple[np.ndarray, int, int]:
    """Interleaved int16 samples, rate, channels."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as err:
        raise ConfigError(f"cannot read WAV: {err}", file=str(path)) from err
    if width not in _DTYPES:
        raise ConfigError(f"unsupported WAV sample width {width * 8} bit", file=str(path))
    if channels not in (1, 2):
        raise ConfigError(f"WAV has {channels} channels; use mono or stereo", file=str(path))
    samples = np.frombuffer(raw, dtype=_DTYPES[width])
    if width == 1:
        samples = ((samples.astype(np.int16) - 128) << 8).astype(np.int16)
    elif width == 4:
        samples = (samples >> 16).astype(np.int16)
    return samples.astype(np.int16, copy=False), rate, channels


def load_wav(path: Path, fmt: PcmFormat) -> np.ndarray:
    """A WAV file as interleaved int16 samples at ``fmt``'s rate and channel count."""
    samples, rate, channels = _read_wav(path)
    if samples.size == 0:
        return samples
    layout = "mono" if channels == 1 else "stereo"
    out_layout = "mono" if fmt.channels == 1 else "stereo"
    if rate == fmt.rate and channels == fmt.channels:
        return samples.copy()
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout=layout)
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="s16", layout=out_layout, rate=fmt.rate)
    frames = resampler.resample(frame) + resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)


class ChimePlayer:
    """Named sounds (``chime``, ``ringback``, ``preannounce`` or any configured name) on a playback.

    ``overrides`` maps names to WAV paths from the config; other names come from the packaged
    ``appliance/media/sounds/NAME.wav``. Sounds are decoded once and kept.
    """

    def __init__(
        self, playback: AudioPlayback, overrides: Mapping[str, Path] | None = None
    ) -> None:
        self._playback = playback
        self._overrides = dict(overrides or {})
        self._cache: dict[str, np.ndarray] = {}
        self._voices: list[Voice] = []

    def path(self, name: str) -> Path:
        if name in self._overrides:
            return self._overrides[name]
        packaged = PACKAGED_SOUNDS / f"{name}.wav"
        if not packaged.exists():
            known = sorted({p.stem for p in PACKAGED_SOUNDS.glob("*.wav")} | set(self._overrides))
            raise ConfigError(f"no sound named {name!r}", key="sounds", hint=f"known: {known}")
        return packaged

    def load(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = load_wav(self.path(name), self._playback.format)
        return self._cache[name]

    def preload(self) -> None:
        """Decode every configured and packaged sound now (config errors surface at start)."""
        names = {p.stem for p in PACKAGED_SOUNDS.glob("*.wav")} | set(self._overrides)
        for name in sorted(names):
            self.load(name)

    def play(self, name: str, *, loop: bool = False, duck: bool = True) -> Voice:
        """Start ``name``; ``await voice.wait()`` for its end, ``voice.stop()`` to cut it."""
        voice = self._playback.play(self.load(name), loop=loop, duck=duck)
        self._voices = [v for v in self._voices if not v.done] + [voice]
        logger.info(
            "ChimePlayer(%s) playing %s%s", self._playback.device, name, " (loop)" if loop else ""
        )
        return voice

    def stop_all(self) -> None:
        for voice in self._voices:
            voice.stop()
        self._voices = []

    def __repr__(self) -> str:
        return f"ChimePlayer({self._playback.device!r}, loaded={sorted(self._cache)})"
