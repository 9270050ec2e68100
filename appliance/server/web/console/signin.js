// Sign-in: the link `appliance token --link` prints (/?api_key=…&token=…) is read once, kept in
// sessionStorage for this tab only, and removed from the address bar (it is a credential).

import {decodeToken} from './call.js';

const KEY = 'appliance.signin';
const REASON_KEY = 'appliance.signout-reason';
// A Pi has no real-time clock: accept a little skew before calling a token expired.
const SKEW_S = 120;

export function credentialsFromUrl(text, base = location.href) {
  let url;
  try {
    url = new URL(String(text).trim(), base);
  } catch {
    return null;
  }
  const apiKey = url.searchParams.get('api_key');
  const token = url.searchParams.get('token');
  return apiKey && token ? {apiKey, token} : null;
}

// Credentials from the address bar (then stored, and the URL cleaned) or from this tab's storage.
export function loadCredentials() {
  const fromLink = credentialsFromUrl(location.href);
  if (fromLink) {
    saveCredentials(fromLink);
    history.replaceState(null, '', location.pathname + location.hash);
    return fromLink;
  }
  try {
    const stored = JSON.parse(sessionStorage.getItem(KEY) || 'null');
    return stored && stored.apiKey && stored.token ? stored : null;
  } catch {
    return null;
  }
}

export function saveCredentials(credentials) {
  sessionStorage.removeItem(REASON_KEY);
  sessionStorage.setItem(KEY, JSON.stringify(credentials));
}

// Forget the credentials; the reason is kept for the tab, so that a reload (or a sign-out that
// happened while the tab was in the background) still says why the sign-in screen is shown.
export function clearCredentials(reason = '') {
  sessionStorage.removeItem(KEY);
  if (reason) sessionStorage.setItem(REASON_KEY, reason);
}

// The reason of the last sign-out in this tab, once.
export function takeSignOutReason() {
  const reason = sessionStorage.getItem(REASON_KEY) || '';
  sessionStorage.removeItem(REASON_KEY);
  return reason;
}

// Why these credentials cannot work, before asking the server; null when they may.
export function credentialsProblem(credentials, nowS = Date.now() / 1000) {
  let claims;
  try {
    claims = decodeToken(credentials.token);
  } catch (err) {
    return err.message;
  }
  if (!claims.user_id) return 'This link is not for a person (its token names no user).';
  if (typeof claims.exp === 'number' && claims.exp + SKEW_S < nowS) {
    return 'Your sign-in link has expired. Ask for a new one.';
  }
  return null;
}

export class SignInScreen {
  constructor(root, onCredentials) {
    this.root = root;
    this.reason = root.querySelector('#signin-reason');
    this.input = root.querySelector('#signin-link');
    root.querySelector('#signin-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const credentials = credentialsFromUrl(this.input.value);
      if (!credentials) {
        this.show('That is not a sign-in link: it needs api_key and token.');
        return;
      }
      onCredentials(credentials);
    });
  }

  show(reason = '') {
    this.reason.textContent = reason;
    this.reason.hidden = !reason;
    this.root.hidden = false;
    this.input.value = '';
    this.input.focus();
  }

  hide() {
    this.root.hidden = true;
  }
}
