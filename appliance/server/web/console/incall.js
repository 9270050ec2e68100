// The in-call view: remote video large, own preview small, mute, camera off, hang up, Unlock
// for a door with a relay, the call's duration and a connection-quality hint. With more than
// two people every other participant gets a tile of its own, named; the large picture stays
// the device's (a newcomer never replaces it), and arrivals and departures are announced.

import {participantSessionId, participantUserId} from './call.js';
import {displayName, el, formatDuration, updateInert} from './view.js';

const STATS_EVERY_MS = 2000;
const RESULT_SHOWN_MS = 6000;
// Unlock takes two presses: the second within this time opens the door (a relay pulse cannot
// be taken back, so it is confirmed before, not undone after).
const UNLOCK_CONFIRM_MS = 5000;
const SHORTCUTS_KEY = 'appliance.shortcuts';
// Alt + a key (event.code, so a keyboard layout or Alt's own characters do not matter).
const SHORTCUT_CODES = {KeyM: 'mic', KeyV: 'cam', KeyU: 'unlock', KeyH: 'hangup'};

export function shortcutsEnabled() {
  try {
    return localStorage.getItem(SHORTCUTS_KEY) !== 'off';
  } catch {
    return true;
  }
}

// RTT and packet loss → a word a person understands.
export function quality(stats) {
  if (!stats || stats.rttMs === null) return {level: 'unknown', text: ''};
  const rtt = Math.round(stats.rttMs);
  const loss = stats.lossPct ?? 0;
  let level = 'good';
  if (rtt > 400 || loss > 8) level = 'poor';
  else if (rtt > 150 || loss > 2) level = 'fair';
  const word = {good: 'Good', fair: 'Fair', poor: 'Poor'}[level];
  return {level, text: `${word} connection · ${rtt} ms · ${loss.toFixed(1)} % loss`};
}

export class InCallView extends EventTarget {
  constructor(root) {
    super();
    this.root = root;
    this.remote = root.querySelector('#remote-video');
    this.local = root.querySelector('#local-video');
    this.waiting = root.querySelector('#remote-waiting');
    this.title = root.querySelector('#call-title');
    this.duration = root.querySelector('#call-duration');
    this.quality = root.querySelector('#call-quality');
    this.message = root.querySelector('#call-message');
    this.mic = root.querySelector('#btn-mic');
    this.cam = root.querySelector('#btn-cam');
    this.unlockButton = root.querySelector('#btn-unlock');
    this.hangup = root.querySelector('#btn-hangup');
    this.link = root.querySelector('#call-link');
    this.mainName = root.querySelector('#remote-name');
    this.tileList = root.querySelector('#tiles');
    this.mainSession = null; // the participant session shown large
    this.tiles = new Map(); // session id -> {node, video, userId}
    this.call = null;
    this.media = null;
    this._timers = [];
    this.mic.addEventListener('click', () => this.toggle('audio'));
    this.cam.addEventListener('click', () => this.toggle('video'));
    this.unlockButton.addEventListener('click', () => this.unlock());
    this.hangup.addEventListener('click', () => this.dispatchEvent(new Event('hangup')));
    document.addEventListener('keydown', (event) => this._key(event));
    this.shortcuts = document.querySelector('#shortcuts-on');
    if (this.shortcuts) {
      this.shortcuts.checked = shortcutsEnabled();
      this.shortcuts.addEventListener('change', () => {
        try {
          localStorage.setItem(SHORTCUTS_KEY, this.shortcuts.checked ? 'on' : 'off');
        } catch {
          // storage refused: the setting holds for this page only
        }
      });
    }
  }

  get active() {
    return this.call !== null;
  }

  // call: a joined (or joining) Call; canUnlock: show the Unlock button; deviceId: the device's
  // user, the only sender whose unlock.result is believed.
  show(call, {title, canUnlock, deviceId = null}) {
    this.call = call;
    this.deviceId = deviceId;
    this.startedAt = null;
    this.root.hidden = false;
    this.root.dataset.state = 'connecting';
    this.title.textContent = title;
    this.duration.textContent = '0:00';
    this.quality.textContent = '';
    this.waiting.hidden = false;
    this.waiting.textContent = 'Connecting…';
    this.message.hidden = true;
    this.mainSession = null;
    this.mainName.textContent = '';
    this.tiles.clear();
    this.tileList.replaceChildren();
    this.unlockButton.hidden = !canUnlock;
    this.unlockButton.disabled = false;
    this._disarm();
    this._listen(call);
    this._renderControls();
    this._timers.push(setInterval(() => this._tick(), 1000));
    this._timers.push(setInterval(() => this._stats(), STATS_EVERY_MS));
    updateInert();
    this.hangup.focus();
  }

