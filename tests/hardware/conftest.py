from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from appliance.clock import ManualClock


@pytest.fixture
def factory() -> Any:
    f = MockFactory()
    yield f
    f.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def settle(rounds: int = 10) -> None:
    """Let call_soon_threadsafe hops and woken sleepers run."""
    for _ in range(rounds):
        await asyncio.sleep(0)
