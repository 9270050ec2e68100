"""Headless Chromium inside a network namespace, as the receiver of our kiosk and as the
Chromium <-> Chromium anchor of bench/network.py (issue #16).

Playwright runs in the caller's namespace; only the browser process moves: Playwright starts
a two-line wrapper that does ``ip netns exec <ns> /usr/bin/chromium "$@"`` (``ip`` switches the
namespace and execs the browser in place, so Playwright's pipe to it and its process id stay
the same). Every socket the browser opens, its peer connections included, lives in ``ns``.

::

    async with async_playwright() as pw:
        browser = await chromium_in(pw, net.b, tmp)       # Debian's /usr/bin/chromium in b
        page = await open_probe(browser, base_url)          # the server's probe.html
        await page.evaluate(JOIN_JS, {..., "keep": 100000}) # receive-only join (probejs.py)
        stats = await page.evaluate(CALL_STATS_JS)          # getStats of its peer connection(s)

The anchor: :data:`ANCHOR_SEND_JS` draws the ``test`` source's picture (the same stripes and
the same block code, appliance/media/sources/blockcode.py) on a canvas, captures it at 30 fps
with a 440 Hz tone and sends it as H.264 with a bitrate cap; :data:`ANCHOR_RECV_JS` receives it
and reads the block code like the kiosk's receiver does. The two exchange complete offers and
answers through the caller (no trickle): see :func:`anchor_call`.

Chromium's host candidates are plain addresses here (``WebRtcHideLocalIpsWithMdns`` off): the
pages have no camera permission and mDNS names do not resolve between two namespaces.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.netns import Namespace, VethPair

EXTRA_ARGS = ["--disable-features=WebRtcHideLocalIpsWithMdns"]


def default_routes(net: VethPair) -> None:
    """A default route over the veth in both namespaces. Chromium gathers host candidates only
    on the interface of its default route when the page has no camera permission (without one it
    offers no candidate at all, and two Chromiums cannot connect)."""
    for ns in (net.a, net.b):
        done = ns.run(["ip", "route", "replace", "default", "dev", ns.interface])
        if done.returncode != 0:
            raise RuntimeError(f"ip route in {ns.name} failed: {done.stderr.strip()}")


def _wrapper(ns: Namespace, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / f"chromium-in-{ns.name}"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns.name} {CHROMIUM} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


async def chromium_in(playwright: Any, ns: Namespace, folder: Path) -> Any:
    """Debian's Chromium, headless, its process inside namespace ``ns``."""
    wrapper = _wrapper(ns, folder)
    return await playwright.chromium.launch(
        executable_path=str(wrapper), headless=True, args=[*CHROMIUM_ARGS, *EXTRA_ARGS]
    )


async def open_probe(browser: Any, base_url: str) -> Any:
    """A page on the server's probe.html (call.js and the block-code reader on window.appliance;
    the server runs with ``test_pages=True``)."""
    context = await browser.new_context(viewport={"width": 800, "height": 600})
    page = await context.new_page()
    await page.goto(f"{base_url}/probe.html")
    await page.wait_for_function("() => window.appliance !== undefined", timeout=5000)
    return page


# The figures of one RTCPeerConnection's getStats: inbound video and audio, the selected path.
_PC_STATS = """
async function pcStats(pc) {
  const out = {video: null, audio: null, path: null, codec: null};
  if (!pc) return out;
  const report = await pc.getStats();
  const pairs = [];
  report.forEach((s) => {
    if (s.type === 'inbound-rtp' && (s.kind === 'video' || s.kind === 'audio')) {
      out[s.kind] = {
        packetsReceived: s.packetsReceived || 0, packetsLost: s.packetsLost || 0,
        framesDecoded: s.framesDecoded || 0, framesReceived: s.framesReceived || 0,
        framesDropped: s.framesDropped || 0, freezeCount: s.freezeCount || 0,
        totalFreezesDuration: s.totalFreezesDuration || 0, pauseCount: s.pauseCount || 0,
        jitterBufferDelay: s.jitterBufferDelay || 0,
        jitterBufferEmittedCount: s.jitterBufferEmittedCount || 0,
        concealedSamples: s.concealedSamples || 0, totalSamplesReceived: s.totalSamplesReceived || 0,
        nackCount: s.nackCount || 0, pliCount: s.pliCount || 0, firCount: s.firCount || 0,
        keyFramesDecoded: s.keyFramesDecoded || 0, frameWidth: s.frameWidth || 0,
        framesPerSecond: s.framesPerSecond || 0, bytesReceived: s.bytesReceived || 0,
        codecId: s.codecId || null,
      };
    }
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pairs.push(s);
  });
  if (out.video && out.video.codecId) {
    const codec = report.get(out.video.codecId);
    out.codec = codec ? codec.mimeType : null;
  }
  if (pairs.length) {
    const local = report.get(pairs[0].localCandidateId);
    const remote = report.get(pairs[0].remoteCandidateId);
    out.path = {local: local && local.candidateType, remote: remote && remote.candidateType};
  }
  return out;
}
"""

