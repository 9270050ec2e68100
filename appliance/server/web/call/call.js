// The browser side of a call: the call verbs over REST, joining with one RTCPeerConnection per
// remote participant, media controls and a quality figure (the rules it follows:
// docs/architecture.md "The rules of ringing, sessions and signaling").
//
//   import {Connection, Call, LocalMedia} from '/call.js';
//   const connection = new Connection({apiKey, token});
//   await connection.open();
//   const call = new Call(connection, 'default', 'door-1');
//   call.addEventListener('track', (e) => video.srcObject = e.detail.stream);
//   await call.join({media: await LocalMedia.open()});
//
// The API is documented in docs/call-js.md.

import {ApiError, Connection, decodeToken} from './connection.js';
import {LocalMedia} from './localmedia.js';
import {Peer, preferH264} from './peer.js';

export {ApiError, Connection, decodeToken, LocalMedia, Peer, preferH264};

const VIDEO = '/api/v2/video';

// Stream's ICE server entries say `password`; RTCPeerConnection wants `credential`.
export function iceServersFrom(response) {
  const list = response?.ice_servers || response?.credentials?.ice_servers || [];
  return list.map((server) => {
    const entry = {urls: server.urls};
    if (server.username) entry.username = server.username;
    if (server.password || server.credential) entry.credential = server.password || server.credential;
    return entry;
  });
}

export function participantSessionId(participant) {
  return participant.user_session_id || participant.session_id || participant.id;
}

export function participantUserId(participant) {
  return participant.user?.id || participant.user_id;
}

export class Call extends EventTarget {
  constructor(connection, type, id) {
    super();
    this.connection = connection;
    this.type = type;
    this.id = id;
    this.cid = `${type}:${id}`;
    this.log = connection.log;
    this.data = null; // the `call` object of the last response
    this.members = [];
    this.ownCapabilities = [];
    this.membership = null;
    this.sessionId = null; // our participant session id while joined
    this.participants = new Map(); // session id -> participant (as the server sent it)
    this.peers = new Map(); // session id -> Peer
    this.media = null;
    this.iceServers = [];
    this._early = [];
    this._ownsMedia = false;
    this._onEvent = (event) => this._handle(event.detail);
    this._onReconnected = () => this._reattach();
    connection.addEventListener('event', this._onEvent);
    connection.addEventListener('reconnected', this._onReconnected);
  }

  get joined() {
    return this.sessionId !== null;
  }

  path(suffix = '') {
    return `${VIDEO}/call/${encodeURIComponent(this.type)}/${encodeURIComponent(this.id)}${suffix}`;
  }

  // --- the call verbs -------------------------------------------------------------------------

  // options: {members: [user id | {user_id, role, custom}], custom, ring, video, team,
  //           settings_override, starts_at, notify}
  async getOrCreate(options = {}) {
    const data = {};
    if (options.members) {
      data.members = options.members.map((m) => (typeof m === 'string' ? {user_id: m} : m));
    }
    for (const key of ['custom', 'team', 'settings_override', 'starts_at']) {
      if (options[key] !== undefined) data[key] = options[key];
    }
    const body = {data};
    for (const key of ['ring', 'video', 'notify']) {
      if (options[key] !== undefined) body[key] = options[key];
    }
    return this._keep(await this.connection.post(this.path(), body));
  }

  async get() {
    return this._keep(await this.connection.get(this.path()));
  }

  async update(changes) {
    return this._keep(await this.connection.patch(this.path(), changes));
  }

  ring({memberIds, video} = {}) {
    const body = {};
    if (memberIds) body.members_ids = memberIds;
    if (video !== undefined) body.video = video;
    return this.connection.post(this.path('/ring'), body);
  }

  accept() {
    return this.connection.post(this.path('/accept'));
  }

  reject(reason = 'decline') {
    return this.connection.post(this.path('/reject'), {reason});
  }

  end() {
    return this.connection.post(this.path('/mark_ended'));
  }

  sendEvent(custom) {
    return this.connection.post(this.path('/event'), {custom});
  }

  // Unlock (docs/architecture.md "Devices"): the device answers with a custom event
  // {type: "unlock.result", ok, reason}.
  unlock() {
    return this.sendEvent({type: 'unlock'});
  }

