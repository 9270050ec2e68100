// The console's service worker (scope "/"): rings that reach a person whose console is closed.
//
// The server sends every call.ring to this user's push subscriptions (Web Push, RFC 8030/8291;
// see README "Push notifications"), and call.ring_stopped with the same Topic when the ring is
// over. Here a ring becomes a notification with Accept / Decline; ring_stopped closes it, or
// replaces it with "Missed call". Accept opens (or focuses) the console straight into the call;
// Decline rejects the call from here, without a window, with the credential the page kept for
// this worker when the user chose "Ring me on this device" (pwa.js: IndexedDB, removed on sign-out).
//
// No caching of the console's files: the console needs the server to do anything, and a stale
// copy of it is worse than none.

const DB_NAME = 'appliance';
const STORE = 'kv';
const CREDENTIALS_KEY = 'signin';
const VIBRATE = [400, 200, 400, 200, 400, 1000, 400, 200, 400];
const FETCH_TIMEOUT_MS = 10000;
const LATE_SLACK_MS = 5 * 60 * 1000;

// --- the credential the page left for the worker (pwa.js writes it) ---------------------------

function openDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function readCredentials() {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const request = db.transaction(STORE, 'readonly').objectStore(STORE).get(CREDENTIALS_KEY);
      request.onsuccess = () => resolve(request.result || null);
      request.onerror = () => reject(request.error);
    });
  } finally {
    db.close();
  }
}

