"""The daemon's tasks: those owned by the current call, cancelled when the call returns to
idle (a hang-up cancels whatever that call still had in flight), and the daemon's own. An
error in either is handed to ``on_error`` (the daemon shows it on the LEDs), never raised into
the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from appliance.errors import ApplianceError

log = logging.getLogger(__name__)


class DaemonTasks:
    def __init__(self, name: str, state: Callable[[], str], on_error: Callable[[str], None]):
        self._name = name  # "Daemon(door-1)", for the log
        self._state = state
        self._on_error = on_error
        self._call: set[asyncio.Task[Any]] = set()
        self._own: set[asyncio.Task[Any]] = set()

    def call_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._start(coro, self._call)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._start(coro, self._own)

    def _start(
        self, coro: Coroutine[Any, Any, Any], into: set[asyncio.Task[Any]]
    ) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(self._guard(coro))
        into.add(task)
        task.add_done_callback(into.discard)
        # a task cancelled before it ran never awaited its coroutine: close it quietly
        task.add_done_callback(lambda _: coro.close())
        return task

    def cancel_call_tasks(self) -> None:
        """The call is over: cancel its tasks (except the one that is running this)."""
        for task in list(self._call):
            if task is not asyncio.current_task():
                task.cancel()

    def cancel_all(self) -> None:
        for task in [*self._call, *self._own]:
            task.cancel()

    async def _guard(self, coro: Coroutine[Any, Any, Any]) -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except (ApplianceError, OSError) as err:
            self._on_error(f"{type(err).__name__}: {err}")
        except Exception:
            log.exception("%s unexpected error in %s", self._name, self._state())
            self._on_error("internal error")
