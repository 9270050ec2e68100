// The devices (users with custom.device) in the signed-in user's calls, with presence, and
// "Busy — in a call with Alice" while a device talks in one of them.

import {displayName, el} from './view.js';

export function joinNames(names) {
  if (names.length <= 1) return names.join('');
  return `${names.slice(0, -1).join(', ')} and ${names.at(-1)}`;
}

export function isDevice(user) {
  return Boolean(user && user.custom && user.custom.device);
}

export class Directory {
  // onCall(device user, call cid) places a call to the device.
  constructor({list, empty, unreachable, me, onCall}) {
    this.list = list;
    this.empty = empty;
    this.unreachableNote = unreachable;
    this.offline = null; // {attempt, nextInMs} while the server cannot be reached
    this.me = me;
    this.onCall = onCall;
    this.devices = new Map(); // user id -> {user, cids: [cid, …] (most recent call first)}
    this.busy = false;
  }

  // callStates: [{call, members}] as query calls returns them, most recent first.
  update(callStates) {
    const devices = new Map();
    for (const state of callStates) {
      for (const member of state.members || []) {
        const user = member.user;
        if (!isDevice(user) || user.id === this.me) continue;
        const entry = devices.get(user.id) || {user, cids: [], busy: null};
        if (!entry.cids.includes(state.call.cid)) entry.cids.push(state.call.cid);
        entry.busy = entry.busy || this._busy(state, user.id);
        devices.set(user.id, entry);
      }
    }
    this.devices = devices;
    this.render();
  }

  // user.presence.changed: {user: {id, online, …}}.
  presence(user) {
    const entry = this.devices.get(user?.id);
    if (!entry) return;
    entry.user = {...entry.user, ...user};
    this.render();
  }

  device(userId) {
    return this.devices.get(userId)?.user || null;
  }

  // {cid, names} of the ongoing call the device talks in, or null.
  busyWith(userId) {
    return this.devices.get(userId)?.busy || null;
  }

  // The device is a participant of the call's live session, and so is someone else.
  _busy(state, deviceId) {
    const call = state.call;
    if (call.ended_at) return null;
    const people = (call.session?.participants || []).map((p) => p.user || {id: p.user_id});
    if (!people.some((u) => u.id === deviceId)) return null;
    const others = [...new Map(people.filter((u) => u.id && u.id !== deviceId).map((u) => [u.id, u])).values()];
    if (!others.length) return null;
    const names = others.map((u) => (u.id === this.me ? 'you' : displayName(u)));
    return {cid: call.cid, names, withMe: others.some((u) => u.id === this.me)};
  }

  // The device list could not be read: show that and the retry in progress instead of "none".
  unreachable({attempt, nextInMs}) {
    this.offline = {attempt, nextInMs};
    clearInterval(this._countdown);
    const due = Date.now() + nextInMs;
    const detail = this.unreachableNote.querySelector('.retry-detail');
    const tick = () => {
      const left = Math.ceil((due - Date.now()) / 1000);
      detail.textContent = left > 0 ? ` (attempt ${attempt}; next try in ${left} s)` : ` (attempt ${attempt + 1} under way…)`;
      if (left <= 0) clearInterval(this._countdown);
    };
    tick();
    this._countdown = setInterval(tick, 500);
    this.unreachableNote.hidden = false;
    this.render();
  }

  reachable() {
    if (!this.offline) return;
    this.offline = null;
    clearInterval(this._countdown);
    this.unreachableNote.hidden = true;
    this.render();
  }

  setBusy(busy) {
    this.busy = busy;
    this.render();
  }

  render() {
    const items = [...this.devices.values()].sort((a, b) =>
      displayName(a.user).localeCompare(displayName(b.user)),
    );
    this.list.replaceChildren(...items.map((entry) => this._item(entry)));
    this.empty.hidden = items.length > 0 || this.offline !== null;
  }

  _item({user, cids, busy}) {
    const device = user.custom.device || {};
    const online = Boolean(user.online);
    const name = displayName(user);
    const details = [device.model, device.location || user.custom.location].filter(Boolean).join(' · ');
    return el(
      'li',
      {class: 'device', dataset: {userId: user.id, online: String(online), busy: String(Boolean(busy))}},
      el('span', {class: `presence ${online ? 'online' : 'offline'}`, 'aria-hidden': 'true'}),
      el(
        'span',
        {class: 'who'},
        el('span', {class: 'name'}, name),
        el('span', {class: 'status'}, online ? 'online' : 'offline', details ? ` · ${details}` : ''),
        busy ? el('span', {class: 'busy'}, `Busy — in a call with ${joinNames(busy.names)}`) : null,
      ),
      el(
        'button',
        {
          type: 'button',
          class: 'primary call-device',
          disabled: !online || this.busy || !cids.length || Boolean(busy?.withMe),
          title: online ? `Call ${name}` : `${name} is offline`,
          'aria-label': `Call ${name}`,
          onclick: () => this.onCall(user, busy?.cid || cids[0]),
        },
        'Call',
      ),
    );
  }
}
