// Stream's JavaScript client SDK (@stream-io/video-client) against a real appliance server.
//
// Run by tests/server/test_stream_js_sdk.py, which starts `appliance serve` on loopback with the
// users below and passes APPLIANCE_URL, APPLIANCE_API_KEY, APPLIANCE_API_SECRET, APPLIANCE_RUN
// (a suffix for call ids), APPLIANCE_DEFAULT_PORT and APPLIANCE_IDLE_SECONDS. The scenarios run
// concurrently in this one process (the idle socket sets the pace); every frame each SDK client
// sends and receives, every WebSocket it opens and every HTTP answer it gets is recorded, and the
// checks count those, not what the SDK's state happened to show. Prints one JSON line of
// figures, exits 1 on the first failed check.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import WebSocket from 'ws';
import { StreamVideoClient } from '@stream-io/video-client';

const BASE = process.env.APPLIANCE_URL;
const API_KEY = process.env.APPLIANCE_API_KEY;
const SECRET = process.env.APPLIANCE_API_SECRET;
const RUN = process.env.APPLIANCE_RUN ?? String(Date.now());
const DEFAULT_PORT = process.env.APPLIANCE_DEFAULT_PORT;
const IDLE_SECONDS = Number(process.env.APPLIANCE_IDLE_SECONDS ?? 90);
const WAIT_MS = 30_000;

const b64url = (value) => Buffer.from(value).toString('base64url');

function jwt(claims) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

const now = () => Math.floor(Date.now() / 1000);
const userToken = (id, ttl = 3600) => jwt({ user_id: id, iat: now(), exp: now() + ttl });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A `ws` WebSocket that records what crosses the wire for one SDK client.
function recordingSocket(rec) {
  return class RecordingSocket extends WebSocket {
    constructor(url, ...rest) {
      super(url, ...rest);
      rec.opened.push(url);
      this.on('message', (data) => {
        let frame = null;
        try {
          frame = JSON.parse(String(data));
        } catch {
          frame = null;
        }
        rec.received.push({ at: Date.now(), frame });
      });
      this.on('close', (code) => rec.closes.push(code));
    }

    send(data, ...rest) {
      rec.sent.push({ at: Date.now(), text: String(data) });
      return super.send(data, ...rest);
    }
  };
}

function makeClient(label) {
  const rec = { label, opened: [], received: [], sent: [], closes: [], http: [] };
  const client = new StreamVideoClient(API_KEY, {
    baseURL: `${BASE}/api/v2/video`,
    WebSocketImpl: recordingSocket(rec),
    // The SDK asks a CDN for a location hint before a join; there is no internet here.
    locationHintUrl: `${BASE}/healthz`,
    logLevel: 'error',
  });
  const axios = client.streamClient.axiosInstance;
  axios.interceptors.response.use(
    (r) => {
      rec.http.push({ method: r.config.method, url: r.config.url, status: r.status });
      return r;
    },
    (e) => {
      rec.http.push({
        method: e.config?.method,
        url: e.config?.url,
        status: e.response?.status ?? 0,
        body: e.response?.data,
      });
      throw e;
    },
  );
  return { client, rec };
}

