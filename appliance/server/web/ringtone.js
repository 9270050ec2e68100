// A ringtone made with WebAudio (no sound file to fetch). Browsers let a page make sound only
// after a user gesture, so the AudioContext is created on the first click or key press.

const PATTERN = [
  // [start s, duration s] of each burst, repeating every CYCLE_S.
  [0, 0.4],
  [0.6, 0.4],
];
const CYCLE_S = 3;
const TONES_HZ = [440, 480];

export class Ringtone extends EventTarget {
  constructor(target = document) {
    super();
    this.context = null;
    this.playing = false;
    this._nodes = [];
    this._timer = null;
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
    this.playing = true;
    this._cycle();
    this._timer = setInterval(() => this._cycle(), CYCLE_S * 1000);
    return true;
  }

  stop() {
    this._wanted = false;
    if (!this.playing) return;
    this.playing = false;
    clearInterval(this._timer);
    this._timer = null;
    for (const node of this._nodes) {
      try {
        node.stop();
      } catch {
        // already stopped
      }
    }
    this._nodes = [];
  }

  _cycle() {
    const ctx = this.context;
    const t0 = ctx.currentTime + 0.05;
    this._nodes = this._nodes.filter((node) => node.endsAt > ctx.currentTime);
    for (const [start, duration] of PATTERN) {
      const gain = ctx.createGain();
      gain.gain.setValueAtTime(0, t0 + start);
      gain.gain.linearRampToValueAtTime(0.15, t0 + start + 0.02);
      gain.gain.setValueAtTime(0.15, t0 + start + duration - 0.05);
      gain.gain.linearRampToValueAtTime(0, t0 + start + duration);
      gain.connect(ctx.destination);
      for (const hz of TONES_HZ) {
        const osc = ctx.createOscillator();
        osc.frequency.value = hz;
        osc.connect(gain);
        osc.start(t0 + start);
        osc.stop(t0 + start + duration);
        osc.endsAt = t0 + start + duration;
        this._nodes.push(osc);
      }
    }
  }
}
