// The browser's own camera and microphone for a call.
//
// Without permission (or on a page that asks for none) the call runs receive-only: peers
// still get offers/answers with recvonly transceivers. Muting stops sending (the senders'
// tracks are swapped for null: no packets), it does not send silence or black frames; the
// track is disabled too, so a sender that still held it would carry no sound or picture.

export class LocalMedia extends EventTarget {
  constructor(stream = null) {
    super();
    this.stream = stream;
    this.enabled = {audio: true, video: true};
    this.error = null;
  }

  // want: {audio: bool, video: bool | MediaTrackConstraints}. Never rejects: a refusal leaves
  // a receive-only LocalMedia whose .error says why.
  static async open(want = {audio: true, video: true}) {
    const media = new LocalMedia();
    if (!want.audio && !want.video) return media;
    if (!navigator.mediaDevices?.getUserMedia) {
      media.error = 'camera and microphone need a secure page (HTTPS)';
      return media;
    }
    try {
      media.stream = await navigator.mediaDevices.getUserMedia({
        audio: want.audio ? {echoCancellation: true, noiseSuppression: true} : false,
        video: want.video ? (want.video === true ? {width: 640, height: 480} : want.video) : false,
      });
    } catch (err) {
      // One of the two may still be there (a laptop without a camera).
      if (want.audio && want.video) {
        const audioOnly = await LocalMedia.open({audio: true, video: false});
        if (audioOnly.stream) {
          audioOnly.error = `camera unavailable: ${err.message}`;
          return audioOnly;
        }
      }
      media.error = `${err.name}: ${err.message}`;
    }
    return media;
  }

  get receiveOnly() {
    return !this.stream || this.stream.getTracks().length === 0;
  }

  track(kind) {
    return this.stream ? this.stream.getTracks().find((t) => t.kind === kind) || null : null;
  }

  // The track to put on the wire: null while muted.
  sendingTrack(kind) {
    return this.enabled[kind] ? this.track(kind) : null;
  }

  setEnabled(kind, enabled) {
    this.enabled[kind] = Boolean(enabled);
    const track = this.track(kind);
    if (track) track.enabled = this.enabled[kind];
    this.dispatchEvent(new CustomEvent('change', {detail: {kind, enabled: this.enabled[kind]}}));
  }

  stop() {
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
  }
}
