"""The one join script for the probe page (``/probe.html``, served with ``test_pages=True``):
the call module and the block-code reader are on ``window.appliance``; the script opens a
connection, joins a call and leaves what a test reads on ``window.probe``.

``page.evaluate(JOIN_JS, {"apiKey", "token", "callId", "media", "keep"})``:

- ``media``: ``LocalMedia.open`` options (``{"audio": True, "video": False}``), or ``None`` to
  join receive-only;
- ``keep``: read the block code of the received video, keeping that many codes
  (``window.probe.reader``), or ``None`` for no reader.

It returns ``{"sessionId", "joinAt"}`` (``joinAt``: epoch ms just before the join request).
``window.probe`` holds ``call``, ``connection``, ``reader``, ``tracks`` (tracks received),
``reconnects`` (WebSocket reconnects), ``joinAt`` and ``joinedAt`` (epoch ms of the ``joined``
event).
"""

from __future__ import annotations

JOIN_JS = """
async ({apiKey, token, callId, media = null, keep = null}) => {
  const A = window.appliance;
  const now = () => performance.timeOrigin + performance.now();
  const connection = new A.Connection({apiKey, token});
  await connection.open();
  const call = new A.Call(connection, 'default', callId);
  const reader = keep === null ? null : new A.FrameCodeReader(A.video, {keep});
  const probe = {call, connection, reader, tracks: 0, reconnects: 0, joinAt: 0, joinedAt: 0};
  window.probe = probe;
  connection.addEventListener('reconnected', () => { probe.reconnects += 1; });
  call.addEventListener('joined', () => { probe.joinedAt = now(); });
  call.addEventListener('track', (e) => {
    probe.tracks += 1;
    if (e.detail.track.kind !== 'video' || reader === null) return;
    A.video.srcObject = e.detail.stream;
    reader.start();
  });
  const local = media === null ? null : await A.LocalMedia.open(media);
  probe.joinAt = now();
  await call.join({create: true, media: local});
  return {sessionId: call.sessionId, joinAt: probe.joinAt};
}
"""
