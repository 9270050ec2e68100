"""One sound being played: a chime, a ringtone loop, a pre-announce tone."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

__all__ = ["Voice"]


class Voice:
    """Interleaved S16 samples at the device format, read period by period by the writer thread.

    :meth:`stop` may be called from anywhere; :meth:`wait` resolves (on the loop) once the sound
    has finished or was stopped.
    """

    def __init__(
        self,
        samples: np.ndarray,
        *,
        loop: bool,
        duck: bool,
        loop_ref: asyncio.AbstractEventLoop,
    ) -> None:
        self._samples = np.ascontiguousarray(samples, dtype=np.int16).reshape(-1)
        self.loop = loop
        self.duck = duck
        self._pos = 0
        self._stopped = threading.Event()
        self._done_flag = False
        self._event_loop = loop_ref
        self._done: asyncio.Future[None] = loop_ref.create_future()

    @property
    def finished(self) -> bool:
        if self._stopped.is_set():
            return True
        return not self.loop and self._pos >= self._samples.size

    def take(self, count: int) -> np.ndarray:
        """The next ``count`` samples as int32 (zeros once finished)."""
        out = np.zeros(count, dtype=np.int32)
        if self.finished or self._samples.size == 0:
            self._stopped.set()
            return out
        filled = 0
        while filled < count:
            n = min(count - filled, self._samples.size - self._pos)
            out[filled : filled + n] = self._samples[self._pos : self._pos + n]
            filled += n
            self._pos += n
            if self._pos >= self._samples.size:
                if not self.loop:
                    break
                self._pos = 0
        return out

    def stop(self) -> None:
        self._stopped.set()

    def finish(self) -> None:
        """Mark done (from any thread)."""
        self._stopped.set()
        if self._done_flag:
            return
        self._done_flag = True
        try:
            self._event_loop.call_soon_threadsafe(self._resolve)
        except RuntimeError:  # loop already closed: nobody is waiting any more
            pass

    def _resolve(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    @property
    def done(self) -> bool:
        return self._done.done()

    async def wait(self) -> None:
        await asyncio.shield(self._done)

    def __repr__(self) -> str:
        seconds = self._samples.size
        return (
            f"Voice(samples={seconds}, pos={self._pos}, loop={self.loop}, finished={self.finished})"
        )