function waitFor(client, type, predicate = () => true, ms = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} within ${ms} ms`));
    }, ms);
    const off = client.on(type, (event) => {
      if (predicate(event)) {
        clearTimeout(timer);
        off();
        resolve(event);
      }
    });
  });
}

async function until(what, check, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const value = check();
    if (value) return value;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

const framesOf = (rec, type) => rec.received.filter((r) => r.frame && r.frame.type === type);
const failures = (rec, fragment) =>
  rec.http.filter((h) => h.status >= 400 && (!fragment || String(h.url).includes(fragment)));
const validDate = (value) => value instanceof Date && !Number.isNaN(value.getTime());

async function serverPost(path, body) {
  const url = `${BASE}/api/v2/video${path}?api_key=${API_KEY}`;
  const r = await fetch(url, {
    method: 'POST',
    headers: { authorization: jwt({}), 'stream-auth-type': 'jwt', 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  assert.equal(r.status, 200, `${path}: ${text}`);
  return JSON.parse(text);
}

const figures = {};
const clients = [];

async function connect(label, user, tokenOrProvider) {
  const c = makeClient(label);
  clients.push(c);
  await c.client.connectUser(user, tokenOrProvider ?? userToken(user.id));
  return c;
}

// -- the default port is one the SDK leaves alone ------------------------------------------
function defaultPort() {
  const probe = (port) =>
    new StreamVideoClient(API_KEY, { baseURL: `http://127.0.0.1:${port}/api/v2/video` })
      .streamClient.wsBaseURL;
  // The rewrite this guards against (Stream's own development setup):
  assert.equal(probe(3030), 'ws://127.0.0.1:8800/api/v2/video');
  assert.equal(probe(DEFAULT_PORT), `ws://127.0.0.1:${DEFAULT_PORT}/api/v2/video`);
}

// -- create, update, get, query members: dates parse ---------------------------------------
async function callData(alice) {
  const call = alice.client.call('default', `data-${RUN}`);
  await call.getOrCreate({
    data: {
      members: [{ user_id: 'alice' }, { user_id: 'bob', custom: { shift: 'night' } }, { user_id: 'carol' }],
      custom: { room: 'A-12', floor: 2 },
    },
  });
  await call.update({ custom: { room: 'A-12', floor: 3 } });
  const got = await call.get();
  assert.equal(got.call.custom.floor, 3);
  assert.match(got.call.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$/);
  assert.ok(validDate(call.state.createdAt), `createdAt ${call.state.createdAt}`);
  assert.ok(validDate(call.state.updatedAt), `updatedAt ${call.state.updatedAt}`);
  assert.ok(call.state.updatedAt >= call.state.createdAt);
  assert.equal(call.state.custom.floor, 3);
  const members = await call.queryMembers({
    filter_conditions: { user_id: { $in: ['bob', 'carol'] } },
    sort: [{ field: 'user_id', direction: -1 }],
    limit: 1,
  });
  assert.deepEqual(members.members.map((m) => m.user_id), ['carol']);
  assert.ok(validDate(new Date(members.members[0].created_at)));
  const custom = await call.queryMembers({ filter_conditions: { 'custom.shift': 'night' } });
  assert.deepEqual(custom.members.map((m) => m.user_id), ['bob']);
  figures.call_created_at = got.call.created_at;
}

// -- a ring accepted by a second client ----------------------------------------------------
async function ringAccepted(alice, bob) {
  const id = `ring-ok-${RUN}`;
  const cid = `default:${id}`;
  const rang = waitFor(bob.client, 'call.ring', (e) => e.call_cid === cid);
  const call = alice.client.call('default', id);
  await call.getOrCreate({ ring: true, data: { members: [{ user_id: 'alice' }, { user_id: 'bob' }] } });
  const ring = await rang;
  assert.equal(ring.user.id, 'alice');
  const incoming = await until('the ringing call in bob\'s state', () =>
    bob.client.state.calls.find((c) => c.cid === cid && c.ringing),
  );
  const accepted = waitFor(alice.client, 'call.accepted', (e) => e.call_cid === cid);
  await incoming.accept();
  const event = await accepted;
  assert.equal(event.user.id, 'bob');
  assert.ok(validDate(new Date(call.state.session.accepted_by.bob)));
  // The caller's SDK joins an accepted call by itself: that join is refused, clearly.
  await until('the caller SDK\'s join attempt', () => failures(alice.rec, `/call/default/${id}/join`).length);
  const refused = failures(alice.rec, `/call/default/${id}/join`)[0];
  assert.equal(refused.status, 501);
  assert.equal(refused.body.unrecoverable, true);
  assert.match(refused.body.message, /media server \(SFU\)/);
  await call.endCall();
}

