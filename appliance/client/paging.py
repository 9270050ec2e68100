"""Following ``next`` cursors: one loop for every paged query of the API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def follow_pages(
    fetch: Callable[[str | None], Awaitable[tuple[Sequence[T], str | None]]],
) -> AsyncIterator[T]:
    """Yield the items of page after page; ``fetch(cursor)`` returns ``(items, next)``. Stops
    at the last page (no ``next``) or at an empty one."""
    cursor: str | None = None
    while True:
        items, cursor = await fetch(cursor)
        for item in items:
            yield item
        if not cursor or not items:
            return
