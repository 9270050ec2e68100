// Placing, answering and ending calls: the ring cards' buttons, "Call" on a device, the
// in-call view. One call at a time; the host (the console) provides the connection, the user
// and the calls it last read.

import {Call, LocalMedia} from './call.js';
import {joinNames} from './directory.js';
import {displayName} from './view.js';

const ENDED_SHOWN_MS = 1500;

export class CallControl {
  // host: {connection, me, stateOf(cid), refreshSoon()}
  constructor({host, view, rings, directory}) {
    this.host = host;
    this.view = view;
    this.rings = rings;
    this.directory = directory;
    this.call = null; // the Call we are in (or calling out on)
    this.outgoing = null; // {device, answered} while we call a device
    this._ownMedia = null;
    view.addEventListener('hangup', () => this.hangUp());
    rings.addEventListener('accept', (e) => this.accept(e.detail.cid));
    rings.addEventListener('decline', (e) => this.decline(e.detail.cid));
    rings.addEventListener('cancel', () => this.hangUp());
  }

  // The device in a call (for the title and the Unlock button), if any.
  deviceIn(cid, hint) {
    if (hint) return hint;
    const state = this.host.stateOf(cid);
    const member = (state?.members || []).find((m) => m.user?.custom?.device && m.user_id !== this.host.me);
    return member ? member.user : null;
  }

  // A door with a relay, and this user's member role among those the device unlocks for (when
  // the device publishes them; it checks again itself and answers unlock.result either way).
  canUnlock(device, cid) {
    const spec = device?.custom?.device;
    if (!spec || !spec.relay) return false;
    const roles = spec.unlock_roles;
    if (!Array.isArray(roles)) return true;
    const role = this.host.stateOf(cid)?.membership?.role || this.call?.membership?.role;
    return roles.includes(role || 'call_member');
  }

  async accept(cid) {
    if (this.call) await this.hangUp();
    const [type, ...rest] = cid.split(':');
    const call = new Call(this.host.connection, type, rest.join(':'));
    try {
      await call.accept();
    } catch (err) {
      call.dispose();
      this.rings.failed(cid, `Could not answer: ${err.message}`);
      return;
    }
    const caller = this.rings.cards.get(cid)?.caller;
    this.rings.remove(cid, 'accepted');
    await this._enter(call, this.deviceIn(cid, caller?.custom?.device ? caller : null));
  }

  async decline(cid) {
    const [type, ...rest] = cid.split(':');
    const call = new Call(this.host.connection, type, rest.join(':'));
    try {
      await call.reject('decline');
      this.rings.remove(cid, 'declined');
    } catch (err) {
      this.rings.failed(cid, `Could not decline: ${err.message}`);
    } finally {
      call.dispose();
    }
  }

  // "Call this device": get-or-create the shared call, ring the device, join and wait for it.
  // A device already in a call is not rung: the user is asked, then joins that call (the
  // server decides whether a further participant may: join-ongoing-call).
  async callDevice(device, cid) {
    if (this.call) return;
    const busy = this.directory.busyWith(device.id);
    if (busy) {
      await this.joinOngoing(device, busy.cid, joinNames(busy.names));
      return;
    }
    const [type, ...rest] = cid.split(':');
    const call = new Call(this.host.connection, type, rest.join(':'));
    this.call = call;
    this.outgoing = {device, answered: false};
    this.directory.setBusy(true);
    this.rings.outgoing(cid, device, this.host.stateOf(cid)?.call.custom);
    this.rings.setState(cid, 'Ringing…');
    try {
      await call.getOrCreate({});
      await call.ring({memberIds: [device.id], video: true});
      if (this.call !== call) return;
      const media = await LocalMedia.open({audio: true, video: true});
      if (this.call !== call) {
        media.stop();
        return;
      }
      await call.join({media});
      this._ownMedia = media;
      this.view.attachLocal(media);
    } catch (err) {
      if (this.call !== call) return;
      this.rings.setState(cid, `Could not call: ${err.message}`);
      this.endCall('', 4000);
    }
  }

