"""The synthetic picture of the ``test`` source: a moving pattern with a block code in the corner.

Shared by the ``test`` source (which encodes it) and the benchmark's encoder path (which hands the
same pictures to aiortc as decoded frames).
"""

from __future__ import annotations

import av
import numpy as np

from appliance.media.sources import blockcode


class TestPattern:
    """Pictures of a fixed size; ``frame(counter, capture_time)`` returns a yuv420p frame."""

    __test__ = False  # not a pytest class

    def __init__(self, width: int, height: int) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"test pattern size {width}x{height} must be even")
        self.width = width
        self.height = height
        x = np.arange(2 * width, dtype=np.uint32)
        y = np.arange(height, dtype=np.uint32)
        # Diagonal stripes plus a gradient: enough detail that the encoder has real work to do.
        self._background = ((x[None, :] + 2 * y[:, None]) * 3 % 200 + 28).astype(np.uint8)
        self._buffer = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
        chroma_y = np.arange(height // 4, dtype=np.uint32)
        self._chroma = (chroma_y[:, None] * 4 % 128 + 64).astype(np.uint8)

    def frame(self, counter: int, capture_time: float) -> av.VideoFrame:
        shift = (counter * 4) % self.width
        luma = self._buffer[: self.height]
        luma[:] = self._background[:, shift : shift + self.width]
        self._buffer[self.height : self.height + self.height // 4] = self._chroma
        blockcode.draw(luma, blockcode.BlockCode.at(counter, capture_time))
        return av.VideoFrame.from_ndarray(self._buffer, format="yuv420p")
