"""The configured camera becomes the media engine's source; sounds map onto the chime player."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.clock import ManualClock
from appliance.daemon.config import CameraConfig, DeviceConfig
from appliance.daemon.medialink import ChimeSounds, make_video_source


@pytest.mark.parametrize(
    ("source", "extra", "cls"),
    [
        ("test", {}, "TestSource"),
        ("file", {"file": Path("/tmp/x.h264")}, "FileSource"),
        ("v4l2", {"device": "/dev/video2"}, "V4l2Source"),
        ("picamera2", {}, "Picamera2Source"),
    ],
)
def test_each_camera_source(source: str, extra: dict[str, Any], cls: str) -> None:
    camera = CameraConfig(source=source, width=640, height=480, fps=20, bitrate=800_000, **extra)  # type: ignore[arg-type]
    video = make_video_source(camera, ManualClock())
    assert type(video).__name__ == cls
    assert (video.width, video.height, video.framerate, video.bitrate) == (640, 480, 20, 800_000)
    if source == "file":
        assert video.path == Path("/tmp/x.h264")
    if source == "v4l2":
        assert video.device == "/dev/video2"


def test_no_camera() -> None:
    assert make_video_source(CameraConfig(source="none"), ManualClock()) is None


class FakeVoice:
    def __init__(self, name: str, loop: bool) -> None:
        self.name, self.loop, self.stopped = name, loop, False

    def stop(self) -> None:
        self.stopped = True

    async def wait(self) -> None:
        return None


class FakeChimes:
    def __init__(self) -> None:
        self.voices: list[FakeVoice] = []

    def play(self, name: str, *, loop: bool = False) -> FakeVoice:
        self.voices.append(FakeVoice(name, loop))
        return self.voices[-1]


class FakeAudio:
    def __init__(self) -> None:
        self.chimes = FakeChimes()


async def test_sounds_names_none_and_stop() -> None:
    cfg = DeviceConfig.model_validate(
        {
            "device": {"id": "d"},
            "server": "embedded",
            "mode": "answer",
            "sounds": {"ringback": "none"},
        }
    )
    audio = FakeAudio()
    sounds = ChimeSounds(audio, cfg)
    sounds.play("chime", loop=True)
    await sounds.play_once("pre_announce")
    sounds.play("ringback", loop=True)  # muted by config
    assert [(v.name, v.loop) for v in audio.chimes.voices] == [
        ("chime", True),
        ("preannounce", False),
    ]
    assert audio.chimes.voices[0].stopped  # a new sound cuts the ringing one
    assert sounds.played == ["chime", "pre_announce", "ringback"]
    silent = ChimeSounds(None, cfg)
    silent.play("chime")
    await silent.play_once("pre_announce")
