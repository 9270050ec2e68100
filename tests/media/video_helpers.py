"""Helpers for the media video tests: a scripted source, a receiving consumer, in-memory signaling."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from appliance.client import Client
from appliance.client.backoff import Backoff
from appliance.daemon.callsignaling import CallSignaling
from appliance.media.annexb import is_keyframe
from appliance.media.peer import Peer
from appliance.media.session import CallMedia, MediaEvent
from appliance.media.sources import blockcode
from appliance.media.sources.base import EncodedFrame, VideoSource
from appliance.media.sources.encoder import H264Encoder
from appliance.media.sources.pattern import TestPattern


class ScriptedSource(VideoSource):
    """Real libx264 access units, pushed by the test (no thread): ``push(keyframe=...)``."""

    kind = "scripted"

    def __init__(self, width: int = 192, height: int = 160) -> None:
        super().__init__(width=width, height=height, framerate=30, bitrate=300_000)
        self._encoder = H264Encoder(width, height, 30, 300_000, keyframe_interval=100)
        self._pattern = TestPattern(width, height)
        self.counter = 0
        self.force_next = False

    async def _start(self) -> None:
        pass

    async def _stop(self) -> None:
        pass

    def _request_keyframe(self) -> None:
        self.force_next = True

    def push(self, keyframe: bool = False) -> EncodedFrame:
        pts = self.counter * 3000
        frame = self._pattern.frame(self.counter, 1_700_000_000.0 + self.counter / 30)
        units = self._encoder.encode(frame, pts, keyframe or self.force_next)
        self.force_next = False
        self.counter += 1
        data = b"".join(units)
        encoded = EncodedFrame(data, pts, Fraction(1, 90000), is_keyframe(data), 0.0)
        self._deliver(encoded)
        return encoded


class VideoReader:
    """Consumes a received video track, reading the block code of every decoded picture."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self.codes: list[blockcode.BlockCode] = []
        self.decoded_at: list[float] = []
        """Wall-clock time each code in ``codes`` was decoded (glass-to-glass in bench/)."""
        self.frames = 0
        self.changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await self.track.recv()
                assert isinstance(frame, av.VideoFrame)
                self.frames += 1
                code = blockcode.read(frame.to_ndarray(format="gray"))
                if code is not None:
                    self.codes.append(code)
                    self.decoded_at.append(time.time())
                self.changed.set()

    async def wait_for(self, count: int, within: float = 20.0) -> None:
        async def wait() -> None:
            while len(self.codes) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), within)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def drain(track: MediaStreamTrack) -> None:
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


class Wire:
    """In-memory signaling between two peers: each side's ``send`` delivers to the other."""

    def __init__(self) -> None:
        self.peers: dict[str, Peer] = {}
        self.log: list[tuple[str, dict[str, Any]]] = []

    def sender(self, to: str) -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def send(signal: dict[str, Any]) -> None:
            self.log.append((to, dict(signal)))
            self.peers[to].deliver(signal)

        return send


class ToneTrack(MediaStreamTrack):
    """A paced 48 kHz mono sine in 20 ms frames: the stand-in microphone of these tests."""

    kind = "audio"

    def __init__(self, freq: float) -> None:
        super().__init__()
        self.freq = freq
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        due = self._start + self._pts / 48000
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        t = (np.arange(960) + self._pts) / 48000
        samples = (np.sin(2 * np.pi * self.freq * t) * 0.3 * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self._pts
        frame.time_base = Fraction(1, 48000)
        self._pts += 960
        return frame


class AudioReader:
    """Consumes a received audio track and keeps its first channel as int16 samples."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self.chunks: list[np.ndarray] = []
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await self.track.recv()
                assert isinstance(frame, av.AudioFrame)
                data = frame.to_ndarray().reshape(-1)
                channels = len(frame.layout.channels)
                self.chunks.append(data[::channels] if channels > 1 else data)

    @property
    def seconds(self) -> float:
        return sum(len(c) for c in self.chunks) / 48000

    def samples(self, last_seconds: float) -> np.ndarray:
        data = np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int16)
        return data[-round(last_seconds * 48000) :]

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Participant:
    """One side of a call: a real client, its CallMedia, what it received."""

    def __init__(
        self, base_url: str, api_key: str, token: str, user: str, call_id: str, **media: Any
    ) -> None:
        self.client = Client(base_url, api_key, token, backoff=Backoff(base=0.2, cap=1.0))
        self.video: list[VideoReader] = []
        self.audio: list[AudioReader] = []
        self.events: list[MediaEvent] = []
        signaling = CallSignaling(self.client.call("default", call_id), create=True)
        self.media = CallMedia(
            signaling,
            on_audio=lambda t: self.audio.append(AudioReader(t)),
            on_video=lambda t: self.video.append(VideoReader(t)),
            name=user,
            **media,
        )
        self.media.add_listener(self.events.append)

    def kinds(self, kind: str) -> list[MediaEvent]:
        return [e for e in self.events if e.kind == kind]

    async def close(self) -> None:
        readers: list[VideoReader | AudioReader] = [*self.video, *self.audio]
        for reader in readers:
            await reader.close()
        await self.media.stop()
        await self.client.aclose()


def loopback_pc() -> RTCPeerConnection:
    """A peer connection with no ICE servers: aiortc would otherwise ask a public STUN server."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))
