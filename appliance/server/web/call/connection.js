// The browser's link to the call server: REST requests and the one WebSocket that carries
// events and signaling (docs/protocol.md has the wire format).
//
// Every request carries ?api_key=KEY, `Authorization: <jwt>` and `stream-auth-type: jwt`.
// The WebSocket's first frame is {token, user_details: {id}}; the server answers
// connection.ok {connection_id, me}. After a drop the connection comes back by itself
// (backoff up to 10 s) and emits "reconnected": callers re-fetch what they care about.

const HEALTH_INTERVAL_MS = 10_000;
// No frame at all for this long means the socket is dead even if the browser has not noticed.
const SILENCE_LIMIT_MS = 35_000;
const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000, 10_000];
// A hidden tab's timers may run once a minute (Chrome's intensive throttling), but incoming
// frames are still delivered: answering the server's health.check keeps the link alive then.
const ANSWER_HEALTH_AFTER_MS = 1000;

export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && body.message) || `HTTP ${status}`;
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = body && body.code;
    this.details = body && body.details;
  }

  get isAuth() {
    return this.status === 401;
  }
}

// The payload of a JWT, without checking its signature (the server does that).
export function decodeToken(token) {
  const part = String(token || '').split('.')[1];
  if (!part) throw new ApiError(401, {message: 'This is not a token (expected a JWT).'});
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    return JSON.parse(json);
  } catch (err) {
    throw new ApiError(401, {message: `The token cannot be read: ${err.message}`});
  }
}

export class Connection extends EventTarget {
  // options: {apiKey, token, baseUrl = location.origin, userId = token's user_id, log = console}
  constructor({apiKey, token, baseUrl, userId, log} = {}) {
    super();
    if (!apiKey) throw new ApiError(401, {message: 'No API key.'});
    this.apiKey = apiKey;
    this.token = token;
    this.claims = decodeToken(token);
    this.userId = userId || this.claims.user_id;
    if (!this.userId) throw new ApiError(401, {message: 'The token names no user (user_id).'});
    this.baseUrl = new URL(baseUrl || location.origin);
    this.log = log || console;
    this.connectionId = null;
    this.me = null;
    this.state = 'closed'; // closed | connecting | open | reconnecting
    this._ws = null;
    this._wanted = false;
    this._attempt = 0;
    this._timers = new Set();
    this._lastFrameAt = 0;
  }

  // --- REST -------------------------------------------------------------------------------

  url(path, query = {}) {
    const url = new URL(path, this.baseUrl);
    url.searchParams.set('api_key', this.apiKey);
    for (const [key, value] of Object.entries(query)) {
      if (value === undefined || value === null) continue;
      url.searchParams.set(key, typeof value === 'object' ? JSON.stringify(value) : String(value));
    }
    return url;
  }

  // Resolves with the parsed JSON answer; rejects with ApiError (status 0: network failure).
  async request(method, path, {body, query} = {}) {
    const headers = {Authorization: this.token, 'stream-auth-type': 'jwt'};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(this.url(path, query), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError(0, {message: `The server cannot be reached (${err.message}).`});
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const error = new ApiError(response.status, data);
      if (error.isAuth) this._emit('auth.failed', {error});
      throw error;
    }
    return data;
  }

  get(path, query) {
    return this.request('GET', path, {query});
  }

  post(path, body = {}, query) {
    return this.request('POST', path, {body, query});
  }

  patch(path, body = {}) {
    return this.request('PATCH', path, {body});
  }

  // --- WebSocket ----------------------------------------------------------------------------

  // Resolves with connection.ok's payload; rejects with ApiError when the server refuses.
  open() {
    this._wanted = true;
    if (this.state === 'open') return Promise.resolve(this._ok);
    if (this.state === 'closed') return this._connect('connecting');
    // Already connecting or reconnecting: wait for that attempt instead of opening a second socket.
    return new Promise((resolve, reject) => {
      const onState = (event) => {
        if (event.detail.state === 'open') resolve(this._ok);
        else if (event.detail.state === 'closed') reject(new ApiError(0, {message: 'The connection closed.'}));
        else return;
        this.removeEventListener('state', onState);
      };
      this.addEventListener('state', onState);
    });
  }

  close() {
    this._wanted = false;
    for (const timer of this._timers) clearTimeout(timer);
    this._timers.clear();
    clearInterval(this._health);
    if (this._ws) {
      const ws = this._ws;
      this._ws = null;
      ws.close(1000, 'bye');
    }
    this._setState('closed');
  }