# getStats of the probe's call: the (single) peer connection to the kiosk.
CALL_STATS_JS = f"""
async () => {{
  {_PC_STATS}
  const peers = [...window.probe.call.peers.values()].filter((p) => p.pc);
  const out = await pcStats(peers.length ? peers[0].pc : null);
  out.at = Date.now();
  out.peers = peers.length;
  out.pcId = peers.length ? (peers[0].pc.__id ||= Math.random()) : null;
  return out;
}}
"""

# getStats of the anchor's receiving peer connection.
ANCHOR_STATS_JS = f"""
async () => {{
  {_PC_STATS}
  const out = await pcStats(window.anchor.pc);
  out.at = Date.now();
  out.peers = 1;
  out.pcId = 1;
  return out;
}}
"""

# Codes read so far: [counter, shownAt epoch ms, glass-to-glass ms] (probe or anchor reader).
CODES_JS = """
(from) => {
  const reader = (window.anchor || window.probe).reader;
  return reader.codes.slice(from).map((c) => [c.counter, c.shownAt, c.ageMs]);
}
"""

ANCHOR_SEND_JS = """
async ({width, height, fps, maxBitrate, iceServers}) => {
  const A = window.appliance;
  // The test source's picture: diagonal grey stripes moving 4 px a picture, the block code on top.
  const canvas = document.createElement('canvas');
  canvas.width = width; canvas.height = height;
  const ctx = canvas.getContext('2d', {willReadFrequently: false});
  const strip = document.createElement('canvas');
  strip.width = 2 * width; strip.height = height;
  const sctx = strip.getContext('2d');
  const img = sctx.createImageData(2 * width, height);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < 2 * width; x += 1) {
      const v = ((x + 2 * y) * 3) % 200 + 28;
      const i = (y * 2 * width + x) * 4;
      img.data[i] = v; img.data[i + 1] = v; img.data[i + 2] = v; img.data[i + 3] = 255;
    }
  }
  sctx.putImageData(img, 0, 0);
  let counter = 0;
  const bytes = new Uint8Array(9);
  const view = new DataView(bytes.buffer);
  function draw() {
    const shift = (counter * 4) % width;
    ctx.drawImage(strip, shift, 0, width, height, 0, 0, width, height);
    view.setUint32(0, counter >>> 0);
    view.setUint32(4, Date.now() % 2 ** 32);
    bytes[8] = A.crc8(bytes.subarray(0, 8));
    for (let r = 0; r < A.ROWS; r += 1) {
      for (let c = 0; c < A.COLUMNS; c += 1) {
        ctx.fillStyle = (bytes[r] >> (7 - c)) & 1 ? '#fff' : '#000';
        ctx.fillRect(c * A.CELL, r * A.CELL, A.CELL, A.CELL);
      }
    }
    counter += 1;
  }
  const stream = canvas.captureStream(0);
  const video = stream.getVideoTracks()[0];
  const started = performance.now();
  // Paced like a camera: one picture per 1/fps, drawn and pushed at once (no maxFramerate on the
  // encoding: its frame-rate limiter would drop pictures that a late timer brings a little early).
  (function tick() {
    draw();
    video.requestFrame();
    const next = started + counter * 1000 / fps;
    setTimeout(tick, Math.max(0, next - performance.now()));
  })();
  const audioContext = new AudioContext({sampleRate: 48000});
  const tone = audioContext.createOscillator();
  tone.frequency.value = 440;
  const gain = audioContext.createGain();
  gain.gain.value = 0.3;
  const sink = audioContext.createMediaStreamDestination();
  tone.connect(gain).connect(sink);
  tone.start();
  await audioContext.resume();
  const pc = new RTCPeerConnection({iceServers});
  const vt = pc.addTransceiver(video, {direction: 'sendonly', streams: [stream]});
  pc.addTransceiver(sink.stream.getAudioTracks()[0], {direction: 'sendonly', streams: [stream]});
  const h264 = RTCRtpSender.getCapabilities('video').codecs.filter(
    (c) => c.mimeType === 'video/H264' && /packetization-mode=1/.test(c.sdpFmtpLine || ''));
  const rest = RTCRtpSender.getCapabilities('video').codecs.filter(
    (c) => !(c.mimeType === 'video/H264'));
  h264.sort((a, b) => (/42e01f/.test(b.sdpFmtpLine) ? 1 : 0) - (/42e01f/.test(a.sdpFmtpLine) ? 1 : 0));
  if (!h264.length) throw new Error('no H.264 encoder in this Chromium');
  // H.264 only, plus RTX/RED/FEC entries (the non-media codecs) so that NACK/RTX stay negotiated.
  vt.setCodecPreferences([...h264, ...rest.filter((c) => /rtx|red|ulpfec/i.test(c.mimeType))]);
  const params = vt.sender.getParameters();
  params.encodings = params.encodings.length ? params.encodings : [{}];
  params.encodings[0].maxBitrate = maxBitrate;
  // Same resolution as the kiosk: under a thin link Chromium lowers the frame rate, not the size.
  params.degradationPreference = 'maintain-resolution';
  await vt.sender.setParameters(params);
  window.anchorSender = {pc, canvas, video, sender: vt.sender, frames: () => counter};
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') resolve();
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    });
  });
  return pc.localDescription.sdp;
}
"""

