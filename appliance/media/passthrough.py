"""Video passthrough: one encoder feeds every peer with ready H.264 packets, no re-encoding.

:class:`VideoFanout` takes the source's access units and offers each to one
:class:`PassthroughTrack` per peer. A track's ``recv()`` returns an ``av.Packet`` (one Annex-B access
unit with ``pts``/``time_base``), which aiortc packetizes as is. Each track has a small bounded
queue: it drops everything until its first keyframe, and when the queue is full it drops to the next
keyframe (a P-frame alone is useless to a decoder). The fanout's :class:`~appliance.media.gate.Valve`
is open only while the gate is open and the camera is not muted: while it is closed nothing reaches
any track, what was queued is dropped, and a track hands nothing to its sender, whatever aiortc
negotiates meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import cast

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from appliance.clock import Clock
from appliance.media.congestion import BitrateController
from appliance.media.gate import Valve
from appliance.media.keyframes import KeyframeLimiter
from appliance.media.sources.base import EncodedFrame, VideoSource

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_FRAMES = 30


class PassthroughTrack(MediaStreamTrack):
    """The video track of one peer; ``recv()`` returns ``av.Packet``."""

    kind = "video"

    def __init__(self, fanout: VideoFanout, name: str, max_queue: int) -> None:
        super().__init__()
        self.name = name
        self._fanout = fanout
        self._queue: deque[EncodedFrame] = deque()
        self._max_queue = max_queue
        self._ready = asyncio.Event()
        self._waiting_keyframe = True
        self.active = False
        self.on_first_packet: Callable[[PassthroughTrack, EncodedFrame], None] | None = None
        self.packets_offered = 0
        self.packets_sent = 0
        self.keyframes_sent = 0
        self.packets_dropped = 0
        self.overflows = 0
        self.first_packet_keyframe: bool | None = None
        self.last_sent: EncodedFrame | None = None

    def offer(self, frame: EncodedFrame) -> None:
        """Called by the fanout on the loop for every access unit of the source."""
        if self.readyState != "live" or not self.active:
            return
        self.packets_offered += 1
        if self._waiting_keyframe and not frame.keyframe:
            self.packets_dropped += 1
            return
        if len(self._queue) >= self._max_queue:
            # Back-pressure: drop everything queued and wait for the next keyframe.
            self.overflows += 1
            self.packets_dropped += len(self._queue)
            self._queue.clear()
            logger.info("%r queue full, dropping to the next keyframe", self)
            if not frame.keyframe:
                self.packets_dropped += 1
                self._waiting_keyframe = True
                self._fanout.request_keyframe(f"{self.name} overflow")
                return
        self._waiting_keyframe = False
        self._queue.append(frame)
        self._ready.set()

    def activate(self) -> None:
        """The peer is connected: start from a fresh keyframe (nothing stale is queued)."""
        self.restart()
        if not self.active:
            self.active = True
            logger.debug("%r active", self)
        self._fanout.request_keyframe(f"{self.name} connected", urgent=True)

    def restart(self) -> None:
        """Forget queued packets and start again from a keyframe (gate or mute changed)."""
        self.packets_dropped += len(self._queue)
        self._queue.clear()
        self._waiting_keyframe = True

    async def next_frame(self) -> EncodedFrame:
        valve = self._fanout.valve
        valve.idle(self)  # aiortc asks for the next frame once the last one is sent
        while not self._queue or not valve.open:
            if self.readyState != "live":
                raise MediaStreamError
            if not valve.open:
                self.restart()  # queued before the valve closed: never sent after
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        frame = self._queue.popleft()
        valve.passed(self)
        self.packets_sent += 1
        if frame.keyframe:
            self.keyframes_sent += 1
        self.last_sent = frame
        if self.first_packet_keyframe is None:
            self.first_packet_keyframe = frame.keyframe
            logger.info("%r first packet out (keyframe=%s)", self, frame.keyframe)
            if self.on_first_packet is not None:
                self.on_first_packet(self, frame)
        return frame

    async def recv(self) -> av.Packet:  # type: ignore[override]
        frame = await self.next_frame()
        packet = av.Packet(frame.data)
        packet.pts = frame.pts
        packet.time_base = frame.time_base
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            self._fanout.detach(self)
        super().stop()
        self._fanout.valve.idle(self)
        self._ready.set()

    def __repr__(self) -> str:
        return (
            f"PassthroughTrack({self.name}, sent={self.packets_sent}, "
            f"dropped={self.packets_dropped}, queued={len(self._queue)})"
        )


class DecodedVideoTrack(PassthroughTrack):
    """For a peer without H.264: decodes our packets so aiortc's own encoder can re-encode them."""

    def __init__(self, fanout: VideoFanout, name: str, max_queue: int) -> None:
        super().__init__(fanout, name, max_queue)
        self._decoder = cast(av.VideoCodecContext, av.CodecContext.create("h264", "r"))

    def _decode(self, frame: EncodedFrame) -> list[av.VideoFrame]:
        packet = av.Packet(frame.data)
        packet.pts = frame.pts
        packet.time_base = frame.time_base
        try:
            decoded = list(self._decoder.decode(packet))
        except av.FFmpegError:
            return []
        for picture in decoded:
            picture.pts = frame.pts
            picture.time_base = frame.time_base
        return [p for p in decoded if isinstance(p, av.VideoFrame)]

    async def recv(self) -> av.VideoFrame:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        while True:
            frame = await self.next_frame()
            pictures = await loop.run_in_executor(None, self._decode, frame)
            if pictures and self._fanout.valve.open:  # (it may have closed while decoding)
                return pictures[-1]


