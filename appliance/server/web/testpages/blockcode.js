// Reads the frame counter and capture time that the `test` video source draws into its picture
// (appliance/media/sources/blockcode.py has the layout; keep the two in step):
//
//   9 rows × 8 columns of 16×16 px cells in the top-left corner; row r = byte r, column c = bit 7-c;
//   bytes 0-3 frame counter (big-endian u32), bytes 4-7 capture time in ms since the epoch mod 2^32,
//   byte 8 CRC-8 (poly 0x07, init 0xFF) of bytes 0-7; a cell is 1 when the mean luma of its
//   central 8×8 px is above 128.
//
// Used by tests and benchmarks to prove that a browser decoded an appliance's video, and to
// measure glass-to-glass time (capture → frame shown, read in requestVideoFrameCallback).

export const CELL = 16;
export const COLUMNS = 8;
export const ROWS = 9;
export const WIDTH = CELL * COLUMNS;
export const HEIGHT = CELL * ROWS;
const SAMPLE_FROM = CELL / 4;
const SAMPLE_TO = CELL - CELL / 4;
const WRAP = 2 ** 32;

export function crc8(bytes) {
  let crc = 0xff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let i = 0; i < 8; i += 1) {
      crc = crc & 0x80 ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
    }
  }
  return crc;
}

// rgba: Uint8ClampedArray of an RGBA image `width` pixels wide (at least WIDTH × HEIGHT).
// Returns {counter, timeMs} or null when there is no valid code.
export function readRgba(rgba, width) {
  const bytes = new Uint8Array(ROWS);
  for (let row = 0; row < ROWS; row += 1) {
    let byte = 0;
    for (let col = 0; col < COLUMNS; col += 1) {
      let sum = 0;
      let n = 0;
      for (let y = row * CELL + SAMPLE_FROM; y < row * CELL + SAMPLE_TO; y += 1) {
        for (let x = col * CELL + SAMPLE_FROM; x < col * CELL + SAMPLE_TO; x += 1) {
          const i = (y * width + x) * 4;
          sum += 0.299 * rgba[i] + 0.587 * rgba[i + 1] + 0.114 * rgba[i + 2];
          n += 1;
        }
      }
      byte = (byte << 1) | (sum / n > 128 ? 1 : 0);
    }
    bytes[row] = byte;
  }
  if (crc8(bytes.subarray(0, 8)) !== bytes[8]) return null;
  const view = new DataView(bytes.buffer);
  return {counter: view.getUint32(0), timeMs: view.getUint32(4)};
}

// Milliseconds from a code's capture time to `epochMs`, safe across the 2^32 wrap.
export function ageMs(code, epochMs) {
  return (((Math.floor(epochMs) % WRAP) - code.timeMs) % WRAP + WRAP) % WRAP;
}

// Reads the code of every frame a <video> element shows.
//   const reader = new FrameCodeReader(video); reader.start();
//   reader.codes → [{counter, timeMs, ageMs, shownAt}]  (ageMs = glass-to-glass for that frame)
export class FrameCodeReader {
  constructor(video, {keep = 10_000} = {}) {
    this.video = video;
    this.keep = keep;
    this.codes = [];
    this.framesSeen = 0;
    this.unreadable = 0;
    this._canvas = document.createElement('canvas');
    this._canvas.width = WIDTH;
    this._canvas.height = HEIGHT;
    this._ctx = this._canvas.getContext('2d', {willReadFrequently: true});
    this._handle = null;
    this._running = false;
  }

  get latest() {
    return this.codes.length ? this.codes[this.codes.length - 1] : null;
  }

  // Counters seen, in order: a decoding stream shows them increasing.
  get counters() {
    return this.codes.map((code) => code.counter);
  }

  start() {
    if (this._running) return;
    this._running = true;
    this._schedule();
  }

  stop() {
    this._running = false;
    if (this._handle !== null && this.video.cancelVideoFrameCallback) {
      this.video.cancelVideoFrameCallback(this._handle);
    }
    this._handle = null;
  }

  // Reads the picture the element shows right now (no frame callback needed).
  readNow(shownAtEpochMs = Date.now()) {
    const video = this.video;
    if (video.videoWidth < WIDTH || video.videoHeight < HEIGHT) return null;
    this._ctx.drawImage(video, 0, 0, WIDTH, HEIGHT, 0, 0, WIDTH, HEIGHT);
    const code = readRgba(this._ctx.getImageData(0, 0, WIDTH, HEIGHT).data, WIDTH);
    if (!code) return null;
    return {...code, ageMs: ageMs(code, shownAtEpochMs), shownAt: shownAtEpochMs};
  }

  _schedule() {
    if (!this._running) return;
    this._handle = this.video.requestVideoFrameCallback((now, metadata) => {
      this.framesSeen += 1;
      // expectedDisplayTime is on the performance clock; the code carries epoch ms.
      const shownAt = performance.timeOrigin + (metadata.expectedDisplayTime || now);
      const code = this.readNow(shownAt);
      if (code) {
        this.codes.push(code);
        if (this.codes.length > this.keep) this.codes.splice(0, this.codes.length - this.keep);
      } else {
        this.unreadable += 1;
      }
      this._schedule();
    });
  }
}
