"""Speech for echo tests: espeak-ng (a Debian package the Makefile installs) says fixed sentences.

The output is deterministic for a given espeak-ng version (same text, same voice → same bytes).
``FAR_END`` is what the remote caller says (the echo to cancel), ``NEAR_END`` the person at the
device (what must come through while both talk).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from appliance.media.audio.chime import load_wav
from appliance.media.audio.pcm import PcmFormat

__all__ = ["ESPEAK", "FAR_END", "NEAR_END", "speech", "speech_wav"]

ESPEAK = "espeak-ng"

FAR_END = (
    "Hello, this is the front door. I have a parcel for apartment twelve. "
    "Could you please come down and sign for it? The quick brown fox jumps over the lazy dog. "
    "One, two, three, four, five, six, seven, eight, nine, ten."
)
NEAR_END = (
    "Yes, thank you, I am coming down right now. Please wait a moment at the entrance, "
    "I will be there in a minute."
)


def speech_wav(path: Path, text: str, *, voice: str = "en", speed: int = 150) -> Path:
    """``text`` spoken into a WAV file (22.05 kHz mono, espeak-ng's format)."""
    exe = shutil.which(ESPEAK)
    if exe is None:
        pytest.fail(f"{ESPEAK} is missing: install Debian's espeak-ng package (make system-deps)")
    subprocess.run(
        [exe, "-v", voice, "-s", str(speed), "-w", str(path), text],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


def speech(
    directory: Path, text: str, *, voice: str = "en", rate: int = 48000, level_dbfs: float = -20.0
) -> np.ndarray:
    """``text`` spoken, at ``rate`` mono, scaled to an RMS of ``level_dbfs`` (float samples)."""
    name = f"speech-{hashlib.sha1(f'{voice}:{text}'.encode()).hexdigest()[:12]}.wav"
    wav = speech_wav(directory / name, text, voice=voice)
    samples = load_wav(wav, PcmFormat(rate=rate, channels=1)).astype(np.float64)
    rms = float(np.sqrt(np.mean(samples * samples)))
    return samples * (32768 * 10 ** (level_dbfs / 20) / rms)
