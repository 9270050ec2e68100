"""Half-duplex for devices without echo cancellation: while the far end talks, the mic is down.

aiortc has no acoustic echo canceller. With a PipeWire echo-cancel route (``device: pipewire``)
none of this is needed; on a bare ALSA speaker and microphone a door intercom would otherwise send
the caller's own voice back. Playback reports the far-end level of every period it writes;
capture asks for the gain of every period it reads. Both run on worker threads; the state is one
float, written by playback and read by capture.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from appliance.clock import Clock
from appliance.media.audio.settings import HalfDuplexSettings

__all__ = ["HalfDuplex", "level_dbfs"]

logger = logging.getLogger(__name__)


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level of S16 samples in dB relative to full scale (-inf for silence)."""
    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))
    if rms <= 0.0:
        return -math.inf
    return 20.0 * math.log10(rms / 32768.0)


class HalfDuplex:
    def __init__(self, settings: HalfDuplexSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._loud_until = -math.inf
        self._gain_down = 10.0 ** (-settings.attenuation_db / 20.0)
        self._was_active = False

    def note_far_end(self, samples: np.ndarray) -> None:
        if level_dbfs(samples) > self._settings.threshold_dbfs:
            self._loud_until = self._clock.monotonic() + self._settings.hold_ms / 1000.0

    @property
    def active(self) -> bool:
        return self._clock.monotonic() < self._loud_until

    def mic_gain(self) -> float:
        active = self.active
        if active != self._was_active:
            logger.debug("HalfDuplex mic %s", "attenuated" if active else "open")
            self._was_active = active
        return self._gain_down if active else 1.0

    def __repr__(self) -> str:
        return f"HalfDuplex(active={self.active}, {self._settings!r})"
