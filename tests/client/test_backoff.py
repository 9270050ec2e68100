import random

import pytest

from appliance.client.backoff import Backoff


class FixedRandom:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    backoff = Backoff(base=1.0, cap=8.0, random=FixedRandom(1.0))
    assert [backoff.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_jitter_keeps_each_delay_between_half_and_full_ceiling() -> None:
    backoff = Backoff(base=0.5, cap=30.0, random=random.Random(7))
    for attempt in range(40):
        ceiling = backoff.ceiling(attempt)
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling
    assert backoff.ceiling(10_000) == 30.0


def test_jitter_spreads_devices_apart() -> None:
    delays = {Backoff(random=random.Random(seed)).next_delay() for seed in range(20)}
    assert len(delays) == 20


def test_reset_starts_over() -> None:
    backoff = Backoff(base=1.0, cap=8.0, random=FixedRandom(0.0))
    backoff.next_delay()
    backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_rejects_a_shrinking_schedule() -> None:
    with pytest.raises(ValueError, match="not increasing"):
        Backoff(base=2.0, cap=1.0)
