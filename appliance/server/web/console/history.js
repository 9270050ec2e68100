// Recent calls of the signed-in user, each with what became of its latest session.

import {displayName, el, formatWhen, nsToDate} from './view.js';

// What the user should read about a call's latest session.
export function outcome(state, me) {
  const call = state.call;
  const session = call.session || {};
  const has = (byUser) => Boolean(byUser && Object.prototype.hasOwnProperty.call(byUser, me));
  const accepted = Object.keys(session.accepted_by || {});
  if (!call.ended_at && (session.participants || []).length) return {kind: 'ongoing', text: 'In progress'};
  if (!call.ended_at && (session.ringing || []).length) return {kind: 'ringing', text: 'Ringing'};
  if (has(session.missed_by)) return {kind: 'missed', text: 'Missed'};
  if (has(session.rejected_by) && session.rung_by !== me) return {kind: 'declined', text: 'Declined'};
  if (accepted.length) {
    const who = accepted.includes(me) ? 'you' : nameOf(state, accepted[0]);
    return {kind: 'answered', text: `Answered by ${who}`};
  }
  if (session.rung_by === me) {
    const reason = session.end_reason;
    if (reason === 'rejected') return {kind: 'declined', text: 'Declined'};
    if (reason === 'cancelled') return {kind: 'cancelled', text: 'Cancelled'};
    return {kind: 'unanswered', text: 'Not answered'};
  }
  if (session.end_reason === 'cancelled') return {kind: 'missed', text: 'Missed'};
  if (session.started_at) return {kind: 'answered', text: 'Talked'};
  return {kind: 'none', text: ''};
}

function nameOf(state, userId) {
  const member = (state.members || []).find((m) => m.user_id === userId);
  return member ? displayName(member.user, userId) : userId;
}

export class History {
  constructor({list, empty, me}) {
    this.list = list;
    this.empty = empty;
    this.me = me;
    this.states = [];
  }

  update(callStates) {
    this.states = callStates;
    this.render();
  }

  render() {
    const items = this.states.filter((s) => s.call.session || s.call.ended_at);
    this.list.replaceChildren(...items.map((state) => this._item(state)));
    this.empty.hidden = items.length > 0;
  }

  _item(state) {
    const call = state.call;
    const session = call.session || {};
    const result = outcome(state, this.me);
    const caller = session.rung_by ? nameOf(state, session.rung_by) : displayName(call.created_by, '');
    const when = nsToDate(session.ring_started_at || session.started_at || call.updated_at);
    const device = (state.members || []).find((m) => m.user?.custom?.device && m.user_id !== this.me);
    const title = call.custom?.name || call.custom?.title || (device ? displayName(device.user) : call.id);
    const from = caller && caller !== title ? `from ${caller}` : '';
    return el(
      'li',
      {class: `recent ${result.kind}`, dataset: {cid: call.cid, outcome: result.kind}},
      el(
        'span',
        {class: 'who'},
        el('span', {class: 'name'}, title),
        el('span', {class: 'status'}, [from, when ? formatWhen(when) : ''].filter(Boolean).join(' · ')),
      ),
      el('span', {class: `outcome ${result.kind}`}, result.text),
    );
  }
}
