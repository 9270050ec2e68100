// Ring cards: incoming rings (Accept / Decline) and the outgoing "Calling …" card (Cancel).
//
// Ringing is server-authoritative: a card goes away the moment the server says anyone accepted,
// this user declined or missed it (on any tab), the caller cancelled, or the call ended.

import {customEntries, displayName, el, updateInert} from './view.js';

const BLINK_MS = 1000;

function sessionKey(event) {
  const call = event.call || {};
  return `${event.call_cid}/${call.session?.id || call.current_session_id || ''}`;
}

export class Rings extends EventTarget {
  constructor({container, template, ringtone, me}) {
    super();
    this.container = container;
    this.template = template;
    this.ringtone = ringtone;
    this.me = me;
    this.cards = new Map(); // cid -> {key, node, direction, caller, call, made (incoming)}
    this.seen = new Set(); // session keys already rung (the hub re-sends rings on reconnect)
    this.made = 0; // incoming cards made so far: a reconcile spares those made after its read
    this.title = document.title;
    this._blink = null;
    document.addEventListener('visibilitychange', () => this._blinkTitle());
    this.addEventListener('change', () => {
      updateInert();
      this._blinkTitle();
    });
  }

  get ringing() {
    return [...this.cards.values()].filter((card) => card.direction === 'in');
  }

  // call.ring {call, user: caller, members}
  incoming(event) {
    const caller = event.user || {};
    if (caller.id === this.me) return;
    const key = sessionKey(event);
    if (this.seen.has(key) && this.cards.has(event.call_cid)) return;
    this.seen.add(key);
    const name = displayName(caller);
    const node = this._card(event.call_cid, 'in', 'Incoming call', name, `Incoming call from ${name}`);
    this._custom(node, event.call?.custom);
    const accept = node.querySelector('.accept');
    const decline = node.querySelector('.decline');
    accept.addEventListener('click', () => this._act('accept', event, node));
    decline.addEventListener('click', () => this._act('decline', event, node));
    const at = Number(event.call?.session?.ring_started_at || 0) / 1e6 || Date.now();
    const returnFocus = this._focusOutside();
    this.made += 1;
    this.cards.set(event.call_cid, {key, node, direction: 'in', caller, call: event.call, at, returnFocus, made: this.made});
    this.container.append(node);
    this._sound();
    // Focus goes to the card, not to Accept: a key pressed at that moment answers nothing.
    node.tabIndex = -1;
    node.focus({preventScroll: true});
    this.dispatchEvent(new CustomEvent('change'));
  }

  // The card shown while this user calls a device. Returns the card's node.
  outgoing(cid, device, custom) {
    const name = displayName(device);
    const node = this._card(cid, 'out', 'Calling', name, `Calling ${name}`);
    this._custom(node, custom);
    node.querySelector('.accept').remove();
    const cancel = node.querySelector('.decline');
    cancel.textContent = 'Cancel';
    cancel.addEventListener('click', () => {
      this.dispatchEvent(new CustomEvent('cancel', {detail: {cid}}));
    });
    this.cards.set(cid, {key: cid, node, direction: 'out', caller: null, call: null});
    this.container.append(node);
    cancel.focus();
    this.dispatchEvent(new CustomEvent('change'));
    return node;
  }

  // A device already talks with someone: ask before joining that call. Resolves true (Join)
  // or false (Cancel); the card stays up (state "Joining…") until the caller removes it.
  confirmJoin(cid, device, names) {
    const name = displayName(device);
    const node = this._card(cid, 'join', 'In a call', name, `${name} is busy`);
    node.querySelector('.ring-custom').hidden = true;
    node.querySelector('.ring-state').textContent = `Join the call with ${names}?`;
    const join = node.querySelector('.accept');
    const cancel = node.querySelector('.decline');
    join.textContent = 'Join';
    cancel.textContent = 'Cancel';
    cancel.classList.remove('danger');
    this.cards.set(cid, {key: cid, node, direction: 'join', caller: null, call: null});
    this.container.append(node);
    node.tabIndex = -1;
    node.focus({preventScroll: true});
    this.dispatchEvent(new CustomEvent('change'));
    return new Promise((resolve) => {
      join.addEventListener('click', () => {
        for (const button of node.querySelectorAll('button')) button.disabled = true;
        node.querySelector('.ring-state').textContent = 'Joining…';
        resolve(true);
      });
      cancel.addEventListener('click', () => {
        this.remove(cid, 'cancelled');
        resolve(false);
      });
    });
  }

