"""``CallMedia``: the one object per call the daemon sees.

Start it with the call's signaling and the sources; it joins, keeps one :class:`Peer` per remote
participant (the newcomer offers, everyone else waits for offers), holds every outgoing packet until
the daemon opens the gate, mutes by not sending, and reports peer connected / disconnected / failed /
left and the first video packet sent. Peer connections do not depend on the server: when the server
link drops, media keeps flowing and only new signaling waits.

Gate and mute act on our own tracks (:mod:`appliance.media.gate`): one valve for the microphone,
one (the fanout's) for the camera. Every peer connection of every generation gets its tracks from
them, so no offer, answer or ICE restart can send what a closed valve withholds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError

from appliance.errors import MediaError
from appliance.media.gate import DRAIN_TIMEOUT, GatedTrack, Valve
from appliance.media.passthrough import PassthroughTrack, VideoFanout
from appliance.media.peer import Peer
from appliance.media.signalingport import JoinInfo, Signaling, SignalingEvent
from appliance.media.sources.base import EncodedFrame, VideoSource

logger = logging.getLogger(__name__)

TrackHandler = Callable[[MediaStreamTrack], Any]


@dataclass(frozen=True)
class MediaEvent:
    kind: str
    """``peer.connected`` | ``peer.disconnected`` | ``peer.failed`` | ``peer.left`` |
    ``first_packet`` | ``call.ended``."""
    peer: str | None = None
    detail: dict[str, Any] | None = None


class CallMedia:
    def __init__(
        self,
        signaling: Signaling,
        *,
        video: VideoSource | None = None,
        audio: MediaStreamTrack | None = None,
        on_audio: TrackHandler | None = None,
        on_video: TrackHandler | None = None,
        receive_video: bool = False,
        gate_open: bool = False,
        stall_timeout: float = 5.0,
        restart_timeout: float = 2.0,
        name: str = "call",
    ) -> None:
        self.name = name
        self._signaling = signaling
        self.video = video
        self.audio = audio
        self._on_audio = on_audio
        self._on_video = on_video
        self.receive_video = receive_video
        self.fanout = VideoFanout(video, gate_open=gate_open) if video is not None else None
        self._gate_open = gate_open
        self._relay = MediaRelay()
        self.audio_valve = Valve("audio", name)
        self.audio_valve.set(gate_open, "gate open")
        self.microphone_muted = False
        self.camera_muted = False
        self.stall_timeout = stall_timeout
        self.restart_timeout = restart_timeout
        self.peers: dict[str, Peer] = {}
        self.session_id: str | None = None
        self.join_info: JoinInfo | None = None
        self.history: list[MediaEvent] = []
        self._listeners: list[Callable[[MediaEvent], Any]] = []
        self._pending: list[SignalingEvent] = []
        self._unlisten: Callable[[], None] | None = None
        self._drains: set[asyncio.Task[None]] = set()
        self._started_video = False
        self._state = "idle"

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> JoinInfo:
        if self._state != "idle":
            raise MediaError(f"{self!r} already started")
        self._set_state("joining")
        # Listen before joining: an offer may arrive before the join response does.
        self._unlisten = self._signaling.listen(self._on_signaling)
        if self.video is not None and not self.video.running:
            await self.video.start()
            self._started_video = True
        try:
            info = await self._signaling.join()
        except Exception:
            await self._teardown()
            self._set_state("idle")
            raise
        self.join_info = info
        self.session_id = info.session_id
        self._set_state("joined")
        for remote in info.participants:
            await self._peer(remote, offerer=True).start()
        pending, self._pending = self._pending, []
        for event in pending:
            self._on_signaling(event)
        return info

    async def stop(self) -> None:
        """Leave the call and close every peer; idempotent."""
        if self._state in ("idle", "stopped"):
            return
        self._set_state("leaving")
        await self._teardown()
        try:
            await self._signaling.leave()
        except Exception as err:
            # The server may be unreachable; the participant times out there.
            logger.warning("%r leave failed: %s", self, err)
        self._set_state("stopped")

    async def _teardown(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        for peer in list(self.peers.values()):
            await peer.close()
        self.peers.clear()
        for task in list(self._drains):
            task.cancel()
        if self.fanout is not None:
            self.fanout.close()
        if self.video is not None and self._started_video:
            await self.video.stop()

    async def __aenter__(self) -> CallMedia:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- controls ------------------------------------------------------------------------

    @property
    def gate_open(self) -> bool:
        return self._gate_open

    def open_gate(self) -> None:
        """Let media leave the device (auto-answer: after the camera-live LED is on)."""
        if not self._gate_open:
            self._gate_open = True
            logger.info("%r gate closed -> open", self)
            if self.fanout is not None:
                self.fanout.open_gate()
            self._apply_audio("gate opened")

    def close_gate(self) -> None:
        if self._gate_open:
            self._gate_open = False
            logger.info("%r gate open -> closed", self)
            if self.fanout is not None:
                self.fanout.close_gate()
            self._apply_audio("gate closed")

    def mute_microphone(self, muted: bool = True) -> None:
        if muted != self.microphone_muted:
            self.microphone_muted = muted
            logger.info("%r microphone %s", self, "muted" if muted else "live")
            self._apply_audio("microphone muted" if muted else "microphone live")

    def mute_camera(self, muted: bool = True) -> None:
        if muted != self.camera_muted:
            self.camera_muted = muted
            logger.info("%r camera %s", self, "muted" if muted else "live")
            if self.fanout is not None:
                if muted:
                    self.fanout.pause()
                else:
                    self.fanout.resume()

    def _apply_audio(self, reason: str) -> None:
        self.audio_valve.set(self._gate_open and not self.microphone_muted, reason)

    @property
    def sending(self) -> dict[str, bool]:
        """Which kinds may leave the device now (gate open and not muted)."""
        video = self.fanout is not None and self.fanout.valve.open
        return {"audio": self.audio is not None and self.audio_valve.open, "video": video}

    async def quiet(self, within: float = DRAIN_TIMEOUT) -> bool:
        """Return once nothing let through before the last close or mute is still on its way out
        (at most ``within`` seconds; ``False`` if a sender was stuck that long)."""
        valves = [self.audio_valve] + ([self.fanout.valve] if self.fanout is not None else [])
        done = await asyncio.gather(*(v.drained(within) for v in valves))
        return all(done)

    # -- events --------------------------------------------------------------------------

    def add_listener(self, listener: Callable[[MediaEvent], Any]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, event: MediaEvent) -> None:
        self.history.append(event)
        logger.info("%r %s %s", self, event.kind, event.peer or "")
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("%r listener failed on %s", self, event.kind)

    def _set_state(self, state: str) -> None:
        old, self._state = self._state, state
        logger.info("%r %s -> %s", self, old, state)

    # -- peers ---------------------------------------------------------------------------

    def _peer(self, remote: str, *, offerer: bool) -> Peer:
        peer = Peer(
            remote,
            offerer=offerer,
            local=self.session_id or "",
            send=lambda signal: self._signaling.send(remote, signal),
            ice_servers=self.join_info.ice_servers if self.join_info else [],
            fanout=self.fanout,
            audio=self._audio_track,
            receive_video=self.receive_video,
            on_state=self._peer_state,
            on_track=self._peer_track,
            on_first_packet=self._first_packet,
            stall_timeout=self.stall_timeout,
            restart_timeout=self.restart_timeout,
        )
        self.peers[remote] = peer
        return peer

    def _audio_track(self) -> MediaStreamTrack | None:
        """The microphone for one new peer connection, behind the call's audio valve."""
        if self.audio is None:
            return None
        return GatedTrack(self._relay.subscribe(self.audio, buffered=False), self.audio_valve)

    def _peer_state(self, peer: Peer, old: str, state: str) -> None:
        if state in ("connected", "disconnected", "failed"):
            self._emit(MediaEvent(f"peer.{state}", peer.remote, {"generation": peer.generation}))

    def _first_packet(self, peer: Peer, track: PassthroughTrack, frame: EncodedFrame) -> None:
        detail = {"keyframe": frame.keyframe, "generation": peer.generation}
        self._emit(MediaEvent("first_packet", peer.remote, detail))

    def _peer_track(self, peer: Peer, track: MediaStreamTrack) -> None:
        handler = self._on_audio if track.kind == "audio" else self._on_video
        if handler is not None:
            handler(track)
            return
        # Every received track is consumed, or aiortc's buffers grow without bound.
        task = asyncio.get_running_loop().create_task(_drain(track))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    def _on_signaling(self, event: SignalingEvent) -> None:
        if self._state == "joining":
            self._pending.append(event)
            return
        if self._state != "joined":
            return
        if event.kind == "signal" and event.sender and event.signal is not None:
            peer = self.peers.get(event.sender)
            if peer is None:
                if event.signal.get("kind") not in ("offer", "restart"):
                    return
                peer = self._peer(event.sender, offerer=False)
                asyncio.get_running_loop().create_task(peer.start())
            peer.deliver(event.signal)
        elif event.kind == "left" and event.sender in self.peers:
            peer = self.peers.pop(event.sender)
            asyncio.get_running_loop().create_task(peer.close())
            self._emit(MediaEvent("peer.left", peer.remote))
        elif event.kind == "ended":
            self._emit(MediaEvent("call.ended"))

    def stats(self) -> dict[str, Any]:
        """What tests and ``appliance status`` read."""
        return {
            "state": self._state,
            "gate_open": self._gate_open,
            "microphone_muted": self.microphone_muted,
            "camera_muted": self.camera_muted,
            "sending": self.sending,
            "peers": {
                remote: {
                    "state": peer.state,
                    "generation": peer.generation,
                    "restarts": peer.restarts,
                    "video_codec": peer.video_codec,
                    "video_packets_sent": peer.video_track.packets_sent if peer.video_track else 0,
                }
                for remote, peer in self.peers.items()
            },
        }

    def __repr__(self) -> str:
        return f"CallMedia({self.name}, {self.session_id or '-'}, {self._state})"


async def _drain(track: MediaStreamTrack) -> None:
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()
