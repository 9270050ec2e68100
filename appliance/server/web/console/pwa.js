// "Ring me on this device": the console as an installable app (manifest.webmanifest, sw.js)
// that rings when it is closed, through Web Push.
//
// One step, on a click (browsers allow sound, notifications and push only after a user gesture):
//   (a) unlock the ringtone for this page,
//   (b) ask for permission to show notifications,
//   (c) subscribe to push with the server's VAPID key (GET /api/v2/app) and register the
//       subscription with the server (POST /api/v2/devices),
// and show what each step gave. Choosing it also remembers the sign-in on this device: the token
// is kept in localStorage (so the console opens signed in) and in IndexedDB (so the service worker
// can decline a call without a window). It lives as long as the sign-in link's token does (its
// `exp`; links without one live until revoked), ends when the user signs out here (which also
// removes the subscription from the server), and ends everywhere when an administrator revokes the
// user's tokens (the server then refuses the token and drops the subscriptions made before).
//
// iOS and iPadOS (16.4 and later) give push only to the app added to the Home Screen, never to a
// Safari tab; the page says so there.

const DB_NAME = 'appliance';
const STORE = 'kv';
const CREDENTIALS_KEY = 'signin';
const REMEMBERED_KEY = 'appliance.remembered';
const ENABLED_KEY = 'appliance.ring-device'; // {user, endpoint}: this device rings for user

// --- where the credential lives ---------------------------------------------------------------

function openDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function dbWrite(mutate) {
  const db = await openDb();
  try {
    await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, 'readwrite');
      mutate(tx.objectStore(STORE));
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

function readJson(key) {
  try {
    return JSON.parse(localStorage.getItem(key) || 'null');
  } catch {
    return null;
  }
}

// The remembered sign-in ({apiKey, token}), if this device was chosen to ring.
export function rememberedCredentials() {
  const stored = readJson(REMEMBERED_KEY);
  return stored && stored.apiKey && stored.token ? stored : null;
}

async function remember(credentials) {
  localStorage.setItem(REMEMBERED_KEY, JSON.stringify({apiKey: credentials.apiKey, token: credentials.token}));
  await dbWrite((store) => store.put({apiKey: credentials.apiKey, token: credentials.token}, CREDENTIALS_KEY));
}

// Forget the sign-in on this device (page and worker). Safe to call when nothing is kept.
export async function forgetCredentials() {
  localStorage.removeItem(REMEMBERED_KEY);
  localStorage.removeItem(ENABLED_KEY);
  try {
    await dbWrite((store) => store.delete(CREDENTIALS_KEY));
  } catch {
    // No IndexedDB (a private window): nothing was kept there.
  }
}

// --- what this browser can do -----------------------------------------------------------------

function isAppleMobile() {
  const ua = navigator.userAgent || '';
  return /iPhone|iPad|iPod/.test(ua) || (ua.includes('Macintosh') && navigator.maxTouchPoints > 1);
}

function isStandalone() {
  return window.matchMedia?.('(display-mode: standalone)').matches || navigator.standalone === true;
}

// null when push can work here; otherwise why not, in words for the person at the screen.
export function pushProblem() {
  if (!window.isSecureContext) {
    return 'This page is not served over HTTPS, so the browser offers no background rings here.';
  }
  if (isAppleMobile() && !isStandalone()) {
    return 'On iPhone and iPad (iOS 16.4 or later) only the installed app can ring when it is closed: '
      + 'tap Share, then "Add to Home Screen", open the console from the Home Screen and press '
      + '"Ring me on this device" there.';
  }
  if (!('serviceWorker' in navigator) || !('PushManager' in window) || !('Notification' in window)) {
    return 'This browser does not offer push notifications.';
  }
  return null;
}

export function registerWorker() {
  if (!window.isSecureContext || !('serviceWorker' in navigator)) return null;
  return navigator.serviceWorker.register('/sw.js', {scope: '/'}).catch((err) => {
    console.warn(`service worker: ${err.message}`);
    return null;
  });
}

function keyBytes(base64url) {
  const text = atob(base64url.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (base64url.length % 4)) % 4));
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

