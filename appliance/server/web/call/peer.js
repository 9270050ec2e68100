// One RTCPeerConnection to one remote participant (docs/architecture.md "Signaling"; the
// Python side is appliance/media/peer.py).
//
// The newcomer offers, everyone else answers, so there is never glare. H.264 constrained
// baseline with packetization-mode=1 is put first on every video transceiver: Chromium lists
// VP8 first otherwise, and an appliance's hardware H.264 sent as VP8 never decodes.
//
// ICE restart: aiortc cannot restart ICE on a live connection, so a restart is a fresh
// connection for the pair. The side that sent the first offer builds a new RTCPeerConnection
// and sends {kind: "restart", sdp}; the other side drops its old one and answers the new one.
// Candidates trickle as {kind: "candidate", candidate: RTCIceCandidateInit | null} (null: no
// more candidates), and carry the generation they belong to so stale ones are dropped.

const RESTART_AFTER_DISCONNECTED_MS = 4000;

// Video codecs in the order we want them: constrained baseline 42e01f first, then any other
// H.264 with packetization-mode=1, then every other H.264, then the rest (VP8, VP9, AV1 …).
export function preferH264(codecs) {
  const rank = (codec) => {
    const mime = codec.mimeType.toLowerCase();
    if (mime !== 'video/h264') return 3;
    const fmtp = (codec.sdpFmtpLine || '').toLowerCase();
    const mode1 = fmtp.includes('packetization-mode=1');
    if (mode1 && fmtp.includes('profile-level-id=42e01f')) return 0;
    if (mode1) return 1;
    return 2;
  };
  return codecs
    .map((codec, index) => ({codec, index}))
    .sort((a, b) => rank(a.codec) - rank(b.codec) || a.index - b.index)
    .map((entry) => entry.codec);
}

function applyCodecPreferences(transceiver, log) {
  if (typeof transceiver.setCodecPreferences !== 'function') return;
  const capabilities = RTCRtpReceiver.getCapabilities('video');
  if (!capabilities) return;
  const codecs = preferH264(capabilities.codecs);
  if (codecs[0]?.mimeType.toLowerCase() !== 'video/h264') {
    log.warn('this browser offers no H.264: video from appliances will not decode');
  }
  try {
    transceiver.setCodecPreferences(codecs);
  } catch (err) {
    log.warn(`setCodecPreferences failed: ${err.message}`);
  }
}

export class Peer extends EventTarget {
  // options: {sessionId, userId, offerer, iceServers, media (LocalMedia), signal(fn), log}
  constructor({sessionId, localId, userId, offerer, iceServers, media, signal, log}) {
    super();
    this.sessionId = sessionId;
    this.localId = localId || '';
    this.userId = userId;
    this.offerer = offerer;
    this.iceServers = iceServers || [];
    this.media = media;
    this._signal = signal;
    this.log = log || console;
    this.state = 'new';
    this.generation = 0;
    this.remoteStream = new MediaStream();
    this.pc = null;
    this._pending = [];
    this._restartTimer = null;
    this._closed = false;
  }

  get name() {
    return `Peer(${this.userId}/${this.sessionId})`;
  }

  // The offerer's first move.
  async start() {
    this._build();
    for (const kind of ['audio', 'video']) {
      const track = this.media?.track(kind) || null;
      // Muted at this moment (e.g. a restart during mute): negotiate sending, send nothing yet.
      const sending = this.media?.sendingTrack(kind) || null;
      const transceiver = this.pc.addTransceiver(sending || kind, {
        direction: track ? 'sendrecv' : 'recvonly',
        streams: this.media?.stream ? [this.media.stream] : [],
      });
      if (kind === 'video') applyCodecPreferences(transceiver, this.log);
    }
    await this._offer(this.generation === 0 ? 'offer' : 'restart');
    await this.updateTracks();
  }

