"""A period clock for the audio worker threads.

alsa-lib's ``file``/``null`` plugins (and some virtual devices) have no clock of their own, so the
worker threads pace themselves on our injected :class:`~appliance.clock.Clock`: one period every
``period`` seconds on a fixed schedule (no drift from sleep overshoot). A real device that blocks
in ``read``/``write`` simply makes the schedule already due when the thread gets back here.
"""

from __future__ import annotations

import logging
import os
import threading

from appliance.clock import Clock

__all__ = ["Pacer", "raise_priority"]

logger = logging.getLogger(__name__)

# The longest a worker waits in one go before looking at the clock again. A ManualClock only moves
# when a test advances it, so a worker must re-read it instead of sleeping the whole period.
_MAX_WAIT = 0.01


class Pacer:
    """Releases a worker thread once per period of ``clock.monotonic()``.

    If the worker falls more than ``max_lag`` periods behind (a stalled device, a suspended
    machine), the schedule restarts from now instead of bursting to catch up; ``resyncs`` counts
    that.
    """

    def __init__(self, clock: Clock, period: float, *, max_lag: int = 5) -> None:
        if period <= 0:
            raise ValueError(f"period must be positive, got {period}")
        self._clock = clock
        self._period = period
        self._max_lag = max_lag
        self._next: float | None = None
        self.ticks = 0
        self.resyncs = 0

    @property
    def period(self) -> float:
        return self._period

    def reset(self) -> None:
        self._next = None

    def wait(self, stop: threading.Event) -> bool:
        """Block until the next period is due; False once ``stop`` is set."""
        now = self._clock.monotonic()
        if self._next is None:
            self._next = now
        elif now - self._next > self._max_lag * self._period:
            self.resyncs += 1
            self._next = now
        while True:
            if stop.is_set():
                return False
            remaining = self._next - self._clock.monotonic()
            if remaining <= 0:
                break
            stop.wait(min(remaining, _MAX_WAIT))
        self._next += self._period
        self.ticks += 1
        return True

    def __repr__(self) -> str:
        return f"Pacer(period={self._period:.3f}, ticks={self.ticks}, resyncs={self.resyncs})"


def raise_priority(priority: int) -> bool:
    """Give the calling worker thread real-time round-robin ``priority`` (1..99; 0: leave it).

    An audio worker that misses its period by more than the device buffer is an audible glitch,
    and for the echo canceller a jump of the echo path it must re-learn; on a busy board a normal
    thread misses it. The threads sleep most of each period, and the kernel keeps a share of
    every second for normal tasks anyway. Without the privilege (CAP_SYS_NICE, or systemd's
    ``CPUSchedulingPolicy``/``LimitRTPRIO``) the thread keeps its normal priority.
    """
    if priority <= 0:
        return False
    name = threading.current_thread().name
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_RR, os.sched_param(priority))
    except (OSError, AttributeError) as err:
        logger.info("%s keeps its normal priority (real-time %d refused: %s)", name, priority, err)
        return False
    logger.debug("%s runs at real-time priority %d", name, priority)
    return True