  async joinOngoing(device, cid, names) {
    this.directory.setBusy(true);
    if (!(await this.rings.confirmJoin(cid, device, names))) {
      this.directory.setBusy(false);
      return;
    }
    if (this.call) return;
    await this.host.refresh();
    if (!this.directory.busyWith(device.id)) {
      // The conversation ended while the question was up: nothing to join any more.
      this.rings.setState(cid, 'That call has ended.');
      setTimeout(() => this.rings.remove(cid, 'ended'), ENDED_SHOWN_MS);
      this.directory.setBusy(false);
      return;
    }
    const [type, ...rest] = cid.split(':');
    const call = new Call(this.host.connection, type, rest.join(':'));
    this.call = call;
    this.outgoing = null;
    let media = null;
    try {
      media = await LocalMedia.open({audio: true, video: true});
      if (this.call !== call) return media.stop();
      await call.join({media});
    } catch (err) {
      media?.stop();
      if (this.call !== call) return;
      this.rings.setState(cid, `Could not join: ${err.message}`);
      this.endCall('', 6000);
      return;
    }
    this._ownMedia = media;
    this.rings.remove(cid, 'joined');
    this._showCall(call, device);
  }

  onEvent(event) {
    if (!this.call || this.call.cid !== event.call_cid) return;
    const out = this.outgoing;
    if (!out || out.answered) return;
    if (event.type === 'call.accepted' && event.user?.id !== this.host.me) {
      out.answered = true;
      this.rings.remove(event.call_cid, 'answered');
      this._showCall(this.call, out.device);
    } else if (event.type === 'call.rejected' && event.user?.id === out.device.id) {
      this.rings.setState(event.call_cid, `${displayName(out.device)} declined`);
    } else if (event.type === 'call.missed' && event.user?.id === out.device.id) {
      this.rings.setState(event.call_cid, 'No answer');
    } else if (event.type === 'call.ended') {
      const text = {rejected: 'Declined', timeout: 'No answer', cancelled: 'Cancelled'}[event.reason] || 'Call ended';
      this.rings.setState(event.call_cid, text);
      this.endCall('', ENDED_SHOWN_MS);
    }
  }

  async _enter(call, device) {
    this.call = call;
    this.outgoing = null;
    this.directory.setBusy(true);
    this._showCall(call, device);
    try {
      const media = await LocalMedia.open({audio: true, video: true});
      this._ownMedia = media;
      if (media.error) this.view.say(`Receive-only: ${media.error}`, 'info', 6000);
      this.view.attachLocal(media);
      await call.join({media});
    } catch (err) {
      this.view.say(`Could not join: ${err.message}`, 'error');
      this.endCall('', 4000);
    }
  }

  _showCall(call, device) {
    const title = device ? displayName(device) : call.data?.custom?.name || call.id;
    this.view.show(call, {title, canUnlock: this.canUnlock(device, call.cid), deviceId: device?.id || null});
    if (call.media) this.view.attachLocal(call.media);
    // When everyone else has left (the device hung up), hang up too.
    call.addEventListener('call.session_participant_left', () => {
      if (this.call !== call || !call.joined || call.participants.size > 0) return;
      this.view.say('The other side hung up');
      setTimeout(() => this.call === call && this.hangUp(), 800);
    });
    call.addEventListener('left', (e) => {
      if (this.call !== call) return;
      const reason = e.detail.reason;
      this.view.say(reason === 'last_participant_left' || !reason ? 'Call ended' : `Call ended (${reason})`);
      this.endCall('', ENDED_SHOWN_MS);
    });
  }

  async hangUp() {
    const call = this.call;
    if (!call) return;
    const out = this.outgoing;
    if (out && !out.answered) {
      try {
        await call.reject('cancel');
      } catch (err) {
        console.warn(`cancel: ${err.message}`);
      }
    }
    await call.leave();
    this.endCall('');
  }

  endCall(message, delayMs = 0) {
    const call = this.call;
    this.call = null;
    this.outgoing = null;
    const finish = () => {
      if (this.call) return; // a new call started meanwhile
      if (call) {
        this.rings.remove(call.cid, 'ended');
        call.dispose();
      }
      this._ownMedia?.stop();
      this._ownMedia = null;
      this.view.hide();
      this.directory.setBusy(false);
      this.host.refreshSoon();
    };
    if (message) this.view.say(message);
    if (delayMs) setTimeout(finish, delayMs);
    else finish();
  }
}