  async handle(signal) {
    if (this._closed) return;
    switch (signal.kind) {
      case 'offer':
      case 'restart':
        if (this._glare(signal)) return;
        await this._answer(signal);
        break;
      case 'answer':
        if (!this.pc || this.pc.signalingState !== 'have-local-offer') {
          this.log.warn(`${this.name}: unexpected answer dropped`);
          return;
        }
        await this.pc.setRemoteDescription({type: 'answer', sdp: signal.sdp});
        await this._flushCandidates();
        break;
      case 'candidate':
        if (signal.generation !== undefined && signal.generation !== this.generation) return;
        if (!this.pc || !this.pc.remoteDescription) this._pending.push(signal.candidate);
        else await this._addCandidate(signal.candidate);
        break;
      default:
        this.log.warn(`${this.name}: unknown signal kind ${signal.kind} dropped`);
    }
  }

  // A fresh connection for the pair; only the first offerer does it (see the header).
  async restart() {
    if (this._closed || !this.offerer) return;
    this.log.info(`${this.name}: restarting (generation ${this.generation + 1})`);
    this.generation += 1;
    this._teardown();
    await this.start();
  }

  // The local tracks changed (mute, camera off), or a negotiation finished: put exactly the
  // tracks LocalMedia allows on the senders (null while muted: no packets at all). Also run
  // after every offer and answer, so a mute that came in mid-negotiation holds on the new
  // connection.
  async updateTracks() {
    const pc = this.pc;
    if (!pc) return;
    for (const transceiver of pc.getTransceivers()) {
      const kind = transceiver.receiver.track?.kind;
      if (!kind || transceiver.stopped) continue;
      const track = this.media?.sendingTrack(kind) || null;
      if (transceiver.sender.track !== track) await transceiver.sender.replaceTrack(track);
    }
    if (this.pc === pc) this.dispatchEvent(new CustomEvent('sending', {detail: this.sendingNow()}));
  }

  // What this connection can put on the wire right now: a sender with a live, enabled track.
  sending(kind) {
    if (!this.pc) return false;
    return this.pc.getTransceivers().some((transceiver) => {
      const track = transceiver.sender.track;
      return !transceiver.stopped && track?.kind === kind && track.readyState === 'live' && track.enabled;
    });
  }

  sendingNow() {
    return {audio: this.sending('audio'), video: this.sending('video')};
  }

  async stats() {
    if (!this.pc) return null;
    const report = await this.pc.getStats();
    const out = {rttMs: null, packetsLost: 0, packetsReceived: 0, videoCodec: null, framesDecoded: 0};
    const codecs = new Map();
    report.forEach((entry) => {
      if (entry.type === 'codec') codecs.set(entry.id, entry.mimeType);
    });
    report.forEach((entry) => {
      if (entry.type === 'candidate-pair' && entry.nominated && entry.state === 'succeeded') {
        if (entry.currentRoundTripTime !== undefined) out.rttMs = entry.currentRoundTripTime * 1000;
      } else if (entry.type === 'inbound-rtp') {
        out.packetsLost += Math.max(0, entry.packetsLost || 0);
        out.packetsReceived += entry.packetsReceived || 0;
        if (entry.kind === 'video') {
          out.framesDecoded += entry.framesDecoded || 0;
          out.videoCodec = codecs.get(entry.codecId) || out.videoCodec;
        }
      }
    });
    return out;
  }

  close() {
    if (this._closed) return;
    this._closed = true;
    this._teardown();
    this._setState('closed');
  }

  // --- inside ---------------------------------------------------------------------------------

  _build() {
    const pc = new RTCPeerConnection({iceServers: this.iceServers, bundlePolicy: 'max-bundle'});
    this.pc = pc;
    const generation = this.generation;
    pc.onicecandidate = ({candidate}) => {
      if (this.pc !== pc) return;
      this._send({kind: 'candidate', candidate: candidate ? candidate.toJSON() : null, generation});
    };
    pc.ontrack = ({track}) => {
      if (this.pc !== pc) return;
      for (const old of this.remoteStream.getTracks()) {
        if (old.kind === track.kind) this.remoteStream.removeTrack(old);
      }
      this.remoteStream.addTrack(track);
      this.dispatchEvent(new CustomEvent('track', {detail: {track, stream: this.remoteStream}}));
    };
    pc.onconnectionstatechange = () => {
      if (this.pc !== pc) return;
      this._onConnectionState(pc.connectionState);
    };
  }