  // --- joining ----------------------------------------------------------------------------------

  // options: {media: LocalMedia | {audio, video} (default both) | null (receive-only),
  //           create, data, ring}. Resolves with the join response.
  async join(options = {}) {
    if (this.joined) throw new Error(`Call(${this.cid}) is already joined`);
    if (this.connection.state !== 'open') await this.connection.open();
    if (options.media instanceof LocalMedia) {
      this.media = options.media;
    } else {
      this.media = await LocalMedia.open(options.media === null ? {} : options.media || undefined);
      this._ownsMedia = true;
    }
    this._onMediaChange = () => this._updateTracks();
    this.media.addEventListener('change', this._onMediaChange);
    const body = {connection_id: this.connection.connectionId};
    for (const key of ['create', 'data', 'ring', 'location']) {
      if (options[key] !== undefined) body[key] = options[key];
    }
    let response;
    try {
      response = await this.connection.post(this.path('/join'), body);
    } catch (err) {
      this._releaseMedia();
      throw err;
    }
    this._keep(response);
    this.sessionId = response.user_session_id || response.session_id;
    this.iceServers = iceServersFrom(response);
    // Our own participant_joined event may have come before this response.
    this.participants.delete(this.sessionId);
    this.log.info(`Call(${this.cid}): joined as ${this.sessionId}`);
    // The newcomer offers to everyone already there.
    for (const participant of response.participants || response.call?.session?.participants || []) {
      const sid = participantSessionId(participant);
      if (!sid || sid === this.sessionId) continue;
      this.participants.set(sid, participant);
      this._peer(sid, participantUserId(participant), true);
    }
    const early = this._early;
    this._early = [];
    for (const event of early) this._handle(event);
    this._emit('joined', {sessionId: this.sessionId, response});
    return response;
  }

  async leave() {
    if (!this.joined) return;
    const sessionId = this.sessionId;
    this._closePeers();
    this.sessionId = null;
    try {
      await this.connection.post(this.path('/leave'), {session_id: sessionId});
    } catch (err) {
      this.log.warn(`Call(${this.cid}): leave failed: ${err.message}`);
    } finally {
      this._releaseMedia();
      this._emit('left', {sessionId});
    }
  }

  // Stop listening to the connection (after leave, when the page drops the call).
  dispose() {
    this.connection.removeEventListener('event', this._onEvent);
    this.connection.removeEventListener('reconnected', this._onReconnected);
    this._closePeers();
    this._releaseMedia();
  }

  setMicrophone(enabled) {
    this.media?.setEnabled('audio', enabled);
  }

  setCamera(enabled) {
    this.media?.setEnabled('video', enabled);
  }

  // Whether our `kind` ('audio' | 'video') is on the wire: some connection has a sender with a
  // live, enabled track. With no connection yet, what LocalMedia allows. Changes are announced
  // as 'sending' events ({audio, video}).
  sending(kind) {
    const peers = [...this.peers.values()].filter((peer) => peer.pc);
    if (peers.length === 0) return Boolean(this.media?.sendingTrack(kind));
    return peers.some((peer) => peer.sending(kind));
  }

  // Worst RTT and the packet loss over every peer: {rttMs, lossPct, videoCodec, framesDecoded}.
  async stats() {
    const all = await Promise.all([...this.peers.values()].map((peer) => peer.stats()));
    const out = {rttMs: null, lossPct: null, videoCodec: null, framesDecoded: 0, peers: 0};
    let lost = 0;
    let received = 0;
    for (const s of all) {
      if (!s) continue;
      out.peers += 1;
      if (s.rttMs !== null) out.rttMs = Math.max(out.rttMs ?? 0, s.rttMs);
      lost += s.packetsLost;
      received += s.packetsReceived;
      out.framesDecoded += s.framesDecoded;
      out.videoCodec = out.videoCodec || s.videoCodec;
    }
    if (lost + received > 0) out.lossPct = (100 * lost) / (lost + received);
    return out;
  }

  // --- inside -----------------------------------------------------------------------------------

  _keep(response) {
    if (response?.call) this.data = response.call;
    if (response?.members) this.members = response.members;
    if (response?.own_capabilities) this.ownCapabilities = response.own_capabilities;
    if (response?.membership) this.membership = response.membership;
    return response;
  }

