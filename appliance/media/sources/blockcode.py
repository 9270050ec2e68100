"""A frame counter and a capture time drawn into the picture as big black/white cells.

The code survives lossy H.264 because each bit is a 16x16 px cell and the reader samples only the
cell's centre. Layout (the browser reader in the web console uses the same one):

* 9 rows x 8 columns of 16x16 px cells in the top-left corner (128 px wide, 144 px high);
* row ``r`` is byte ``r``; column ``c`` is bit ``7 - c`` of that byte (most significant bit left);
* bytes 0-3: frame counter, big-endian unsigned 32 bit;
* bytes 4-7: capture time in milliseconds since the Unix epoch modulo 2**32, big-endian;
* byte 8: CRC-8 (polynomial 0x07, initial value 0xFF, no reflection, no final xor) of bytes 0-7;
* white cell (luma 235) = 1, black cell (luma 16) = 0; read: mean luma of the central 8x8 px > 128.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

CELL = 16
COLUMNS = 8
ROWS = 9
WIDTH = CELL * COLUMNS
HEIGHT = CELL * ROWS
WHITE = 235
BLACK = 16
_SAMPLE = slice(CELL // 4, CELL - CELL // 4)


@dataclass(frozen=True)
class BlockCode:
    counter: int
    time_ms: int

    @classmethod
    def at(cls, counter: int, capture_time: float) -> BlockCode:
        return cls(counter & 0xFFFFFFFF, int(capture_time * 1000) & 0xFFFFFFFF)

    def to_bytes(self) -> bytes:
        body = self.counter.to_bytes(4, "big") + self.time_ms.to_bytes(4, "big")
        return body + bytes([crc8(body)])

    def age_ms(self, now: float) -> int:
        """Milliseconds from the capture time to ``now`` (seconds since the epoch), wrap-safe."""
        return ((int(now * 1000) & 0xFFFFFFFF) - self.time_ms) & 0xFFFFFFFF


def crc8(data: bytes) -> int:
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def draw(luma: npt.NDArray[np.uint8], code: BlockCode) -> None:
    """Draw ``code`` into a luma plane (height x width, uint8) in place."""
    if luma.shape[0] < HEIGHT or luma.shape[1] < WIDTH:
        raise ValueError(f"picture {luma.shape[1]}x{luma.shape[0]} is smaller than the block code")
    bits = np.unpackbits(np.frombuffer(code.to_bytes(), dtype=np.uint8)).reshape(ROWS, COLUMNS)
    cells = np.where(bits == 1, WHITE, BLACK).astype(np.uint8)
    luma[:HEIGHT, :WIDTH] = np.kron(cells, np.ones((CELL, CELL), dtype=np.uint8))


def read(luma: npt.NDArray[Any]) -> BlockCode | None:
    """Read a code from a luma plane; ``None`` when absent or damaged (checksum mismatch)."""
    if luma.shape[0] < HEIGHT or luma.shape[1] < WIDTH:
        return None
    block = luma[:HEIGHT, :WIDTH].astype(np.uint16).reshape(ROWS, CELL, COLUMNS, CELL)
    means = block[:, _SAMPLE, :, _SAMPLE].mean(axis=(1, 3))
    data = np.packbits((means > 128).astype(np.uint8), axis=1).reshape(-1).tobytes()
    if crc8(data[:8]) != data[8]:
        return None
    return BlockCode(int.from_bytes(data[0:4], "big"), int.from_bytes(data[4:8], "big"))
