// Small DOM and formatting helpers shared by the console's views.

// el('button', {class: 'primary', onclick: fn}, 'Call') → <button class="primary">Call</button>
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Server timestamps are integer nanoseconds since the epoch.
export function nsToDate(ns) {
  return ns ? new Date(Number(ns) / 1e6) : null;
}

export function displayName(user, fallback = 'someone') {
  if (!user) return fallback;
  return user.name || user.id || fallback;
}

export function formatWhen(date, now = new Date()) {
  if (!date) return '';
  const sameDay = date.toDateString() === now.toDateString();
  const time = date.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'});
  if (sameDay) return time;
  return `${date.toLocaleDateString([], {day: 'numeric', month: 'short'})} ${time}`;
}

export function formatDuration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

// A call's custom data as label/value pairs a person can read (objects flattened one level).
export function customEntries(custom) {
  const out = [];
  for (const [key, value] of Object.entries(custom || {})) {
    if (value === null || value === undefined || value === '') continue;
    const label = key.replace(/[_.-]+/g, ' ');
    if (typeof value === 'object' && !Array.isArray(value)) {
      for (const [inner, v] of Object.entries(value)) {
        if (v !== null && typeof v !== 'object') out.push([`${label} ${inner.replace(/[_.-]+/g, ' ')}`, String(v)]);
      }
    } else {
      out.push([label, Array.isArray(value) ? value.join(', ') : String(value)]);
    }
  }
  return out;
}

// What is under the ring cards and the call view takes no clicks, focus or keys (`inert`):
// under a ring card everything but the cards, under the call view everything but the call
// and the cards.
export function updateInert(doc = document) {
  const app = doc.querySelector('#app');
  const rings = doc.querySelector('#rings');
  const incall = doc.querySelector('#incall');
  if (!app || !rings || !incall) return;
  const ringing = Boolean(rings.querySelector('.ring-card'));
  const inCall = !incall.hidden;
  for (const child of app.children) {
    if (child === rings) continue;
    child.inert = child === incall ? ringing && inCall : ringing || inCall;
  }
  for (const child of doc.body.children) {
    if (child !== app && !['SCRIPT', 'TEMPLATE'].includes(child.tagName)) child.inert = ringing || inCall;
  }
}
