// The web console: sign in, see devices and recent calls, answer rings, call a device, talk,
// unlock. Built on the call module (call.js); plain ES modules, no build step, and no request
// to any host but the server that served the page.

import {ApiError, Connection} from './call.js';
import {CallControl} from './callcontrol.js';
import {Directory} from './directory.js';
import {History} from './history.js';
import {InCallView} from './incall.js';
import {MissedCalls} from './missed.js';
import {DeviceRinging, forgetCredentials, listenToWorker, notifyHidden, registerWorker, rememberedCredentials, tellWorker} from './pwa.js';
import {Rings} from './rings.js';
import {Ringtone} from './ringtone.js';
import {
  SignInScreen,
  clearCredentials,
  credentialsProblem,
  loadCredentials,
  saveCredentials,
  takeSignOutReason,
} from './signin.js';
import {displayName} from './view.js';

const RECENT_LIMIT = 25;
const RETRY_MS = 3000;
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
    this.deviceRinging = new DeviceRinging({root: $('#ring-setup'), ringtone: this.ringtone});
    // No longer remembered on this device: this tab stays signed in (as after a sign-in link).
    this.deviceRinging.addEventListener('disabled', () => this.credentials && saveCredentials(this.credentials));
    registerWorker();
    // A notification's Accept (a new window: "#accept=<cid>"; an open one: a message).
    this._fromWorker = listenToWorker({
      onAccept: (cid) => this.acceptFromNotification(cid),
      onMissed: () => this.showMissed(),
    });
    $('#signout').addEventListener('click', () => this.signOut());
    this.connection = null;
    this.control = null;
    this.states = []; // query calls' [{call, members, membership, own_capabilities}]
    this._retry = null;
    this._refreshTimer = null;
    this._attempt = 0; // failed attempts to reach the server in a row
  }

  // The call in progress (tests and the console's own views read it).
  get call() {
    return this.control?.call || null;
  }

  boot() {
    $('#insecure').hidden = window.isSecureContext;
    const credentials = loadCredentials() || rememberedCredentials();
    if (!credentials) {
      this.signin.show(takeSignOutReason());
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
      forgetCredentials();
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
    this.credentials = credentials;
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
      this.deviceRinging.attach(connection, credentials).catch((err) => console.warn(`ring setup: ${err.message}`));
      await this.refresh();
      this._takeWorkerRequest();
    } catch (err) {
      if (this.connection !== connection) return;
      if (err instanceof ApiError && err.isAuth) return; // auth.failed already showed sign-in
      this._linkState('offline');
      this._retry = setTimeout(() => this.start(credentials), RETRY_MS);
      this._showApp({id: this.me});
      this._unreachable();
    }
  }

  stop() {
    clearTimeout(this._retry);
    clearTimeout(this._listRetry);
    if (this.call) this.control.endCall(''); // (without a call it would re-read the list)
    for (const cid of [...(this.rings?.cards.keys() || [])]) this.rings.remove(cid);
    this.ringtone.stop();
    if (this.connection) {
      const connection = this.connection;
      this.connection = null;
      connection.close();
    }
  }

  async signOut() {
    await this.control?.hangUp();
    // While the token still works: remove this device's push subscription at the server.
    await this.deviceRinging.disable({signingOut: true});
    this.signedOut('You are signed out.');
  }

  signedOut(reason) {
    this.stop();
    this.deviceRinging.detach();
    clearCredentials(reason);
    forgetCredentials();
    $('#app').hidden = true;
    this.signin.show(reason);
  }

  _showApp(me) {
    this.signin.hide();
    $('#app').hidden = false;
    $('#me').textContent = displayName(me, this.me);
    if (!this.rings) this._buildViews();
    this.directory.me = this.history.me = this.rings.me = this.me;
    this.missed.setUser(this.me);
  }

  _buildViews() {
    this.directory = new Directory({
      list: $('#devices'),
      empty: $('#devices-empty'),
      unreachable: $('#devices-unreachable'),
      me: this.me,
      onCall: (device, cid) => this.control.callDevice(device, cid),
    });
    this.history = new History({list: $('#recent'), empty: $('#recent-empty'), me: this.me});
    this.rings = new Rings({container: $('#rings'), template: $('#ring-template'), ringtone: this.ringtone, me: this.me});
    this.control = new CallControl({host: this, view: this.view, rings: this.rings, directory: this.directory});
    this.missed = new MissedCalls({
      root: $('#missed'), list: $('#missed-list'), badge: $('#missed-badge'), empty: $('#missed-empty'), me: this.me,
    });
    this.rings.addEventListener('removed', (e) => {
      this.missed.ringEnded(e.detail);
      if (e.detail.direction !== 'in') return;
      // Close this ring's notification (a missed one becomes "Missed call" while hidden).
      tellWorker({type: 'ring_stopped', stop: {call_cid: e.detail.cid, reason: e.detail.reason}});
      if (e.detail.reason !== 'accepted') this.refreshSoon();
    });
  }

  _linkState(state) {
    const pill = $('#link-state');
    pill.dataset.state = state;
    pill.textContent = {open: 'online', connecting: 'connecting…', reconnecting: 'reconnecting…'}[state] || 'offline';
    this.view.linkState(state, pill.textContent);
  }

  // --- data -----------------------------------------------------------------------------------

  // reconcile: after a reconnect, drop ring cards whose ring ended while we were away (a
  // refresh right after a ring event may read the call before the ring is stored; so may this
  // one, for a ring made while it is under way: cards made after the read began are kept).
  async refresh({reconcile = false} = {}) {
    const connection = this.connection;
    if (!connection) return;
    const readAt = this.rings?.made ?? 0;
    try {
      const page = await connection.post('/api/v2/video/calls', {
        filter_conditions: {members: {$in: [this.me]}},
        sort: [{field: 'updated_at', direction: -1}],
        limit: RECENT_LIMIT,
      });
      if (this.connection !== connection) return;
      this.states = page.calls || [];
      this._attempt = 0;
      clearTimeout(this._listRetry);
      this.directory.reachable();
      this.directory.update(this.states);
      this.history.update(this.states);
      this.missed.update(this.states);
      if (reconcile) this.rings.reconcile(this.states, readAt);
    } catch (err) {
      if (this.connection !== connection || (err instanceof ApiError && err.isAuth)) return;
      console.warn(`recent calls: ${err.message}`);
      clearTimeout(this._listRetry);
      this._listRetry = setTimeout(() => this.refresh({reconcile}), RETRY_MS);
      this._unreachable();
    }
  }

  // The server did not answer: say so (never "no devices"), with the retry that is under way.
  _unreachable() {
    this._attempt += 1;
    this.directory.unreachable({attempt: this._attempt, nextInMs: RETRY_MS});
  }

  refreshSoon() {
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
      if (this.rings.cards.has(event.call_cid)) notifyHidden({type: 'ring', ring: ringMessage(event)});
      this.refreshSoon();
      return;
    }
    this.rings.handle(event);
    this.control.onEvent(event);
    if (['call.ended', 'call.session_ended', 'call.missed', 'call.accepted', 'call.created',
      'call.member_added', 'call.member_removed', 'call.updated',
      'call.session_participant_joined', 'call.session_participant_left'].includes(event.type)) {
      this.refreshSoon();
    }
  }

  // --- the service worker's requests -----------------------------------------------------------

  _takeWorkerRequest() {
    const request = this._fromWorker;
    this._fromWorker = null;
    if (request?.type === 'accept') this.acceptFromNotification(request.cid);
    else if (request?.type === 'missed') this.showMissed();
  }

  // Accept from a notification: answer if the call still rings this user, else say what became of it.
  async acceptFromNotification(cid) {
    if (!this.connection || !this.control || this.connection.state !== 'open') {
      this._fromWorker = {type: 'accept', cid};
      return;
    }
    const [type, ...rest] = cid.split(':');
    let state;
    try {
      state = await this.connection.get(`/api/v2/video/call/${encodeURIComponent(type)}/${encodeURIComponent(rest.join(':'))}`);
    } catch (err) {
      this.notice(`Could not answer: ${err.message}`);
      return;
    }
    const ringing = state?.call?.session?.ringing || [];
    if (!ringing.includes(this.me) || state.call.ended_at) {
      this.notice('That call is no longer ringing: someone answered it, or the caller gave up.');
      this.refresh();
      return;
    }
    await this.control.accept(cid);
  }

  showMissed() {
    const missed = $('#missed');
    if (!missed) return;
    if (missed.tagName === 'DETAILS') missed.open = true;
    missed.scrollIntoView({block: 'start'});
    missed.querySelector('summary')?.focus();
  }

  notice(text) {
    const node = $('#console-notice');
    node.textContent = text;
    node.hidden = !text;
  }

  stateOf(cid) {
    return this.states.find((s) => s.call.cid === cid) || null;
  }
}

// The Web Push payload's shape (README "Push notifications"), made from a WebSocket call.ring.
function ringMessage(event) {
  const call = event.call || {};
  const caller = event.user || {};
  const session = call.session || {};
  return {
    type: 'call.ring',
    call_cid: event.call_cid,
    session_id: session.id || call.current_session_id || '',
    caller: {id: caller.id, name: caller.name || caller.id},
    custom: call.custom || {},
    video: Boolean(event.video ?? true),
    created_at: event.created_at,
    expires_at: '',
  };
}

const app = new ConsoleApp();
window.applianceConsole = app;
app.boot();