// -- a ring rejected with the SDK's own reason string --------------------------------------
async function ringRejected(alice, carol) {
  const id = `ring-no-${RUN}`;
  const cid = `default:${id}`;
  const rang = waitFor(carol.client, 'call.ring', (e) => e.call_cid === cid);
  const call = alice.client.call('default', id);
  await call.getOrCreate({ ring: true, data: { members: [{ user_id: 'alice' }, { user_id: 'carol' }] } });
  await rang;
  const incoming = await until('the ringing call in carol\'s state', () =>
    carol.client.state.calls.find((c) => c.cid === cid && c.ringing),
  );
  const rejected = waitFor(alice.client, 'call.rejected', (e) => e.call_cid === cid);
  const ended = waitFor(alice.client, 'call.ended', (e) => e.call_cid === cid);
  await incoming.leave({ reject: true, reason: 'in a care round' });
  const event = await rejected;
  assert.equal(event.user.id, 'carol');
  assert.equal(event.reason, 'in a care round');
  assert.equal((await ended).reason, 'rejected');
  // The caller's SDK then cancels the ring that already ended: not an error.
  await sleep(1000);
  assert.deepEqual(failures(alice.rec, id).concat(failures(carol.rec, id)), []);
}

// -- a ring nobody answers: missed for everyone, and none of the SDK's requests fail --------
async function ringMissed(alice, dave) {
  const id = `ring-miss-${RUN}`;
  const cid = `default:${id}`;
  const rang = waitFor(dave.client, 'call.ring', (e) => e.call_cid === cid);
  const call = alice.client.call('default', id);
  const ended = waitFor(alice.client, 'call.ended', (e) => e.call_cid === cid, 60_000);
  const missed = waitFor(dave.client, 'call.missed', (e) => e.call_cid === cid, 60_000);
  await call.getOrCreate({
    ring: true,
    data: {
      members: [{ user_id: 'alice' }, { user_id: 'dave' }],
      // Past the 15 s after which the caller's SDK polls ring_state.
      settings_override: { ring: { auto_cancel_timeout_ms: 22_000, incoming_call_timeout_ms: 22_000 } },
    },
  });
  await rang;
  const sessionId = call.state.session.id;
  assert.equal((await missed).user.id, 'dave');
  assert.equal((await ended).reason, 'timeout');
  await sleep(2000); // the SDKs' own timers fire around now: none of their requests may fail
  const state = await alice.client.call('default', id).getRingState(sessionId);
  assert.deepEqual(Object.keys(state.missed_by), ['dave']);
  assert.deepEqual(state.accepted_by, {});
  assert.ok(validDate(new Date(state.session_ended_at)));
  const polls = alice.rec.http.filter((h) => String(h.url).includes(`/call/default/${id}/ring_state`));
  figures.ring_state_polls = polls.length;
  assert.ok(polls.length >= 2, `the caller's SDK polled ring_state ${polls.length} times`);
  assert.deepEqual(failures(alice.rec, id).concat(failures(dave.rec, id)), []);
}

// -- a socket idle for longer than every timer still hears an event, without reconnecting ----
async function idleSocket(erin) {
  const id = `idle-${RUN}`;
  // The idle window starts once the creation's own event has arrived: the server answers the
  // request and sends call.created on the socket at the same time, in either order.
  const created = waitFor(erin.client, 'call.created', (e) => e.call_cid === `default:${id}`);
  await erin.client.call('default', id).getOrCreate({ data: { members: [{ user_id: 'erin' }] } });
  await created;
  const since = Date.now();
  const startFrames = erin.rec.received.length;
  const heard = waitFor(erin.client, 'custom', (e) => e.call_cid === `default:${id}`, (IDLE_SECONDS + 30) * 1000);
  await sleep(IDLE_SECONDS * 1000);
  await serverPost(`/call/default/${id}/event`, { custom: { type: 'still-there' }, user_id: 'erin' });
  const event = await heard;
  assert.equal(event.custom.type, 'still-there');
  const pings = erin.rec.sent.filter((s) => s.at >= since && s.text.startsWith('[{"type":"health.check"'));
  const during = erin.rec.received.slice(startFrames).filter((r) => r.frame?.type !== 'custom');
  // The SDK pings 25 s after the last health.check it heard; we answer each ping and send none
  // of our own, so its timer runs: one ping every ~25 s and nothing else on the socket.
  assert.ok(pings.length >= Math.floor(IDLE_SECONDS / 26), `${pings.length} pings in ${IDLE_SECONDS} s`);
  assert.ok(during.every((r) => r.frame?.type === 'health.check'), JSON.stringify(during.map((r) => r.frame?.type)));
  assert.ok(during.length >= pings.length, `${during.length} answers to ${pings.length} pings`);
  assert.equal(erin.rec.opened.length, 1, 'the idle socket reconnected');
  assert.deepEqual(erin.rec.closes, []);
  figures.idle_seconds = IDLE_SECONDS;
  figures.idle_pings = pings.length;
}

