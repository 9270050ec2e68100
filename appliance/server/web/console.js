// The web console: sign in, see devices and recent calls, answer rings, call a device, talk,
// unlock. Built on the call module (call.js); plain ES modules, no build step, and no request
// to any host but the server that served the page.

import {ApiError, Connection} from './call.js';
import {CallControl} from './callcontrol.js';
import {Directory} from './directory.js';
import {History} from './history.js';
import {InCallView} from './incall.js';
import {MissedCalls} from './missed.js';
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
    const credentials = loadCredentials();
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
    this.signedOut('You are signed out.');
  }

  signedOut(reason) {
    this.stop();
    clearCredentials(reason);
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
      if (e.detail.direction === 'in' && e.detail.reason !== 'accepted') this.refreshSoon();
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
      this._attempt = 0;
      clearTimeout(this._listRetry);
      this.directory.reachable();
      this.directory.update(this.states);
      this.history.update(this.states);
      this.missed.update(this.states);
      if (reconcile) this.rings.reconcile(this.states);
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

  stateOf(cid) {
    return this.states.find((s) => s.call.cid === cid) || null;
  }
}

const app = new ConsoleApp();
window.applianceConsole = app;
app.boot();