ANCHOR_ANSWER_JS = """
async ({sdp, iceServers}) => {
  const A = window.appliance;
  const pc = new RTCPeerConnection({iceServers});
  const reader = new A.FrameCodeReader(A.video, {keep: 100000});
  window.anchor = {pc, reader, tracks: 0, startAt: Date.now()};
  pc.addEventListener('track', (e) => {
    window.anchor.tracks += 1;
    if (e.track.kind !== 'video') return;
    A.video.srcObject = e.streams[0] || new MediaStream([e.track]);
    reader.start();
  });
  await pc.setRemoteDescription({type: 'offer', sdp});
  await pc.setLocalDescription(await pc.createAnswer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') resolve();
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    });
  });
  return pc.localDescription.sdp;
}
"""

ANCHOR_FINISH_JS = """
async (sdp) => {
  await window.anchorSender.pc.setRemoteDescription({type: 'answer', sdp});
  const s = window.anchorSender.sender.getParameters();
  return {maxBitrate: s.encodings[0].maxBitrate};
}
"""

# What the anchor's sender really sent: encoder, bitrate, resolution, and why it limited itself.
ANCHOR_SENDER_STATS_JS = """
async () => {
  const report = await window.anchorSender.pc.getStats();
  let out = null;
  report.forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out = {bytesSent: s.bytesSent, packetsSent: s.packetsSent, framesEncoded: s.framesEncoded,
             frameWidth: s.frameWidth, frameHeight: s.frameHeight,
             encoderImplementation: s.encoderImplementation,
             qualityLimitationReason: s.qualityLimitationReason,
             retransmittedPacketsSent: s.retransmittedPacketsSent, nackCount: s.nackCount,
             pliCount: s.pliCount, targetBitrate: s.targetBitrate,
             framesPerSecond: s.framesPerSecond, framesDrawn: window.anchorSender.frames()};
      const codec = report.get(s.codecId);
      out.codec = codec ? codec.mimeType : null;
    }
  });
  return out;
}
"""


async def anchor_call(sender_page: Any, receiver_page: Any, *, width: int, height: int, fps: int,
                      max_bitrate: int, ice_servers: list[dict[str, Any]] | None = None) -> None:  # fmt: skip
    """Chromium (sender_page) -> Chromium (receiver_page): one offer, one answer, full SDPs."""
    servers = ice_servers or []
    offer = await sender_page.evaluate(
        ANCHOR_SEND_JS,
        {"width": width, "height": height, "fps": fps, "maxBitrate": max_bitrate,
         "iceServers": servers},
    )  # fmt: skip
    answer = await receiver_page.evaluate(ANCHOR_ANSWER_JS, {"sdp": offer, "iceServers": servers})
    await sender_page.evaluate(ANCHOR_FINISH_JS, answer)
