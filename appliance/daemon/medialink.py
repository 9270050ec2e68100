"""The daemon's media and sounds over the media engine (the :class:`Media` / :class:`Sounds`
ports): one :class:`~appliance.media.session.CallMedia` per join, a fresh microphone track per
call, the speaker (remote audio + chimes) open for the daemon's lifetime."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from appliance.client import Client
from appliance.clock import Clock
from appliance.daemon.config import CameraConfig, DeviceConfig
from appliance.daemon.ports import Joined, MediaEvent
from appliance.errors import MediaError

log = logging.getLogger(__name__)

# CallMedia's event names → the state machine's
_KINDS = {
    "peer.connected": "peer_connected",
    "peer.failed": "peer_failed",
    "peer.disconnected": "peer_disconnected",
    "peer.left": "peer_left",
    "first_packet": "first_packet",
    "call.ended": "call_ended",
}


def make_video_source(camera: CameraConfig, clock: Clock) -> Any:
    """The configured camera, or ``None`` for ``source: none``. Sources this build lacks are
    reported as unavailable, never replaced by another."""
    if camera.source == "none":
        return None
    if camera.source == "test":
        from appliance.media.sources.test import TestSource

        return TestSource(
            width=camera.width,
            height=camera.height,
            framerate=camera.fps,
            bitrate=camera.bitrate,
            clock=clock,
        )
    modules = {
        "file": ("appliance.media.sources.file", "FileSource"),
        "v4l2": ("appliance.media.sources.v4l2", "V4l2Source"),
        "picamera2": ("appliance.media.sources.picamera2", "Picamera2Source"),
    }
    module_name, class_name = modules[camera.source]
    try:
        import importlib

        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise MediaError(f"camera source {camera.source!r} is not available: {err}") from err
    kwargs: dict[str, Any] = {
        "width": camera.width,
        "height": camera.height,
        "framerate": camera.fps,
        "bitrate": camera.bitrate,
        "clock": clock,
    }
    if camera.source == "file":
        kwargs["path"] = camera.file
    if camera.source == "v4l2" and camera.device:
        kwargs["device"] = camera.device
    return cls(**kwargs)


class DaemonMedia:
    """The :class:`Media` port for one join of one call."""

    def __init__(
        self,
        client: Client,
        cid: str,
        create: bool,
        on_event: Callable[[MediaEvent], None],
        *,
        cfg: DeviceConfig,
        audio: Any,
        clock: Clock,
    ) -> None:
        from appliance.daemon.callsignaling import CallSignaling
        from appliance.media.session import CallMedia

        call_type, call_id = cid.split(":", 1)
        self.call = client.call(call_type, call_id)
        self.cid = cid
        self._audio = audio
        self._capture = audio.new_capture() if audio is not None else None
        self.video = make_video_source(cfg.media.camera, clock)
        self.session = CallMedia(
            CallSignaling(self.call, create=create),
            video=self.video,
            audio=self._capture,
            on_audio=audio.playback.attach if audio is not None else None,
            receive_video=cfg.media.display,
            gate_open=False,
            name=cid,
        )
        self.session.add_listener(
            lambda e: on_event(MediaEvent(_KINDS.get(e.kind, e.kind), e.peer, e.detail or {}))
        )
        self._user = cfg.device.id

    async def start(self) -> Joined:
        info = await self.session.start()
        participants = {info.session_id: self._user}
        state = self.call.state
        for p in getattr(state, "participants", []) or []:
            participants[p.session_id] = p.user_id or ""
        return Joined(self.cid, info.session_id, participants, handle=self.call)

    def open_gate(self) -> None:
        self.session.open_gate()

    def close_gate(self) -> None:
        self.session.close_gate()

    def set_muted(self, muted: bool) -> None:
        self.session.mute_microphone(muted)
        self.session.mute_camera(muted)

    async def quiet(self) -> None:
        await self.session.quiet()

    async def stop(self) -> None:
        try:
            await self.session.stop()
        finally:
            if self._capture is not None:
                self._capture.stop()

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "peers": {k: p.state for k, p in self.session.peers.items()},
            "sending": self.session.sending,
        }
        if self._audio is not None:
            out.update(self._audio.stats())
        return out


class ChimeSounds:
    """The :class:`Sounds` port over the speaker's chime player; ``none`` in the config mutes a
    sound, and a daemon without a speaker plays nothing (logged once)."""

    NAMES = {"chime": "chime", "ringback": "ringback", "pre_announce": "preannounce"}

    def __init__(self, audio: Any, cfg: DeviceConfig) -> None:
        self._audio = audio
        self._silent = {n for n in self.NAMES if getattr(cfg.sounds, n) == "none"}
        self._voice: Any = None
        self.played: list[str] = []

    def play(self, name: str, *, loop: bool = False) -> None:
        self.stop()
        self.played.append(name)
        if self._audio is None or name in self._silent:
            return
        self._voice = self._audio.chimes.play(self.NAMES.get(name, name), loop=loop)

    async def play_once(self, name: str) -> None:
        self.play(name)
        if self._voice is not None:
            await self._voice.wait()
            self._voice = None

    def stop(self) -> None:
        if self._voice is not None:
            self._voice.stop()
            self._voice = None