class VideoFanout:
    """One source, many peers: the gate, camera mute, and keyframe requests live here."""

    def __init__(
        self,
        source: VideoSource,
        *,
        max_queue: int = DEFAULT_QUEUE_FRAMES,
        keyframe_interval: float = 0.3,
        clock: Clock | None = None,
        gate_open: bool = False,
    ) -> None:
        self.source = source
        self._max_queue = max_queue
        self._tracks: list[PassthroughTrack] = []
        self._gate_open = gate_open
        self._paused = False
        self.valve = Valve("video", type(source).__name__)
        self.valve.set(gate_open, "gate open")
        self.limiter = KeyframeLimiter(
            source.request_keyframe,
            min_interval=keyframe_interval,
            clock=clock,
            name=type(source).__name__,
        )
        self.bitrate = BitrateController(source, clock=clock)
        """Receiver feedback (REMB, loss, RTT) to the source's bitrate; counts NACK/PLI too."""
        self.frames_in = 0
        self.frames_held = 0
        source.add_sink(self._on_frame)

    @property
    def tracks(self) -> list[PassthroughTrack]:
        return list(self._tracks)

    @property
    def gate_open(self) -> bool:
        return self._gate_open

    @property
    def paused(self) -> bool:
        return self._paused

    def track(self, name: str, *, decoded: bool = False) -> PassthroughTrack:
        """A new track for one peer; it takes packets once :meth:`PassthroughTrack.activate`d."""
        cls = DecodedVideoTrack if decoded else PassthroughTrack
        track = cls(self, name, self._max_queue)
        self._tracks.append(track)
        return track

    def detach(self, track: PassthroughTrack) -> None:
        if track in self._tracks:
            self._tracks.remove(track)

    def open_gate(self) -> None:
        if self._gate_open:
            return
        self._gate_open = True
        logger.info("%r gate closed -> open", self)
        self._update("gate opened")

    def close_gate(self) -> None:
        if self._gate_open:
            self._gate_open = False
            logger.info("%r gate open -> closed", self)
            self._update("gate closed")

    def pause(self) -> None:
        """Camera mute: stop sending (no packets at all, not a blank picture)."""
        if not self._paused:
            self._paused = True
            logger.info("%r camera sending -> paused", self)
            self._update("camera muted")

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            logger.info("%r camera paused -> sending", self)
            self._update("camera unmuted")

    def request_keyframe(self, reason: str, *, urgent: bool = False) -> None:
        try:
            self.limiter.request(reason, urgent=urgent)
        except RuntimeError:
            # No running loop (called during teardown from a sync context): nothing to send to.
            pass

    @property
    def _flowing(self) -> bool:
        return self._gate_open and not self._paused

    def _update(self, reason: str) -> None:
        """Every track starts again from a fresh keyframe: nothing queued before a change is sent
        after it (closing) and the far end can decode at once (opening)."""
        self.valve.set(self._flowing, reason)
        for track in self._tracks:
            track.restart()
        if self._flowing and any(t.active for t in self._tracks):
            # Rare (the daemon opens the gate or unmutes once): never deferred by the PLI limit.
            self.request_keyframe(reason, urgent=True)

    def _on_frame(self, frame: EncodedFrame) -> None:
        self.frames_in += 1
        if not self._flowing:
            self.frames_held += 1
            return
        self.bitrate.sent(len(frame.data))
        for track in list(self._tracks):
            track.offer(frame)

    def close(self) -> None:
        self.source.remove_sink(self._on_frame)
        self.limiter.close()
        for track in list(self._tracks):
            track.stop()

    def __repr__(self) -> str:
        gate = "open" if self._gate_open else "closed"
        return f"VideoFanout({self.source!r}, gate {gate}, {len(self._tracks)} peers)"
