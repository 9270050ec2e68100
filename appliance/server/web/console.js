// The web console: sign in, see devices and recent calls, answer rings, call a device, talk,
// unlock. Built on the call module (call.js); plain ES modules, no build step, and no request
// to any host but the server that served the page.

import {ApiError, Call, Connection, LocalMedia} from './call.js';
import {Directory} from './directory.js';
import {History} from './history.js';
import {InCallView} from './incall.js';
import {Rings} from './rings.js';
import {Ringtone} from './ringtone.js';
import {SignInScreen, clearCredentials, credentialsProblem, loadCredentials, saveCredentials} from './signin.js';
import {displayName} from './view.js';

const RECENT_LIMIT = 25;
const RETRY_MS = 3000;
const ENDED_SHOWN_MS = 1500;
const REFRESH_DEBOUNCE_MS = 300;

const $ = (selector) => document.querySelector(selector);

class ConsoleApp {
  constructor() {
    this.signin = new SignInScreen($('#signin'), (credentials) => {
      saveCredentials(credentials);
      this.start(credentials);
    });
    this.ringtone = new Ringtone();
    this.ringtone.addEventListener('allowed', () => ($('#sound-note').hidden = true));
    this.view = new InCallView($('#incall'));
    this.view.addEventListener('hangup', () => this.hangUp());
    $('#signout').addEventListener('click', () => this.signOut());
    this.connection = null;
    this.call = null; // the Call we are in (or calling out on)
    this.states = []; // query calls' [{call, members, membership, own_capabilities}]
    this._retry = null;
    this._refreshTimer = null;
  }

  boot() {
    $('#insecure').hidden = window.isSecureContext;
    const credentials = loadCredentials();
    if (!credentials) {
      this.signin.show();
      return;
    }
    this.start(credentials);
  }

  // --- signing in and out ---------------------------------------------------------------------

  async start(credentials) {
    this.stop();
    const problem = credentialsProblem(credentials);
    if (problem) {
      clearCredentials();
      this.signin.show(problem);
      return;
    }
    let connection;
    try {
      connection = new Connection({apiKey: credentials.apiKey, token: credentials.token});
    } catch (err) {
      clearCredentials();
      this.signin.show(err.message);
      return;
    }
    this.connection = connection;
    this.me = connection.userId;
    connection.addEventListener('auth.failed', () => this.signedOut(
      'The server did not accept your sign-in: it is no longer valid (expired or revoked) or it never was. Ask for a new sign-in link.',
    ));
    connection.addEventListener('state', (e) => this._linkState(e.detail.state));
    connection.addEventListener('reconnected', () => this.refresh({reconcile: true}));
    connection.addEventListener('event', (e) => this._onEvent(e.detail));
    try {
      const ok = await connection.open();
      if (this.connection !== connection) return;
      this._showApp(ok.me);
      await this.refresh();
    } catch (err) {
      if (this.connection !== connection) return;
      if (err instanceof ApiError && err.isAuth) return; // auth.failed already showed sign-in
      this._linkState('offline');
      this._retry = setTimeout(() => this.start(credentials), RETRY_MS);
      this._showApp({id: this.me});
    }
  }

  stop() {
    clearTimeout(this._retry);
    if (this.call) this._endCall('');
    for (const cid of [...(this.rings?.cards.keys() || [])]) this.rings.remove(cid);
    this.ringtone.stop();
    if (this.connection) {
      const connection = this.connection;
      this.connection = null;
      connection.close();
    }
  }

  async signOut() {
    if (this.call) await this.hangUp();
    this.signedOut('You are signed out.');
  }

  signedOut(reason) {
    this.stop();
    clearCredentials();
    $('#app').hidden = true;
    this.signin.show(reason);
  }

  _showApp(me) {
    this.signin.hide();
    $('#app').hidden = false;
    $('#me').textContent = displayName(me, this.me);
    if (!this.rings) this._buildViews();
    this.directory.me = this.history.me = this.rings.me = this.me;
  }