async function api(method, path, body) {
  const credentials = await readCredentials();
  if (!credentials || !credentials.token) throw new Error('this device is not signed in');
  const url = new URL(path, self.location.origin);
  url.searchParams.set('api_key', credentials.apiKey);
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
  try {
    const response = await fetch(url, {
      method,
      headers: {Authorization: credentials.token, 'stream-auth-type': 'jwt', 'Content-Type': 'application/json'},
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(`${method} ${url.pathname}: HTTP ${response.status}`);
    return await response.json();
  } finally {
    clearTimeout(timer);
  }
}

// --- notifications ----------------------------------------------------------------------------

// Payload times are integer nanoseconds (as in the API); RFC 3339 text is read too.
function toMs(value) {
  if (typeof value === 'number') return value / 1e6;
  const ms = Date.parse(value || '');
  return Number.isNaN(ms) ? 0 : ms;
}

function callerName(ring) {
  const caller = ring.caller || {};
  return caller.name || caller.id || 'Someone';
}

function customLines(custom) {
  const lines = [];
  for (const [key, value] of Object.entries(custom || {})) {
    if (value === null || value === undefined || value === '' || typeof value === 'object') continue;
    lines.push(`${key.replace(/[_.-]+/g, ' ')}: ${value}`);
  }
  return lines.slice(0, 4).join('\n');
}

function isConsole(client) {
  const path = new URL(client.url).pathname;
  return path === '/' || path === '/index.html';
}

async function consoleWindows() {
  const windows = await self.clients.matchAll({type: 'window', includeUncontrolled: true});
  return windows.filter(isConsole);
}

async function visibleConsole() {
  return (await consoleWindows()).find((client) => client.visibilityState === 'visible') || null;
}

// A ring that arrives while a console window is visible is rung by that page itself; the same
// ring from the page (hidden) and from the push shows one notification (tag = the call).
async function showRing(ring, {evenIfVisible = false} = {}) {
  if (!evenIfVisible && (await visibleConsole())) return;
  // Delivered long after the ring ended (a phone that was off): not worth a ring. The push
  // service drops it at its TTL anyway; the slack is for a server without a real-time clock.
  const expires = toMs(ring.expires_at);
  if (expires && expires + LATE_SLACK_MS < Date.now()) return;
  const shown = await self.registration.getNotifications({tag: ring.call_cid});
  if (shown.some((n) => n.data && n.data.kind === 'ring' && n.data.session_id === ring.session_id)) return;
  const name = callerName(ring);
  await self.registration.showNotification(`${name} is calling`, {
    body: customLines(ring.custom) || (ring.video ? 'Video call' : 'Call'),
    tag: ring.call_cid,
    renotify: true,
    requireInteraction: true,
    vibrate: VIBRATE,
    icon: '/icons/icon-192.png',
    badge: '/icons/badge-96.png',
    timestamp: toMs(ring.created_at) || Date.now(),
    actions: [
      {action: 'accept', title: 'Accept'},
      {action: 'decline', title: 'Decline'},
    ],
    data: {kind: 'ring', call_cid: ring.call_cid, session_id: ring.session_id, caller: ring.caller || {}},
  });
}

async function stopRing(stop) {
  const shown = await self.registration.getNotifications({tag: stop.call_cid});
  const ring = shown.find((n) => n.data && n.data.kind === 'ring');
  for (const notification of shown) {
    if (notification.data && notification.data.kind === 'ring') notification.close();
  }
  if (stop.reason !== 'missed') return;
  if (!ring && (await visibleConsole())) return; // the open page shows its missed calls itself
  const caller = ring ? ring.data.caller : stop.caller || {};
  const name = caller.name || caller.id || 'Someone';
  await self.registration.showNotification(`Missed call from ${name}`, {
    body: 'Open the console to see your missed calls.',
    tag: stop.call_cid,
    renotify: false,
    icon: '/icons/icon-192.png',
    badge: '/icons/badge-96.png',
    data: {kind: 'missed', call_cid: stop.call_cid, session_id: stop.session_id, caller},
  });
}

// --- events -----------------------------------------------------------------------------------

async function onPush(event) {
  let message;
  try {
    message = event.data ? event.data.json() : null;
  } catch {
    message = null;
  }
  if (!message || !message.call_cid) return;
  if (message.type === 'call.ring') await showRing(message);
  else if (message.type === 'call.ring_stopped') await stopRing(message);
}

// The console's URL for a call: "#accept=<cid>" answers it, "#missed" shows the missed calls.
function consoleUrl(hash) {
  return new URL(`/#${hash}`, self.location.origin).href;
}

async function openConsole(hash, message) {
  const windows = await consoleWindows();
  const existing = windows.find((client) => client.visibilityState === 'visible') || windows[0];
  if (existing) {
    existing.postMessage(message);
    try {
      await existing.focus();
    } catch {
      // Focusing needs the notification click's user activation; the message got there anyway.
    }
    return existing;
  }
  return self.clients.openWindow(consoleUrl(hash));
}

async function onNotificationClick(event) {
  const notification = event.notification;
  const data = notification.data || {};
  notification.close();
  const cid = data.call_cid;
  if (!cid) return openConsole('', {type: 'open'});
  if (data.kind === 'missed') return openConsole('missed', {type: 'missed', cid});
  if (event.action === 'decline') {
    const [type, ...rest] = cid.split(':');
    const path = `/api/v2/video/call/${encodeURIComponent(type)}/${encodeURIComponent(rest.join(':'))}/reject`;
    try {
      await api('POST', path, {reason: 'decline'});
    } catch (err) {
      // The ring goes on: say so, so that the person can still answer or decline in the console.
      await self.registration.showNotification(`Could not decline the call from ${callerName(data)}`, {
        body: `${err.message}. Open the console to answer or decline.`,
        tag: cid,
        data: {kind: 'ring', call_cid: cid, session_id: data.session_id, caller: data.caller},
        actions: [{action: 'accept', title: 'Accept'}],
      });
    }
    return undefined;
  }
  // Accept, or a click on the notification itself: into the call.
  return openConsole(`accept=${encodeURIComponent(cid)}`, {type: 'accept', cid});
}

// Exposed for the browser tests, which dispatch these with synthetic events (a test cannot click
// a system notification); the listeners below are the real entry points.
self.applianceWorker = {onPush, onNotificationClick, showRing, stopRing, readCredentials};

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));
self.addEventListener('push', (event) => event.waitUntil(onPush(event)));
self.addEventListener('notificationclick', (event) => event.waitUntil(onNotificationClick(event)));
self.addEventListener('message', (event) => {
  // The page rings itself while visible; when it is hidden it asks for the notification here.
  const message = event.data || {};
  if (message.type === 'ring' && message.ring) event.waitUntil(showRing(message.ring, {evenIfVisible: true}));
  else if (message.type === 'ring_stopped' && message.stop) event.waitUntil(stopRing(message.stop));
});
self.addEventListener('pushsubscriptionchange', (event) => {
  // The push service replaced the subscription: register the new one (the old one will 404/410
  // at the server and be removed there).
  event.waitUntil((async () => {
    const subscription = event.newSubscription
      || (await self.registration.pushManager.subscribe(event.oldSubscription.options));
    const json = subscription.toJSON();
    await api('POST', '/api/v2/devices', {
      id: json.endpoint,
      push_provider: 'web_push',
      web_push_subscription: {endpoint: json.endpoint, keys: json.keys},
    });
  })());
});
