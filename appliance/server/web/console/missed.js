// Missed calls, one entry per missed ring (a door that rings three times while nobody answers
// is three entries), with a count badge until the user opens the list.
//
// The server keeps a call's latest session only, so the page remembers the rings it saw end
// unanswered, and adds those the server reports missed (rings while no tab was open), in this
// browser's localStorage per user. "Seen" is kept there too: a reload does not badge again.

import {outcome} from './history.js';
import {customEntries, displayName, el, formatWhen} from './view.js';

// Why a ring card went away that means nobody here answered it.
const MISSED_REASONS = new Set(['missed', 'cancelled', 'ended']);

export const MISSED_LIMIT = 50;

function storageKey(kind, me) {
  return `appliance.${kind}.${me}`;
}

function readJson(key, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(key) || 'null');
    return value ?? fallback;
  } catch {
    return fallback;
  }
}

export class MissedCalls {
  // root: the <details> holding the list; badge: the count shown on its summary.
  constructor({root, list, badge, empty, me}) {
    this.root = root;
    this.list = list;
    this.badge = badge;
    this.empty = empty;
    this.me = null;
    this.entries = []; // [{key, cid, at (ms), caller, custom}], newest first
    this.seenAt = 0;
    root.addEventListener('toggle', () => {
      if (root.open) this.markSeen();
    });
    this.setUser(me);
  }

  setUser(me) {
    if (me === this.me) return;
    this.me = me;
    this.entries = readJson(storageKey('missed', me), []).filter((e) => e && e.key && e.cid);
    this.seenAt = Number(readJson(storageKey('missed-seen', me), 0)) || 0;
    this.render();
  }

  get unseen() {
    return this.entries.filter((e) => e.at > this.seenAt).length;
  }

  // One missed ring: key is "cid/session id", at a time in ms.
  add({key, cid, at, caller, custom}) {
    if (!this.me || this.entries.some((e) => e.key === key)) return false;
    this.entries.push({key, cid, at: at || Date.now(), caller: caller || '', custom: custom || {}});
    this.entries.sort((a, b) => b.at - a.at);
    this.entries.length = Math.min(this.entries.length, MISSED_LIMIT);
    this._save();
    this.render();
    return true;
  }

  // A ring card went away (Rings 'removed' detail).
  ringEnded({direction, reason, card}) {
    if (direction !== 'in' || !MISSED_REASONS.has(reason) || !card) return;
    this.add({
      key: card.key,
      cid: card.call?.cid || card.node.dataset.cid,
      at: card.at,
      caller: displayName(card.caller),
      custom: card.call?.custom,
    });
  }

  // Query calls' states: rings the server reports missed (also those no tab saw).
  update(callStates) {
    for (const state of callStates) {
      const entry = missedFromState(state, this.me, outcome(state, this.me).kind);
      if (entry) this.add(entry);
    }
  }

  markSeen() {
    const newest = this.entries.reduce((max, e) => Math.max(max, e.at), 0);
    if (newest <= this.seenAt) return;
    this.seenAt = newest;
    try {
      localStorage.setItem(storageKey('missed-seen', this.me), JSON.stringify(newest));
    } catch {
      // storage full or refused: the badge comes back after a reload, nothing worse
    }
    this.render();
  }

  render() {
    const count = this.unseen;
    this.badge.textContent = String(count);
    this.badge.hidden = count === 0;
    this.badge.setAttribute('aria-label', `${count} new`);
    this.list.replaceChildren(...this.entries.map((entry) => this._item(entry)));
    this.empty.hidden = this.entries.length > 0;
  }

  _item(entry) {
    const details = customEntries(entry.custom).map(([k, v]) => `${k}: ${v}`);
    const when = formatWhen(new Date(entry.at));
    return el(
      'li',
      {class: `missed-call${entry.at > this.seenAt ? ' new' : ''}`, dataset: {cid: entry.cid, key: entry.key}},
      el(
        'span',
        {class: 'who'},
        el('span', {class: 'name'}, entry.caller || entry.cid),
        el('span', {class: 'status'}, [when, ...details].filter(Boolean).join(' · ')),
      ),
    );
  }

  _save() {
    try {
      localStorage.setItem(storageKey('missed', this.me), JSON.stringify(this.entries));
    } catch {
      // storage full or refused: the list still shows until the tab closes
    }
  }
}

// The missed ring of a call's latest session, as the server reports it (query calls), or null.
export function missedFromState(state, me, outcomeKind) {
  const call = state.call;
  const session = call.session;
  if (!session?.id || outcomeKind !== 'missed') return null;
  const rungBy = session.rung_by;
  const member = (state.members || []).find((m) => m.user_id === rungBy);
  const at = Number(session.ring_started_at || session.started_at || call.updated_at || 0) / 1e6;
  return {
    key: `${call.cid}/${session.id}`,
    cid: call.cid,
    at: at || Date.now(),
    caller: member ? displayName(member.user, rungBy) : rungBy || call.id,
    custom: call.custom || {},
  };
}