  _buildViews() {
    this.directory = new Directory({
      list: $('#devices'),
      empty: $('#devices-empty'),
      me: this.me,
      onCall: (device, cid) => this.callDevice(device, cid),
    });
    this.history = new History({list: $('#recent'), empty: $('#recent-empty'), me: this.me});
    this.rings = new Rings({container: $('#rings'), template: $('#ring-template'), ringtone: this.ringtone, me: this.me});
    this.rings.addEventListener('accept', (e) => this.accept(e.detail.cid));
    this.rings.addEventListener('decline', (e) => this.decline(e.detail.cid));
    this.rings.addEventListener('cancel', () => this.hangUp());
    this.rings.addEventListener('removed', (e) => {
      if (e.detail.direction === 'in' && e.detail.reason !== 'accepted') this._refreshSoon();
    });
  }

  _linkState(state) {
    const pill = $('#link-state');
    pill.dataset.state = state;
    pill.textContent = {open: 'online', connecting: 'connecting…', reconnecting: 'reconnecting…'}[state] || 'offline';
  }

  // --- data -----------------------------------------------------------------------------------

  // reconcile: after a reconnect, drop ring cards whose ring ended while we were away (a
  // refresh right after a ring event may read the call before the ring is stored).
  async refresh({reconcile = false} = {}) {
    const connection = this.connection;
    if (!connection) return;
    try {
      const page = await connection.post('/api/v2/video/calls', {
        filter_conditions: {members: {$in: [this.me]}},
        sort: [{field: 'updated_at', direction: -1}],
        limit: RECENT_LIMIT,
      });
      if (this.connection !== connection) return;
      this.states = page.calls || [];
      this.directory.update(this.states);
      this.history.update(this.states);
      if (reconcile) this.rings.reconcile(this.states);
    } catch (err) {
      if (!(err instanceof ApiError && err.isAuth)) console.warn(`recent calls: ${err.message}`);
    }
  }

  _refreshSoon() {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = setTimeout(() => this.refresh(), REFRESH_DEBOUNCE_MS);
  }

  _onEvent(event) {
    if (event.type === 'user.presence.changed') {
      this.directory?.presence(event.user);
      return;
    }
    if (!event.call_cid || !this.rings) return;
    if (event.type === 'call.ring') {
      this.rings.incoming(event);
      this._refreshSoon();
      return;
    }
    this.rings.handle(event);
    if (this.call && this.call.cid === event.call_cid) this._onOwnCallEvent(event);
    if (['call.ended', 'call.session_ended', 'call.missed', 'call.accepted', 'call.created',
      'call.member_added', 'call.member_removed', 'call.updated'].includes(event.type)) {
      this._refreshSoon();
    }
  }

  // --- calls ----------------------------------------------------------------------------------

  stateOf(cid) {
    return this.states.find((s) => s.call.cid === cid) || null;
  }

  // The device in a call (for the title and the Unlock button), if any.
  deviceIn(cid, hint) {
    if (hint) return hint;
    const state = this.stateOf(cid);
    const member = (state?.members || []).find((m) => m.user?.custom?.device && m.user_id !== this.me);
    return member ? member.user : null;
  }

  // A door with a relay, and this user's member role among those the device unlocks for (when
  // the device publishes them; it checks again itself and answers unlock.result either way).
  canUnlock(device, cid) {
    const spec = device?.custom?.device;
    if (!spec || !spec.relay) return false;
    const roles = spec.unlock_roles;
    if (!Array.isArray(roles)) return true;
    const role = this.stateOf(cid)?.membership?.role || this.call?.membership?.role;
    return roles.includes(role || 'call_member');
  }

  async accept(cid) {
    if (this.call) await this.hangUp();
    const [type, ...rest] = cid.split(':');
    const call = new Call(this.connection, type, rest.join(':'));
    try {
      await call.accept();
    } catch (err) {
      call.dispose();
      this.rings.failed(cid, `Could not answer: ${err.message}`);
      return;
    }
    const caller = this.rings.cards.get(cid)?.caller;
    this.rings.remove(cid, 'accepted');
    await this._enter(call, this.deviceIn(cid, caller?.custom?.device ? caller : null));
  }

  async decline(cid) {
    const [type, ...rest] = cid.split(':');
    const call = new Call(this.connection, type, rest.join(':'));
    try {
      await call.reject('decline');
      this.rings.remove(cid, 'declined');
    } catch (err) {
      this.rings.failed(cid, `Could not decline: ${err.message}`);
    } finally {
      call.dispose();
    }
  }

