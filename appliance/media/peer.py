"""One remote participant: an ``RTCPeerConnection`` per generation, over the call's signaling.

The side that sent the first offer of the pair (the newcomer) owns restarts: aiortc cannot restart
ICE in place, so an ICE restart is a fresh peer connection whose offer goes out as
``{"kind": "restart", "sdp", "generation"}``; the other side drops its old connection and answers
from a new one. A restart starts when the connection fails or when nothing at all (RTP, RTCP,
STUN) has arrived for ``stall_timeout`` seconds — aioice's consent check would take ~30 s — and is
retried until a connection is up again (the signaling may be down for part of that time too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.sdp import SessionDescription

from appliance.media.aiortc_compat import on_keyframe_request, on_retransmit, on_rtcp_feedback
from appliance.media.ice import MdnsCandidate, candidate_from_signal, received_packets
from appliance.media.liveness import Action, LinkWatch
from appliance.media.mdns import strip_mdns
from appliance.media.negotiation import needs_reencode, negotiated_codec, prefer_h264
from appliance.media.passthrough import PassthroughTrack, VideoFanout
from appliance.media.retransmit import RetransmitGate
from appliance.media.sources.base import EncodedFrame

logger = logging.getLogger(__name__)

Signal = dict[str, Any]
BURST_NACK = 10
"""A NACK naming this many packets at once asks the camera for a keyframe too."""
RESUME_SILENCE = 2.0
"""Feedback that comes back after this long without any (an outage ended) asks for a keyframe:
receivers send RTCP at least about once a second while media arrives."""
SignalSender = Callable[[Signal], Awaitable[None]]
StateListener = Callable[["Peer", str, str], None]
TrackListener = Callable[["Peer", MediaStreamTrack], None]
FirstPacketListener = Callable[["Peer", PassthroughTrack, EncodedFrame], None]


@dataclass(frozen=True)
class _Command:
    kind: str
    reason: str
    done: asyncio.Future[None]
    seen: tuple[int, str, str | None] | None = None
    """For a restart: the connection as it was when the restart was decided (see ``restart``)."""


class Peer:
    """States: new -> connecting -> connected -> (disconnected | failed) -> ... -> closed."""

    def __init__(
        self,
        remote: str,
        *,
        offerer: bool,
        local: str = "",
        send: SignalSender,
        ice_servers: list[RTCIceServer],
        fanout: VideoFanout | None = None,
        audio: Callable[[], MediaStreamTrack | None] | None = None,
        receive_video: bool = False,
        on_state: StateListener | None = None,
        on_track: TrackListener | None = None,
        on_first_packet: FirstPacketListener | None = None,
        stall_timeout: float = 5.0,
        restart_timeout: float = 2.0,
    ) -> None:
        self.remote = remote
        self.local = local
        self.offerer = offerer
        self._send = send
        self._ice_servers = ice_servers
        self._fanout = fanout
        self._audio = audio
        self.receive_video = receive_video
        self._on_state = on_state
        self._on_track = on_track
        self._on_first_packet = on_first_packet
        self.stall_timeout = stall_timeout
        self.restart_timeout = restart_timeout
        self.state = "new"
        self.generation = -1
        """The pair's generation on the wire: the offerer counts it up, the answerer adopts it."""
        self.connections = 0
        self.pc: RTCPeerConnection | None = None
        self.video_track: PassthroughTrack | None = None
        self.video_codec: str | None = None
        self.restarts = 0
        self.retransmits: RetransmitGate | None = None
        """The current connection's video retransmission policy (None without video to send)."""
        self._last_feedback: float | None = None
        self._mdns_dropped = 0
        # Signals and our own offers/restarts, handled one at a time by one task: only that task
        # replaces the peer connection.
        self._inbox: asyncio.Queue[Signal | _Command] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._closed = False

    # -- public --------------------------------------------------------------------------

    async def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work())
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        if self.offerer:
            await self._command("offer", "first offer")

    def deliver(self, signal: Signal) -> None:
        """A signal from the remote participant (handled in order on the peer's own task)."""
        if not self._closed:
            self._inbox.put_nowait(signal)

    async def close(self) -> None:
        """Idempotent."""
        if self._closed:
            return
        self._closed = True
        for task in (self._worker, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if isinstance(item, _Command) and not item.done.done():
                item.done.set_result(None)
        await self._close_pc()
        self._set_state("closed")

    # -- connection lifecycle ------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        old, self.state = self.state, state
        logger.info("%r %s -> %s", self, old, state)
        if self._on_state is not None:
            self._on_state(self, old, state)

    async def _close_pc(self) -> None:
        pc, self.pc = self.pc, None
        track, self.video_track = self.video_track, None
        if track is not None:
            track.stop()
        if self._fanout is not None:
            self._fanout.bitrate.forget(self.remote)
        if pc is not None:
            await pc.close()

    async def _new_pc(self, kinds: tuple[str, ...] = ("audio", "video")) -> RTCPeerConnection:
        """A fresh connection with our transceivers (answering: only the kinds the offer has)."""
        await self._close_pc()
        self.connections += 1
        self._mdns_dropped = 0
        number = self.connections
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
        self.pc = pc
        if "audio" in kinds:
            # The track withholds the microphone while gated or muted (CallMedia's valve): aiortc
            # enables every sender again whenever a description is applied.
            audio = self._audio() if self._audio is not None else None
            pc.addTransceiver(audio or "audio", direction="sendrecv")
        if "video" in kinds:
            if self._fanout is not None:
                self.video_track = self._fanout.track(f"{self.remote}#{number}")
                self.video_track.on_first_packet = self._first_packet
                direction = "sendrecv" if self.receive_video else "sendonly"
                video = pc.addTransceiver(self.video_track, direction=direction)
                on_keyframe_request(video.sender, self._keyframe_requested)
                on_rtcp_feedback(video.sender, self._feedback)
                fanout = self._fanout
                self.retransmits = RetransmitGate(
                    lambda: fanout.source.bitrate, on_unserved=self._nack_unserved
                )
                on_retransmit(video.sender, self._retransmit)
                self._last_feedback = None
            else:
                direction = "recvonly" if self.receive_video else "inactive"
                video = pc.addTransceiver("video", direction=direction)
            prefer_h264(video)

        @pc.on("connectionstatechange")
        def on_connection_state() -> None:
            if self.pc is pc:
                self._connection_changed(pc.connectionState)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if self.pc is pc and self._on_track is not None:
                self._on_track(self, track)

        self._set_state("connecting")
        return pc

    def _first_packet(self, track: PassthroughTrack, frame: EncodedFrame) -> None:
        if self._on_first_packet is not None and track is self.video_track:
            self._on_first_packet(self, track, frame)

    def _feedback(self, kind: str, value: float) -> None:
        if self._fanout is None:
            return
        now = asyncio.get_running_loop().time()
        last, self._last_feedback = self._last_feedback, now
        if last is not None and now - last > RESUME_SILENCE:
            # The link was out: what was sent meanwhile is lost, and a keyframe is quicker than
            # resending all of it.
            self._fanout.request_keyframe(f"{self.remote} feedback after {now - last:.1f} s")
        if kind == "report" and self.retransmits is not None:
            self.retransmits.loss = value
        self._fanout.bitrate.feedback(self.remote, kind, value)
        if kind == "nack" and value >= BURST_NACK:
            # A burst lost (a link flap): retransmitting it late only delays the picture, and
            # aiortc's history may not hold it; a keyframe (rate-limited) recovers at once.
            self._fanout.request_keyframe(f"{self.remote} NACK of {int(value)} packets")

    def _retransmit(self, seq: int, age: float | None, size: int) -> int:
        """Asked by aiortc before it resends NACKed packet ``seq``: how many copies (see
        retransmit.py)."""
        if self._fanout is not None:
            self._fanout.bitrate.nacked(self.remote, seq)
        return 0 if self.retransmits is None else self.retransmits.decide(seq, age, size)

    def _nack_unserved(self, why: str) -> None:
        """A NACKed packet is not resent (see retransmit.py): the receiver's picture stays broken
        until a keyframe, so ask for one now (rate-limited) rather than wait for its PLI."""
        if self._fanout is not None:
            self._fanout.request_keyframe(f"{self.remote} NACK not served ({why})")

    def _keyframe_requested(self) -> None:
        if self._fanout is not None:
            self._fanout.request_keyframe(f"{self.remote} PLI/FIR")

    def _connection_changed(self, state: str) -> None:
        if state == "connected":
            if self.video_track is not None:
                self.video_track.activate()
            self._set_state("connected")
        elif state == "failed" and not self._closed:
            self._set_state("failed")
        elif state == "closed" and not self._closed:
            # The remote closed its side (it is leaving or restarting): not a failure yet.
            self._set_state("disconnected")

    def _video_transceiver(self) -> RTCRtpTransceiver | None:
        if self.pc is None:
            return None
        return next((t for t in self.pc.getTransceivers() if t.kind == "video"), None)

    def _check_codec(self) -> None:
        transceiver = self._video_transceiver()
        if transceiver is None:
            return
        codec = negotiated_codec(transceiver)
        self.video_codec = codec.mimeType if codec is not None else None
        if self._fanout is None or self.video_track is None:
            return
        if needs_reencode(transceiver, self.remote):
            old = self.video_track
            self.video_track = self._fanout.track(old.name, decoded=True)
            self.video_track.on_first_packet = self._first_packet
            transceiver.sender.replaceTrack(self.video_track)
            old.stop()

    async def _offer(self, kind: str) -> None:
        pc = await self._new_pc()
        self.generation += 1
        await pc.setLocalDescription(await pc.createOffer())
        await self._signal({"kind": kind, "sdp": pc.localDescription.sdp})

    async def _answer(self, sdp: str, generation: Any) -> None:
        kinds = tuple(m.kind for m in SessionDescription.parse(sdp).media)
        pc = await self._new_pc(kinds)
        self.generation = generation if isinstance(generation, int) else self.generation + 1
        await pc.setRemoteDescription(RTCSessionDescription(self._strip(sdp), "offer"))
        self._check_codec()
        await pc.setLocalDescription(await pc.createAnswer())
        await self._signal({"kind": "answer", "sdp": pc.localDescription.sdp})

    async def restart(self, reason: str) -> None:
        """Offerer only: a fresh connection for the pair (aiortc cannot restart ICE in place).

        Decided on the connection as it is now, the restart runs after whatever the peer's task
        is handling; if that was the answer to the current offer, or the connection came up
        meanwhile, the restart is dropped (the link watch looks again with the new state)."""
        await self._command("restart", reason, seen=self._progress())

    def _progress(self) -> tuple[int, str, str | None]:
        """Which connection, its state, its signaling state: what a restart was decided on."""
        return (self.connections, self.state, self.pc.signalingState if self.pc else None)

    def _progressed_since(self, seen: tuple[int, str, str | None]) -> str | None:
        """Why the current connection is past what a restart was decided on, or None."""
        connections, state, signaling = seen
        if connections != self.connections or self.pc is None:
            return None
        if self.state == "connected" and state != "connected":
            return "it connected"
        if signaling == "have-local-offer" and self.pc.signalingState == "stable":
            return "its answer arrived"
        return None

    async def _command(
        self, kind: str, reason: str, seen: tuple[int, str, str | None] | None = None
    ) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(_Command(kind, reason, done, seen))
        await done

    async def _signal(self, signal: Signal) -> None:
        signal["generation"] = self.generation
        try:
            await self._send(signal)
        except Exception as err:
            # The server link may be down; the restart loop tries again later.
            logger.warning("%r could not send %s: %s", self, signal.get("kind"), err)

    def _strip(self, sdp: str) -> str:
        sdp, dropped = strip_mdns(sdp, peer=self.remote)
        self._mdns_dropped += dropped
        return sdp

    # -- inbound signals -----------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            item = await self._inbox.get()
            try:
                if isinstance(item, _Command):
                    await self._run_command(item)
                else:
                    await self._handle(item)
            except Exception:
                kind = item.kind if isinstance(item, _Command) else item.get("kind")
                logger.exception("%r could not handle %s", self, kind)
            finally:
                if isinstance(item, _Command) and not item.done.done():
                    item.done.set_result(None)

    async def _run_command(self, command: _Command) -> None:
        if command.kind == "restart":
            if not self.offerer:
                return  # the other side became the offerer (glare) meanwhile
            progressed = self._progressed_since(command.seen) if command.seen else None
            if progressed is not None:
                logger.info("%r restart (%s) dropped: %s since", self, command.reason, progressed)
                return
            self.restarts += 1
            logger.info("%r restarting (%s)", self, command.reason)
        await self._offer(command.kind)

    async def _handle(self, signal: Signal) -> None:
        kind = signal.get("kind")
        if kind in ("offer", "restart"):
            if not isinstance(signal.get("sdp"), str):
                return
            if self.offerer and kind == "offer" and self._keeps_own_offer():
                return
            if kind == "restart":
                self.restarts += 1
            await self._answer(signal["sdp"], signal.get("generation"))
        elif kind == "answer":
            pc = self.pc
            if pc is None or pc.signalingState != "have-local-offer":
                return
            if signal.get("generation", self.generation) != self.generation:
                return
            await pc.setRemoteDescription(
                RTCSessionDescription(self._strip(str(signal.get("sdp", ""))), "answer")
            )
            self._check_codec()
        elif kind == "candidate":
            await self._add_candidate(signal.get("candidate"))

    def _keeps_own_offer(self) -> bool:
        """Glare (both sides offered anyway: two joins raced, though the newcomer offers; the
        same rule as the browser's ``web/call/peer.js``, docs/architecture.md "Signaling"): the
        smaller participant session id keeps its offer; the larger one drops its own and
        answers, and stops being the offerer."""
        pc = self.pc
        if pc is not None and pc.signalingState == "have-local-offer" and self.local < self.remote:
            logger.info("%r glare: keeping our offer, ignoring theirs", self)
            return True
        logger.info("%r glare: answering their offer, they own restarts now", self)
        self.offerer = False
        return False

    async def _add_candidate(self, data: Any) -> None:
        pc = self.pc
        if pc is None or pc.remoteDescription is None:
            return
        if not isinstance(data, dict) or not data.get("candidate"):
            # End of candidates: not when mDNS ones were dropped, peer-reflexive checks may follow.
            if self._mdns_dropped == 0:
                await pc.addIceCandidate(None)
            return
        try:
            candidate = candidate_from_signal(data)
        except MdnsCandidate:
            self._mdns_dropped += 1
            return
        if candidate is not None:
            await pc.addIceCandidate(candidate)

    # -- liveness ------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Detects a dead link long before aioice's consent check and drives the restarts."""
        loop = asyncio.get_running_loop()
        watch = LinkWatch(stall_timeout=self.stall_timeout, restart_timeout=self.restart_timeout)
        while True:
            await asyncio.sleep(watch.interval)
            answered = self.pc is None or self.pc.signalingState == "stable"
            action = watch.tick(
                loop.time(), received_packets(self.pc), self.state, self.offerer, answered
            )
            if action is Action.DISCONNECTED:
                self._set_state("disconnected")
            elif action is Action.RESTART:
                await self.restart(self.state)

    def __repr__(self) -> str:
        role = "offerer" if self.offerer else "answerer"
        return f"Peer({self.remote}, {role}, gen {self.generation}, {self.state})"