// -- an expired token is refreshed through tokenProvider -----------------------------------
async function tokenRefresh() {
  let calls = 0;
  // The first token lives 3 s (the server's leeway is 1 s); later ones an hour.
  const provider = async () => {
    calls += 1;
    return userToken('frank', calls === 1 ? 3 : 3600);
  };
  const frank = await connect('frank', { id: 'frank' }, provider);
  await until('a second connection.ok', () => framesOf(frank.rec, 'connection.ok').length >= 2, 30_000);
  assert.ok(calls >= 2, `tokenProvider called ${calls} times`);
  const refusal = framesOf(frank.rec, 'connection.error')[0]?.frame;
  assert.ok(refusal, 'no connection.error before the reconnect');
  assert.equal(refusal.error.code, 40);
  assert.equal(refusal.code, undefined, 'connection.error has a top-level code');
  assert.notEqual(frank.rec.closes[0], 1000);
  const calls0 = calls;
  const list = await frank.client.queryCalls({ filter_conditions: {}, limit: 5 });
  assert.ok(Array.isArray(list.calls));
  assert.equal(calls, calls0);
  figures.token_provider_calls = calls;

  // A token that is already expired at connect: connection.error code 40 → tokenProvider.
  let gCalls = 0;
  const grace = await connect('grace', { id: 'grace' }, async () => {
    gCalls += 1;
    return gCalls === 1 ? jwt({ user_id: 'grace', iat: now() - 60, exp: now() - 30 }) : userToken('grace');
  });
  assert.ok(gCalls >= 2);
  assert.equal(framesOf(grace.rec, 'connection.ok').length, 1);
  await grace.client.queryCalls({ filter_conditions: {}, limit: 1 });
}

async function main() {
  defaultPort();
  const alice = await connect('alice', {
    id: 'alice',
    name: 'Alice Caller',
    image: 'https://example.org/alice.png',
    custom: { ward: 'B' },
  });
  const [bob, carol, dave, erin] = await Promise.all(
    ['bob', 'carol', 'dave', 'erin'].map((id) => connect(id, { id })),
  );
  assert.equal(alice.rec.opened.length, 1);
  assert.match(alice.rec.opened[0], /\/api\/v2\/video\/connect\?/);
  await Promise.all([
    idleSocket(erin),
    (async () => {
      await callData(alice);
      await ringAccepted(alice, bob);
      await ringRejected(alice, carol);
      await ringMissed(alice, dave);
      await tokenRefresh();
    })(),
  ]);
  figures.frames_sent = clients.reduce((n, c) => n + c.rec.sent.length, 0);
  figures.frames_received = clients.reduce((n, c) => n + c.rec.received.length, 0);
  figures.http_requests = clients.reduce((n, c) => n + c.rec.http.length, 0);
  await Promise.all(clients.map((c) => c.client.disconnectUser()));
  console.log(JSON.stringify({ ok: true, ...figures }));
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error('FAILED:', err?.stack ?? err);
    for (const c of clients) {
      console.error(
        `${c.rec.label}: opened ${c.rec.opened.length}, closes ${JSON.stringify(c.rec.closes)}, ` +
          `http failures ${JSON.stringify(failures(c.rec))}`,
      );
    }
    process.exit(1);
  },
);