  // "Call this device": get-or-create the shared call, ring the device, join and wait for it.
  async callDevice(device, cid) {
    if (this.call) return;
    const [type, ...rest] = cid.split(':');
    const call = new Call(this.connection, type, rest.join(':'));
    this.call = call;
    this.outgoing = {device, answered: false};
    this.directory.setBusy(true);
    this.rings.outgoing(cid, device, this.stateOf(cid)?.call.custom);
    this.rings.setState(cid, 'Ringing…');
    try {
      await call.getOrCreate({});
      await call.ring({memberIds: [device.id], video: true});
      if (this.call !== call) return;
      const media = await LocalMedia.open({audio: true, video: true});
      if (this.call !== call) {
        media.stop();
        return;
      }
      await call.join({media});
      this._ownMedia = media;
      this.view.attachLocal(media);
    } catch (err) {
      if (this.call !== call) return;
      this.rings.setState(cid, `Could not call: ${err.message}`);
      this._endCall('', 4000);
    }
  }

  _onOwnCallEvent(event) {
    const out = this.outgoing;
    if (!out || out.answered) return;
    if (event.type === 'call.accepted' && event.user?.id !== this.me) {
      out.answered = true;
      this.rings.remove(event.call_cid, 'answered');
      this._showCall(this.call, out.device);
    } else if (event.type === 'call.rejected' && event.user?.id === out.device.id) {
      this.rings.setState(event.call_cid, `${displayName(out.device)} declined`);
    } else if (event.type === 'call.missed' && event.user?.id === out.device.id) {
      this.rings.setState(event.call_cid, 'No answer');
    } else if (event.type === 'call.ended') {
      const text = {rejected: 'Declined', timeout: 'No answer', cancelled: 'Cancelled'}[event.reason] || 'Call ended';
      this.rings.setState(event.call_cid, text);
      this._endCall('', ENDED_SHOWN_MS);
    }
  }

  async _enter(call, device) {
    this.call = call;
    this.outgoing = null;
    this.directory.setBusy(true);
    this._showCall(call, device);
    try {
      const media = await LocalMedia.open({audio: true, video: true});
      this._ownMedia = media;
      if (media.error) this.view.say(`Receive-only: ${media.error}`, 'info', 6000);
      this.view.attachLocal(media);
      await call.join({media});
    } catch (err) {
      this.view.say(`Could not join: ${err.message}`, 'error');
      this._endCall('', 4000);
    }
  }

  _showCall(call, device) {
    const title = device ? displayName(device) : call.data?.custom?.name || call.id;
    this.view.show(call, {title, canUnlock: this.canUnlock(device, call.cid)});
    if (call.media) this.view.attachLocal(call.media);
    // When everyone else has left (the device hung up), hang up too.
    call.addEventListener('call.session_participant_left', () => {
      if (this.call !== call || !call.joined || call.participants.size > 0) return;
      this.view.say('The other side hung up');
      setTimeout(() => this.call === call && this.hangUp(), 800);
    });
    call.addEventListener('left', (e) => {
      if (this.call !== call) return;
      const reason = e.detail.reason;
      this.view.say(reason === 'last_participant_left' || !reason ? 'Call ended' : `Call ended (${reason})`);
      this._endCall('', ENDED_SHOWN_MS);
    });
  }

  async hangUp() {
    const call = this.call;
    if (!call) return;
    const out = this.outgoing;
    if (out && !out.answered) {
      try {
        await call.reject('cancel');
      } catch (err) {
        console.warn(`cancel: ${err.message}`);
      }
    }
    await call.leave();
    this._endCall('');
  }

  _endCall(message, delayMs = 0) {
    const call = this.call;
    this.call = null;
    this.outgoing = null;
    const finish = () => {
      if (this.call) return; // a new call started meanwhile
      if (call) {
        this.rings?.remove(call.cid, 'ended');
        call.dispose();
      }
      this._ownMedia?.stop();
      this._ownMedia = null;
      this.view.hide();
      this.directory?.setBusy(false);
      this._refreshSoon();
    };
    if (message) this.view.say(message);
    if (delayMs) setTimeout(finish, delayMs);
    else finish();
  }
}

const app = new ConsoleApp();
window.applianceConsole = app;
app.boot();
