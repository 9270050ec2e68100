"""Reconnect delays: exponential, capped, jittered — forever.

A fleet of devices that lost the same server must not come back in lock-step, so each delay is
drawn from ``[d/2, d]`` where ``d = min(cap, base * factor**attempt)`` ("equal jitter": never
zero, never more than the cap). The random source is injected so tests see exact delays.
"""

from __future__ import annotations

import random as _random
from typing import Protocol


class RandomSource(Protocol):
    def random(self) -> float: ...


class Backoff:
    def __init__(
        self,
        base: float = 0.5,
        cap: float = 30.0,
        factor: float = 2.0,
        *,
        random: RandomSource | None = None,
    ) -> None:
        if base <= 0 or cap < base or factor < 1:
            raise ValueError(f"Backoff(base={base}, cap={cap}, factor={factor}): not increasing")
        self.base = base
        self.cap = cap
        self.factor = factor
        self.random = random or _random.Random()
        self.attempt = 0

    def ceiling(self, attempt: int) -> float:
        # Exponent capped so that factor**attempt never overflows after years of retries.
        exponent = min(attempt, 64)
        return float(min(self.cap, self.base * self.factor**exponent))

    def next_delay(self) -> float:
        ceiling = self.ceiling(self.attempt)
        self.attempt += 1
        return ceiling / 2 + self.random.random() * ceiling / 2

    def reset(self) -> None:
        self.attempt = 0

    def __repr__(self) -> str:
        return f"Backoff(base={self.base}, cap={self.cap}, attempt={self.attempt})"