  _focusOutside() {
    const active = document.activeElement;
    return active && active !== document.body && !this.container.contains(active) ? active : null;
  }

  // A fresh card from the template (replacing any card of the call).
  _card(cid, direction, kind, name, label) {
    this.remove(cid);
    const node = this.template.content.firstElementChild.cloneNode(true);
    node.dataset.cid = cid;
    node.dataset.direction = direction;
    node.setAttribute('aria-label', label);
    node.querySelector('.ring-kind').textContent = kind;
    node.querySelector('.ring-caller').textContent = name;
    return node;
  }

  setState(cid, text) {
    const card = this.cards.get(cid);
    if (card) card.node.querySelector('.ring-state').textContent = text;
  }

  // Any call event: stop ringing when the server says so.
  handle(event) {
    const card = this.cards.get(event.call_cid);
    if (!card || card.direction !== 'in') return;
    const who = event.user?.id;
    switch (event.type) {
      case 'call.accepted':
        this.remove(event.call_cid, who === this.me ? 'accepted' : 'answered elsewhere');
        break;
      case 'call.rejected':
        if (who === this.me || who === card.caller?.id) {
          this.remove(event.call_cid, who === this.me ? 'declined' : 'cancelled');
        }
        break;
      case 'call.missed':
        if (who === this.me) this.remove(event.call_cid, 'missed');
        break;
      case 'call.ended':
      case 'call.session_ended':
      case 'call.deleted':
        this.remove(event.call_cid, 'ended');
        break;
      default:
    }
  }

  // After a reconnect: keep only cards whose call still rings this user. readAt: this.made when
  // callStates were asked for. A card made later stays: its ring may be newer than the answer
  // (the server answered before storing it, the ring's event came first).
  reconcile(callStates, readAt) {
    for (const [cid, card] of this.cards) {
      if (card.direction !== 'in' || card.made > readAt) continue;
      const state = callStates.find((s) => s.call.cid === cid);
      const session = state?.call.session;
      if (!state || state.call.ended_at || !(session?.ringing || []).includes(this.me)) {
        this.remove(cid, 'ended');
      }
    }
  }

  remove(cid, reason = '') {
    const card = this.cards.get(cid);
    if (!card) return;
    this.cards.delete(cid);
    card.node.remove();
    if (!this.ringing.length) this.ringtone.stop();
    this.dispatchEvent(new CustomEvent('removed', {detail: {cid, reason, direction: card.direction, card}}));
    this.dispatchEvent(new CustomEvent('change'));
    // Focus went with the card: give it back to where the user was (no longer inert now).
    const lost = !document.activeElement || document.activeElement === document.body;
    if (lost && card.returnFocus?.isConnected && !card.returnFocus.closest('[inert]')) {
      card.returnFocus.focus({preventScroll: true});
    }
  }

  // While a ring waits in a hidden tab, the title blinks "🔔 Front door is calling".
  _blinkTitle() {
    const ring = this.ringing.at(-1);
    if (ring && document.visibilityState === 'hidden') {
      if (this._blink) return;
      const text = `🔔 ${displayName(ring.caller)} is calling`;
      let on = false;
      const flip = () => {
        on = !on;
        document.title = on ? text : this.title;
      };
      flip();
      this._blink = setInterval(flip, BLINK_MS);
    } else if (this._blink) {
      clearInterval(this._blink);
      this._blink = null;
      document.title = this.title;
    }
  }

  _sound() {
    this.ringtone.start();
  }

  _custom(node, custom) {
    const list = node.querySelector('.ring-custom');
    const entries = customEntries(custom);
    list.replaceChildren(...entries.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
    list.hidden = entries.length === 0;
  }

  _act(action, event, node) {
    for (const button of node.querySelectorAll('button')) button.disabled = true;
    node.querySelector('.ring-state').textContent = action === 'accept' ? 'Answering…' : 'Declining…';
    this.ringtone.stop();
    this.dispatchEvent(new CustomEvent(action, {detail: {cid: event.call_cid, event}}));
  }

  // An action failed: let the user try again.
  failed(cid, message) {
    const card = this.cards.get(cid);
    if (!card) return;
    for (const button of card.node.querySelectorAll('button')) button.disabled = false;
    card.node.querySelector('.ring-state').textContent = message;
  }
}
