"""The one polling helper of the tests: wait for a state that has no event to await (a counter
in another process, a row a NOTIFY wrote, a daemon's status), checking often and failing with
what was awaited. Where a condition can be awaited directly, await it instead."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


async def until(
    check: Callable[[], Any], within: float = 10.0, *, what: str = "condition", every: float = 0.01
) -> None:
    """Return once ``check()`` is true (``check`` may return an awaitable); raise
    ``AssertionError`` naming ``what`` after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(every)


async def wait_for(what: str, check: Callable[[], Any], seconds: float = 30.0) -> None:
    """:func:`until` with the description first, as the end-to-end tests read best."""
    await until(check, seconds, what=what, every=0.05)