  _peer(sessionId, userId, offerer) {
    const peer = new Peer({
      sessionId,
      localId: this.sessionId,
      userId,
      offerer,
      iceServers: this.iceServers,
      media: this.media,
      log: this.log,
      signal: (to, signal) => this._signal(to, signal),
    });
    this.peers.set(sessionId, peer);
    peer.addEventListener('track', (e) => this._emit('track', {sessionId, userId, ...e.detail}));
    peer.addEventListener('state', (e) => this._emit('peer.state', {sessionId, userId, ...e.detail}));
    peer.addEventListener('sending', () => {
      this._emit('sending', {audio: this.sending('audio'), video: this.sending('video')});
    });
    this._emit('peer', {sessionId, userId, peer});
    if (offerer) {
      peer.start().catch((err) => this.log.warn(`${peer.name}: offer failed: ${err.message}`));
    }
    return peer;
  }

  // A new WebSocket after a drop: the participant moves to it within the server's grace period
  // (peer media never stopped), then the call is re-read in case it ended meanwhile.
  async _reattach() {
    if (!this.joined) return;
    this.connection.send({type: 'participant.attach', call_cid: this.cid, session_id: this.sessionId});
    try {
      const response = await this.get();
      if (response.call?.ended_at && this.joined) {
        this._handle({type: 'call.ended', call_cid: this.cid, call: response.call, reason: 'ended'});
      }
    } catch (err) {
      this.log.warn(`Call(${this.cid}): re-read after reconnect failed: ${err.message}`);
    }
  }

  _signal(to, signal) {
    const sent = this.connection.send({type: 'signal', call_cid: this.cid, to, signal});
    if (!sent) this.log.warn(`Call(${this.cid}): signal ${signal.kind} to ${to} lost (offline)`);
  }

  _handle(event) {
    if (!event || event.call_cid !== this.cid) return;
    if (event.type === 'call.signal') {
      if (!this.joined) {
        this._early.push(event);
        return;
      }
      this._onSignal(event);
      return;
    }
    if (event.type === 'call.session_participant_joined') {
      const participant = event.participant || {};
      const sid = participantSessionId(participant);
      if (sid && sid !== this.sessionId) this.participants.set(sid, participant);
    } else if (event.type === 'call.session_participant_left') {
      const sid = participantSessionId(event.participant || {});
      this.participants.delete(sid);
      const peer = this.peers.get(sid);
      if (peer) {
        peer.close();
        this.peers.delete(sid);
      }
    }
    if (event.call) this.data = event.call;
    this._emit(event.type, event);
    if (this.joined && (event.type === 'call.ended' || event.type === 'call.session_ended')) {
      this._closePeers();
      const sessionId = this.sessionId;
      this.sessionId = null;
      this._releaseMedia();
      this._emit('left', {sessionId, reason: event.reason || event.type});
    }
  }

  _onSignal(event) {
    const {from, signal} = event;
    if (!from || !signal) return;
    let peer = this.peers.get(from);
    if (!peer) {
      if (signal.kind !== 'offer' && signal.kind !== 'restart') {
        // Candidates may overtake nothing (one socket, in order); anything else is stale.
        this.log.debug(`Call(${this.cid}): ${signal.kind} from unknown ${from} dropped`);
        return;
      }
      const participant = this.participants.get(from);
      const userId = participant ? participantUserId(participant) : event.user?.id || event.from_user_id;
      peer = this._peer(from, userId, false);
    }
    peer.handle(signal).catch((err) => {
      this.log.warn(`${peer.name}: ${signal.kind} failed: ${err.message}`);
    });
  }

  _updateTracks() {
    for (const peer of this.peers.values()) {
      peer.updateTracks().catch((err) => this.log.warn(`${peer.name}: ${err.message}`));
    }
  }

  _closePeers() {
    for (const peer of this.peers.values()) peer.close();
    this.peers.clear();
    this.participants.clear();
  }

  _releaseMedia() {
    if (this.media && this._onMediaChange) {
      this.media.removeEventListener('change', this._onMediaChange);
    }
    if (this.media && this._ownsMedia) this.media.stop();
    this._ownsMedia = false;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, {detail}));
  }
}