  // Sends one frame; false when the socket is not open (signaling is then lost, like a packet).
  send(frame) {
    if (!this._ws || this._ws.readyState !== WebSocket.OPEN || this.state !== 'open') return false;
    this._ws.send(JSON.stringify(frame));
    this._lastSentAt = Date.now();
    return true;
  }

  _answerHealth() {
    if (Date.now() - (this._lastSentAt || 0) >= ANSWER_HEALTH_AFTER_MS) {
      this.send({type: 'health.check', client_id: this.connectionId});
    }
  }

  _connect(state) {
    this._setState(state);
    const url = this.url('/api/v2/connect');
    url.protocol = this.baseUrl.protocol === 'https:' ? 'wss:' : 'ws:';
    return new Promise((resolve, reject) => {
      let settled = false;
      const ws = new WebSocket(url);
      this._ws = ws;
      ws.onopen = () => {
        ws.send(JSON.stringify({token: this.token, user_details: {id: this.userId}}));
      };
      ws.onmessage = (message) => {
        this._lastFrameAt = Date.now();
        let frame;
        try {
          frame = JSON.parse(message.data);
        } catch {
          this.log.warn(`Connection(${this.userId}): unreadable frame dropped`);
          return;
        }
        for (const event of Array.isArray(frame) ? frame : [frame]) {
          if (!settled && event.type === 'connection.ok') {
            settled = true;
            this.connectionId = event.connection_id;
            this.me = event.me || null;
            this._ok = event;
            this._attempt = 0;
            this._startHealth();
            this._setState('open');
            resolve(event);
          } else if (!settled && (event.type === 'connection.error' || event.type === 'error')) {
            settled = true;
            const error = new ApiError(event.error?.StatusCode || 401, event.error || event);
            this._wanted = this._wanted && !error.isAuth;
            reject(error);
            if (error.isAuth) this._emit('auth.failed', {error});
            ws.close();
          }
          if (settled && event.type === 'health.check') this._answerHealth();
          this._dispatchEvent(event);
        }
      };
      ws.onclose = (closing) => {
        if (this._ws !== ws) return;
        this._ws = null;
        clearInterval(this._health);
        if (!settled) {
          settled = true;
          const auth = closing.code === 4001 || closing.code === 1008;
          const error = new ApiError(auth ? 401 : 0, {
            message: closing.reason || 'The server closed the event connection.',
          });
          if (auth) {
            this._wanted = false;
            this._emit('auth.failed', {error});
          }
          reject(error);
          if (state === 'connecting' || auth) {
            this._setState('closed');
            return;
          }
        }
        if (this._wanted) this._scheduleReconnect();
        else this._setState('closed');
      };
    });
  }

  _scheduleReconnect() {
    this._setState('reconnecting');
    const delay = BACKOFF_MS[Math.min(this._attempt, BACKOFF_MS.length - 1)];
    this._attempt += 1;
    const timer = setTimeout(async () => {
      this._timers.delete(timer);
      if (!this._wanted) return;
      try {
        await this._connect('reconnecting');
        this.log.info(`Connection(${this.userId}): reconnected as ${this.connectionId}`);
        this._emit('reconnected', {connection_id: this.connectionId});
      } catch (err) {
        if (err.isAuth) this.close();
        // Otherwise onclose has already scheduled the next attempt.
      }
    }, delay);
    this._timers.add(timer);
  }

  _startHealth() {
    clearInterval(this._health);
    this._lastFrameAt = Date.now();
    this._health = setInterval(() => {
      if (Date.now() - this._lastFrameAt > SILENCE_LIMIT_MS && this._ws) {
        this.log.warn(`Connection(${this.userId}): silent for too long, reconnecting`);
        this._ws.close(4000, 'silent');
        return;
      }
      this.send({type: 'health.check', client_id: this.connectionId});
    }, HEALTH_INTERVAL_MS);
  }

  _setState(state) {
    if (state === this.state) return;
    const old = this.state;
    this.state = state;
    this._emit('state', {old, state});
  }

  _dispatchEvent(event) {
    if (!event || typeof event.type !== 'string') return;
    this.dispatchEvent(new CustomEvent(event.type, {detail: event}));
    this.dispatchEvent(new CustomEvent('event', {detail: event}));
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, {detail}));
  }
}