  // The header's link state, repeated here: the call view covers the header.
  linkState(state, text) {
    this.link.dataset.state = state;
    this.link.textContent = text;
  }

  attachLocal(media) {
    this.media = media || null;
    this.local.srcObject = media?.stream || null;
    this.local.hidden = !media?.stream || !media.track('video');
    this._renderControls();
  }

  hide() {
    for (const timer of this._timers) clearInterval(timer);
    this._timers = [];
    clearTimeout(this._messageTimer);
    this.call = null;
    this.media = null;
    this.root.hidden = true;
    this.remote.srcObject = null;
    this.local.srcObject = null;
    this.mainSession = null;
    this.tiles.clear();
    this.tileList.replaceChildren();
    this._disarm();
    updateInert();
  }

  say(text, kind = 'info', ms = 0) {
    this.message.textContent = text;
    this.message.dataset.kind = kind;
    this.message.hidden = false;
    clearTimeout(this._messageTimer);
    if (ms) this._messageTimer = setTimeout(() => (this.message.hidden = true), ms);
  }

  // Acts on what the button shows (the wire): a live kind is muted, a silent one unmuted.
  toggle(kind) {
    const media = this.media || this.call?.media;
    if (!media || !media.track(kind)) return;
    const live = this.call ? this.call.sending(kind) : media.enabled[kind];
    media.setEnabled(kind, !live);
    this._renderControls();
  }

  // The first press asks for confirmation; a second one within UNLOCK_CONFIRM_MS unlocks.
  async unlock() {
    if (!this.call || this.unlockButton.hidden || this.unlockButton.disabled) return;
    if (!this._armed) {
      this._armed = setTimeout(() => this._disarm(), UNLOCK_CONFIRM_MS);
      this.unlockButton.dataset.armed = 'true';
      this.unlockButton.textContent = 'Confirm unlock';
      this.say('Press Confirm unlock to open the door', 'info', UNLOCK_CONFIRM_MS);
      return;
    }
    this._disarm();
    this.unlockButton.disabled = true;
    this.say('Unlocking…');
    try {
      await this.call.unlock();
    } catch (err) {
      this.unlockButton.disabled = false;
      this.say(`Unlock could not be sent: ${err.message}`, 'error', RESULT_SHOWN_MS);
    }
  }

  // The large picture belongs to the device (or, in a call without one, to whoever came
  // first); everyone else gets a tile. Nobody's picture replaces another's.
  _showStream({sessionId, userId, stream}) {
    const large = this.mainSession === sessionId || (this.mainSession === null && (!this.deviceId || userId === this.deviceId));
    if (large) {
      this.mainSession = sessionId;
      this.mainName.textContent = this._name(sessionId);
      if (this.remote.srcObject !== stream) this.remote.srcObject = stream;
      this.remote.play().catch(() => {});
      return;
    }
    let tile = this.tiles.get(sessionId);
    if (!tile) {
      const video = el('video', {autoplay: true, playsinline: true});
      const node = el('li', {class: 'tile', dataset: {sessionId, userId: userId || ''}}, video,
        el('span', {class: 'tile-name'}, this._name(sessionId)));
      tile = {node, video, userId};
      this.tiles.set(sessionId, tile);
      this.tileList.append(node);
    }
    if (tile.video.srcObject !== stream) tile.video.srcObject = stream;
    tile.video.play().catch(() => {});
  }

  _dropStream(sessionId) {
    this.tiles.get(sessionId)?.node.remove();
    this.tiles.delete(sessionId);
    if (this.mainSession === sessionId) {
      this.mainSession = null;
      this.mainName.textContent = '';
      this.remote.srcObject = null;
    }
  }

  _name(sessionId, participant = null) {
    const known = participant || this.call?.participants.get(sessionId) || {};
    return displayName(known.user, participantUserId(known) || 'someone');
  }