function sameKey(a, b) {
  if (!a || !b) return false;
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

function until(exp) {
  if (typeof exp !== 'number') return 'until you sign out here or an administrator revokes it';
  const date = new Date(exp * 1000);
  return `until ${date.toLocaleString([], {dateStyle: 'medium', timeStyle: 'short'})}, or until you sign out here`;
}

// --- the "Ring me on this device" panel -------------------------------------------------------

export class DeviceRinging extends EventTarget {
  // root: the #ring-setup section; ringtone: the page's Ringtone.
  constructor({root, ringtone}) {
    super();
    this.root = root;
    this.ringtone = ringtone;
    this.button = root.querySelector('#ring-setup-enable');
    this.steps = root.querySelector('#ring-setup-steps');
    this.summary = root.querySelector('#ring-setup-summary');
    this.stopButton = root.querySelector('#ring-setup-disable');
    this.connection = null;
    this.credentials = null;
    this.enabled = false;
    this.button.addEventListener('click', () => this.enable());
    this.stopButton.addEventListener('click', () => this.disable());
  }

  // After sign-in: show the first-run state unless this device already rings for this user.
  async attach(connection, credentials) {
    this.connection = connection;
    this.credentials = credentials;
    const problem = pushProblem();
    const mine = readJson(ENABLED_KEY);
    let subscription = null;
    if (!problem && mine && mine.user === connection.userId && Notification.permission === 'granted') {
      const registration = await navigator.serviceWorker.ready;
      subscription = await registration.pushManager.getSubscription();
    }
    if (subscription && subscription.endpoint === mine.endpoint) {
      // Keep the worker's copy of the credential in step with the page's (a new link).
      await remember(credentials);
      this._show({enabled: true, steps: []});
      return;
    }
    if (mine) localStorage.removeItem(ENABLED_KEY);
    this._show({enabled: false, steps: problem ? [['info', problem]] : []});
  }

  detach() {
    this.connection = null;
  }

  // The click: every step in order, each shown with its result.
  async enable() {
    const connection = this.connection;
    if (!connection) return;
    const steps = [];
    // (a) Sound, synchronously inside the gesture.
    this.ringtone.unlock();
    steps.push(this.ringtone.allowed || this.ringtone.context
      ? ['ok', 'The ringtone is on for this page.']
      : ['fail', 'This browser refused to play sound.']);
    const problem = pushProblem();
    if (problem) {
      steps.push(['fail', problem]);
      steps.push(['info', 'Until then, calls ring only while this page is open.']);
      this._show({enabled: false, steps, soundOnly: true});
      return;
    }
    this._show({enabled: false, steps: [...steps, ['wait', 'Asking for permission to show notifications…']]});
    // (b) Notifications.
    let permission = Notification.permission;
    if (permission !== 'granted') {
      try {
        permission = await Notification.requestPermission();
      } catch {
        permission = Notification.permission;
      }
    }
    if (permission !== 'granted') {
      steps.push(['fail', permission === 'denied'
        ? 'Notifications are blocked for this site. Allow them in the browser\'s site settings, then press the button again.'
        : 'Notifications were not allowed. Press the button again and choose "Allow".']);
      this._show({enabled: false, steps});
      return;
    }
    steps.push(['ok', 'Notifications are allowed.']);
    this._show({enabled: false, steps: [...steps, ['wait', 'Registering this device for rings…']]});
    // (c) Push.
    try {
      const endpoint = await this._subscribe(connection);
      await remember(this.credentials);
      localStorage.setItem(ENABLED_KEY, JSON.stringify({user: connection.userId, endpoint}));
      steps.push(['ok', `This device rings for ${connection.userId} even when the console is closed. `
        + `It stays signed in ${until(connection.claims.exp)}.`]);
      this._show({enabled: true, steps});
      this.dispatchEvent(new Event('enabled'));
    } catch (err) {
      steps.push(['fail', `This device could not be registered for rings: ${err.message}`]);
      this._show({enabled: false, steps});
    }
  }

  async _subscribe(connection) {
    const app = await connection.get('/api/v2/app');
    const key = app?.app?.web_push?.vapid_public_key;
    if (!key) throw new Error('the server offers no push key');
    const registration = await navigator.serviceWorker.ready;
    const applicationServerKey = keyBytes(key);
    let subscription = await registration.pushManager.getSubscription();
    if (subscription && !sameKey(subscription.options?.applicationServerKey, applicationServerKey)) {
      // Made for another server's key (the server's database was replaced): start again.
      await subscription.unsubscribe();
      subscription = null;
    }
    if (!subscription) {
      subscription = await registration.pushManager.subscribe({userVisibleOnly: true, applicationServerKey});
    }
    const json = subscription.toJSON();
    await connection.post('/api/v2/devices', {
      id: json.endpoint,
      push_provider: 'web_push',
      web_push_subscription: {endpoint: json.endpoint, keys: json.keys},
    });
    return json.endpoint;
  }

  // "Stop ringing on this device", and sign-out: remove the subscription here and at the server
  // (while the token still works), then forget the credential.
  async disable({signingOut = false} = {}) {
    const connection = this.connection;
    const mine = readJson(ENABLED_KEY);
    let subscription = null;
    if (!pushProblem()) {
      try {
        const registration = await navigator.serviceWorker.getRegistration('/');
        subscription = registration ? await registration.pushManager.getSubscription() : null;
      } catch {
        subscription = null;
      }
    }
    const endpoint = subscription?.endpoint || mine?.endpoint;
    if (connection && endpoint) {
      try {
        await connection.request('DELETE', '/api/v2/devices', {query: {id: endpoint}});
      } catch (err) {
        console.warn(`removing this device's subscription: ${err.message}`);
      }
    }
    try {
      await subscription?.unsubscribe();
    } catch {
      // Already gone at the push service.
    }
    await forgetCredentials();
    if (signingOut) return;
    this._show({enabled: false, steps: [['info', 'This device no longer rings when the console is closed.']]});
    this.dispatchEvent(new Event('disabled'));
  }

  _show({enabled, steps, soundOnly = false}) {
    this.enabled = enabled;
    this.root.dataset.state = enabled ? 'enabled' : soundOnly ? 'sound-only' : 'off';
    this.root.classList.toggle('first-run', !enabled && !soundOnly);
    this.summary.textContent = enabled
      ? 'This device rings for you, even when the console is closed.'
      : soundOnly
        ? 'Calls ring only while this page is open.'
        : 'This device does not ring yet when the console is closed.';
    this.button.hidden = enabled;
    this.stopButton.hidden = !enabled;
    this.steps.replaceChildren(...steps.map(([kind, text]) => {
      const item = document.createElement('li');
      item.dataset.kind = kind;
      item.textContent = text;
      return item;
    }));
    this.steps.hidden = steps.length === 0;
    this.dispatchEvent(new Event('change'));
  }
}

// --- rings while the page is hidden, and the worker's requests --------------------------------

// The notification for a ring that reaches an open but hidden page over the WebSocket (the push
// for it may come later, earlier or never: the worker keeps one notification per call).
export async function notifyHidden(message) {
  if (document.visibilityState !== 'hidden' || !('Notification' in window)) return;
  if (Notification.permission !== 'granted' || !navigator.serviceWorker?.controller) return;
  navigator.serviceWorker.controller.postMessage(message);
}

// Close a ring's notification when the page saw the ring end (any visibility).
export function tellWorker(message) {
  navigator.serviceWorker?.controller?.postMessage(message);
}

// The console's part of a notification click: "#accept=<cid>" in the address (a new window) or a
// message (a window that was open). onAccept(cid) answers; onMissed() shows the missed calls.
export function listenToWorker({onAccept, onMissed}) {
  const take = (message) => {
    if (message?.type === 'accept' && message.cid) onAccept(message.cid);
    else if (message?.type === 'missed') onMissed();
  };
  navigator.serviceWorker?.addEventListener('message', (event) => take(event.data));
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.has('accept')) {
    history.replaceState(null, '', location.pathname);
    return {type: 'accept', cid: hash.get('accept')};
  }
  if (location.hash === '#missed') return {type: 'missed'};
  return null;
}
