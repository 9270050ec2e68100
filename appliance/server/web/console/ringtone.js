// A ringtone made with WebAudio (no sound file to fetch). Browsers let a page make sound only
// after a user gesture, so the AudioContext is created on the first click or key press.
//
// One cycle of the pattern is rendered into a buffer that loops on the audio thread: no page
// timers, so it keeps ringing in a background tab whose timers the browser throttles.

const BURSTS = [
  // [start s, duration s] within one cycle
  [0, 0.4],
  [0.6, 0.4],
];
const CYCLE_S = 3;
const TONES_HZ = [440, 480];
const LEVEL = 0.15;
const RAMP_S = 0.02;

function renderCycle(context) {
  const rate = context.sampleRate;
  const buffer = context.createBuffer(1, Math.round(CYCLE_S * rate), rate);
  const data = buffer.getChannelData(0);
  for (const [start, duration] of BURSTS) {
    const from = Math.round(start * rate);
    const n = Math.round(duration * rate);
    for (let i = 0; i < n; i += 1) {
      const t = i / rate;
      const envelope = Math.min(1, t / RAMP_S, (duration - t) / RAMP_S);
      let sample = 0;
      for (const hz of TONES_HZ) sample += Math.sin(2 * Math.PI * hz * t);
      data[from + i] = (LEVEL * envelope * sample) / TONES_HZ.length;
    }
  }
  return buffer;
}

export class Ringtone extends EventTarget {
  constructor(target = document) {
    super();
    this.context = null;
    this.playing = false;
    this._buffer = null;
    this._source = null;
    this._wanted = false;
    const unlock = () => this.unlock();
    for (const type of ['pointerdown', 'keydown', 'touchstart']) {
      target.addEventListener(type, unlock, {capture: true});
    }
  }

  get allowed() {
    return this.context !== null && this.context.state === 'running';
  }

  unlock() {
    try {
      if (!this.context) this.context = new AudioContext();
      if (this.context.state === 'suspended') this.context.resume();
    } catch {
      return;
    }
    this.dispatchEvent(new Event('allowed'));
    if (this._wanted && !this.playing) this.start();
  }

  // Returns whether sound is actually playing (false until the first user gesture).
  start() {
    this._wanted = true;
    if (this.playing) return true;
    if (!this.allowed) return false;
    this._buffer = this._buffer || renderCycle(this.context);
    const source = this.context.createBufferSource();
    source.buffer = this._buffer;
    source.loop = true;
    source.connect(this.context.destination);
    source.start();
    this._source = source;
    this.playing = true;
    return true;
  }

  stop() {
    this._wanted = false;
    if (!this.playing) return;
    this.playing = false;
    try {
      this._source.stop();
    } catch {
      // already stopped
    }
    this._source.disconnect();
    this._source = null;
  }
}