  _disarm() {
    clearTimeout(this._armed);
    this._armed = null;
    delete this.unlockButton.dataset.armed;
    this.unlockButton.textContent = 'Unlock';
  }

  _listen(call) {
    call.addEventListener('track', (event) => {
      if (this.call !== call) return;
      this._showStream(event.detail);
    });
    call.addEventListener('call.session_participant_joined', (event) => {
      const participant = event.detail.participant || {};
      const sid = participantSessionId(participant);
      // Announced when it makes three or more (the device answering a call is no news).
      if (this.call !== call || !sid || sid === call.sessionId || call.participants.size < 2) return;
      this.say(`${this._name(sid, participant)} joined`, 'info', RESULT_SHOWN_MS);
    });
    call.addEventListener('call.session_participant_left', (event) => {
      const participant = event.detail.participant || {};
      const sid = participantSessionId(participant);
      if (this.call !== call || !sid || sid === call.sessionId) return;
      this._dropStream(sid);
      if (call.participants.size > 0) this.say(`${this._name(sid, participant)} left`, 'info', RESULT_SHOWN_MS);
    });
    call.addEventListener('sending', () => {
      if (this.call === call) this._renderControls();
    });
    call.addEventListener('peer.state', (event) => {
      if (this.call !== call) return;
      this._renderControls();
      const state = event.detail.state;
      if (state === 'connected') {
        this.root.dataset.state = 'connected';
        this.waiting.hidden = true;
        if (this.startedAt === null) this.startedAt = Date.now();
      } else if (state === 'disconnected' || state === 'failed') {
        this.root.dataset.state = 'reconnecting';
        this.waiting.hidden = false;
        this.waiting.textContent = 'Connection lost, reconnecting…';
      }
    });
    call.addEventListener('custom', (event) => {
      if (this.call !== call) return;
      const custom = event.detail.custom || {};
      if (custom.type !== 'unlock.result') return;
      // Any member may send a custom event: only the door's own answer says the door opened.
      if (!this.deviceId || event.detail.user?.id !== this.deviceId) return;
      this.unlockButton.disabled = false;
      if (custom.ok) this.say('Door unlocked', 'ok', RESULT_SHOWN_MS);
      else this.say(`Unlock refused${custom.reason ? `: ${custom.reason}` : ''}`, 'error', RESULT_SHOWN_MS);
    });
  }

  // The buttons show what is on the wire (Call.sending), not only what was asked for: after
  // an ICE restart or a reconnect they say what the new connection really sends.
  _renderControls() {
    const media = this.media || this.call?.media;
    const mic = media?.track('audio');
    const cam = media?.track('video');
    this.mic.disabled = !mic;
    this.cam.disabled = !cam;
    const live = (kind) => (this.call ? this.call.sending(kind) : Boolean(media?.sendingTrack(kind)));
    const micOff = !mic || !live('audio');
    const camOff = !cam || !live('video');
    this.mic.setAttribute('aria-pressed', String(Boolean(mic) && micOff));
    this.cam.setAttribute('aria-pressed', String(Boolean(cam) && camOff));
    this.mic.textContent = !mic ? 'No microphone' : micOff ? 'Unmute' : 'Mute';
    this.cam.textContent = !cam ? 'No camera' : camOff ? 'Camera on' : 'Camera off';
    this.local.classList.toggle('off', camOff);
  }

  _tick() {
    if (this.startedAt !== null) this.duration.textContent = formatDuration(Date.now() - this.startedAt);
  }

  async _stats() {
    const call = this.call;
    if (!call) return;
    this._renderControls();
    try {
      const q = quality(await call.stats());
      if (this.call !== call) return;
      this.quality.textContent = q.text;
      this.quality.dataset.level = q.level;
    } catch {
      // a peer closing mid-read; the next tick tries again
    }
  }

  // Alt+M, Alt+V, Alt+U, Alt+H; none while a ring card is up (the call view is inert then)
  // or when the user turned them off.
  _key(event) {
    if (!this.active || !event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    if (this.root.inert || (this.shortcuts && !this.shortcuts.checked)) return;
    const action = {
      mic: () => this.toggle('audio'),
      cam: () => this.toggle('video'),
      unlock: () => this.unlock(),
      hangup: () => this.dispatchEvent(new Event('hangup')),
    }[SHORTCUT_CODES[event.code]];
    if (action) {
      event.preventDefault();
      action();
    }
  }
}