  _teardown() {
    clearTimeout(this._restartTimer);
    this._restartTimer = null;
    this._pending = [];
    if (this.pc) {
      const pc = this.pc;
      this.pc = null;
      pc.onicecandidate = pc.ontrack = pc.onconnectionstatechange = null;
      pc.close();
    }
  }

  _onConnectionState(state) {
    this._setState(state);
    clearTimeout(this._restartTimer);
    this._restartTimer = null;
    if (!this.offerer) return;
    if (state === 'failed') {
      this.restart().catch((err) => this.log.warn(`${this.name}: restart failed: ${err.message}`));
    } else if (state === 'disconnected') {
      this._restartTimer = setTimeout(() => {
        if (this.pc?.connectionState === 'disconnected') {
          this.restart().catch((err) => this.log.warn(`${this.name}: restart failed: ${err.message}`));
        }
      }, RESTART_AFTER_DISCONNECTED_MS);
    }
  }

  async _offer(kind) {
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    this._send({kind, sdp: this.pc.localDescription.sdp, generation: this.generation});
  }

  async _answer(signal) {
    const fresh = signal.kind === 'restart' || !this.pc || this.pc.signalingState === 'closed';
    if (fresh) this._renew(signal);
    try {
      await this.pc.setRemoteDescription({type: 'offer', sdp: signal.sdp});
    } catch (err) {
      if (fresh) throw err;
      // A peer that rebuilt its connection but called it an offer: start afresh too.
      this.log.info(`${this.name}: offer does not fit the old connection (${err.message})`);
      this._renew(signal);
      await this.pc.setRemoteDescription({type: 'offer', sdp: signal.sdp});
    }
    const pc = this.pc;
    for (const transceiver of pc.getTransceivers()) {
      if (transceiver.stopped || transceiver.currentDirection) continue;
      const kind = transceiver.receiver.track.kind;
      const track = this.media?.track(kind) || null;
      if (track) {
        await transceiver.sender.replaceTrack(this.media.sendingTrack(kind));
        if (this.media.stream) transceiver.sender.setStreams(this.media.stream);
        transceiver.direction = 'sendrecv';
      } else {
        transceiver.direction = 'recvonly';
      }
      if (kind === 'video') applyCodecPreferences(transceiver, this.log);
    }
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    this._send({kind: 'answer', sdp: pc.localDescription.sdp, generation: this.generation});
    await this._flushCandidates();
    await this.updateTracks();
  }

  // Both sides offered (two joins raced). The smaller participant id keeps its offer; the
  // larger one gives its own up and answers. Returns true when the incoming offer is ignored.
  _glare(signal) {
    if (signal.kind !== 'offer' || !this.offerer || this.pc?.signalingState !== 'have-local-offer') {
      return false;
    }
    if (this.localId < this.sessionId) {
      this.log.info(`${this.name}: both offered; keeping ours`);
      return true;
    }
    this.log.info(`${this.name}: both offered; answering theirs`);
    this.offerer = false;
    this._teardown();
    return false;
  }

  _renew(signal) {
    const had = this.pc !== null;
    if (had) this.log.info(`${this.name}: peer restarted the connection`);
    this._teardown();
    if (typeof signal.generation === 'number') this.generation = signal.generation;
    else if (had) this.generation += 1;
    this._build();
  }

  async _flushCandidates() {
    const pending = this._pending;
    this._pending = [];
    for (const candidate of pending) await this._addCandidate(candidate);
  }

  async _addCandidate(candidate) {
    try {
      await this.pc.addIceCandidate(candidate || undefined);
    } catch (err) {
      this.log.debug(`${this.name}: candidate ignored: ${err.message}`);
    }
  }

  _send(signal) {
    this._signal(this.sessionId, signal);
  }

  _setState(state) {
    if (state === this.state) return;
    const old = this.state;
    this.state = state;
    this.log.info(`${this.name} ${old} -> ${state}`);
    this.dispatchEvent(new CustomEvent('state', {detail: {old, state}}));
  }
}
