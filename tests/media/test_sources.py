"""Video sources: block code, the test pattern encoder thread, file replay, v4l2 pipeline
selection, and the picamera2 adapter against a stand-in checked with picamera2's parameter lists
(a copy in tests/media/picamera2_api.py; ``make check-picamera2`` compares it with the newest
release, over the network)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import subprocess
import sys
import threading
import zipfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from appliance.clock import ManualClock
from appliance.errors import HardwareError, MediaError
from appliance.media.annexb import (
    NAL_PPS,
    NAL_SPS,
    START_CODE,
    ParameterSets,
    nal_types,
    nal_units,
)
from appliance.media.sources import blockcode
from appliance.media.sources.base import EncodedFrame
from appliance.media.sources.encoder import H264Encoder
from appliance.media.sources.file import FileSource, load_access_units
from appliance.media.sources.pattern import TestPattern
from appliance.media.sources.picamera2 import Picamera2Modules, Picamera2Source
from appliance.media.sources.test import TestSource
from appliance.media.sources.v4l2 import V4l2Source, select_pipeline
from tests.media import picamera2_api
from tests.support import poll

# -- block code ------------------------------------------------------------------------------


def test_block_code_round_trip_and_rejects() -> None:
    luma = np.full((240, 320), 90, dtype=np.uint8)
    code = blockcode.BlockCode.at(123456, 1_700_000_123.456)
    blockcode.draw(luma, code)
    assert blockcode.read(luma) == code
    assert code.age_ms(1_700_000_123.500) == 44
    assert blockcode.read(np.zeros((240, 320), np.uint8)) is None  # black is not a code
    assert blockcode.read(np.full((240, 320), 255, np.uint8)) is None  # nor is white
    luma[0:16, 0:16] = 255 - luma[0:16, 0:16]  # one flipped cell: checksum fails
    assert blockcode.read(luma) is None
    with pytest.raises(ValueError, match="smaller than the block code"):
        blockcode.draw(np.zeros((100, 100), np.uint8), code)


def test_block_code_survives_low_bitrate_h264() -> None:
    pattern = TestPattern(320, 240)
    encoder = H264Encoder(320, 240, 15, 150_000)  # a starved stream: heavy quantisation
    decoder = av.CodecContext.create("h264", "r")
    read: list[int] = []
    for i in range(30):
        for unit in encoder.encode(pattern.frame(i, 1_700_000_000 + i / 15), i * 6000, False):
            for picture in decoder.decode(av.Packet(unit)):  # type: ignore[attr-defined]
                code = blockcode.read(picture.to_ndarray(format="gray"))
                if code is not None:
                    read.append(code.counter)
    assert read == list(range(30))


# -- test source -----------------------------------------------------------------------------


async def test_test_source_encodes_on_a_named_thread_and_honours_keyframe_requests() -> None:
    clock = ManualClock(start=1_700_000_000.0)
    source = TestSource(width=192, height=160, framerate=30, clock=clock)
    frames: list[EncodedFrame] = []
    loop_threads: set[str] = set()

    def sink(frame: EncodedFrame) -> None:
        frames.append(frame)
        loop_threads.add(threading.current_thread().name)

    source.add_sink(sink)
    await source.start()
    try:
        assert "video-test-encoder" in {t.name for t in threading.enumerate()}
        await poll.until(lambda: len(frames) >= 5, within=20.0)
        assert frames[0].keyframe and not any(f.keyframe for f in frames[1:5])
        assert nal_types(frames[0].data)[:2] == [NAL_SPS, NAL_PPS]
        source.request_keyframe()
        count = len(frames)
        await poll.until(lambda: len(frames) >= count + 3, within=20.0)
        assert any(f.keyframe for f in frames[count:])
        assert frames[1].pts > frames[0].pts and frames[0].time_base == Fraction(1, 90000)
        assert {f.capture_time for f in frames} == {1_700_000_000.0}
    finally:
        await source.stop()
    assert loop_threads == {threading.current_thread().name}  # packets handed to the loop
    assert "video-test-encoder" not in {t.name for t in threading.enumerate()}
    decoder = av.CodecContext.create("h264", "r")
    codes = []
    for frame in frames:
        for picture in decoder.decode(av.Packet(frame.data)):  # type: ignore[attr-defined]
            codes.append(blockcode.read(picture.to_ndarray(format="gray")))
    assert [c.counter for c in codes if c] == list(range(len(codes)))
    assert codes[0] is not None and codes[0].time_ms == (1_700_000_000_000 & 0xFFFFFFFF)


# -- file source -----------------------------------------------------------------------------


def _write_stream(path: Path, pictures: int, keyframes: set[int], *, strip_headers: bool) -> None:
    pattern = TestPattern(192, 160)
    encoder = H264Encoder(192, 160, 30, 300_000, keyframe_interval=100)
    out = bytearray()
    for i in range(pictures):
        for unit in encoder.encode(pattern.frame(i, 0.0), i * 3000, i in keyframes):
            nals = list(nal_units(unit))
            if strip_headers and i > 0:
                nals = [n for n in nals if n[0] & 0x1F not in (NAL_SPS, NAL_PPS)]
            out += b"".join(START_CODE + n for n in nals)
    path.write_bytes(bytes(out))


async def test_file_source_replays_in_order_and_rewinds_to_a_keyframe(tmp_path: Path) -> None:
    path = tmp_path / "clip.h264"
    _write_stream(path, 20, {0, 10}, strip_headers=True)
    units = load_access_units(path)
    assert [key for _, key in units] == [i in (0, 10) for i in range(20)]
    assert nal_types(units[10][0])[:2] == [NAL_SPS, NAL_PPS]  # headers put back before each IDR
    source = FileSource(path, framerate=60, width=192, height=160)
    frames: list[EncodedFrame] = []
    source.add_sink(frames.append)
    await source.start()
    try:
        await poll.until(lambda: len(frames) >= 14, within=20.0)
        source.request_keyframe()
        count = len(frames)
        await poll.until(lambda: len(frames) >= count + 1, within=20.0)
        assert frames[count].keyframe
        await poll.until(lambda: len(frames) >= 45, within=20.0)  # loops past the end
    finally:
        await source.stop()
    decoder = av.CodecContext.create("h264", "r")
    counters = []
    for frame in frames[:count]:
        for picture in decoder.decode(av.Packet(frame.data)):  # type: ignore[attr-defined]
            code = blockcode.read(picture.to_ndarray(format="gray"))
            counters.append(code.counter if code else None)
    assert counters[:14] == list(range(14))
    assert [f.pts for f in frames[:3]] == [0, 1500, 3000]


def test_file_source_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(HardwareError, match=r"missing\.h264"):
        load_access_units(tmp_path / "missing.h264")
    junk = tmp_path / "junk.h264"
    junk.write_bytes(b"\x00\x00\x01\x41\x9a" * 10)
    with pytest.raises(HardwareError, match=r"no H\.264 keyframe"):
        load_access_units(junk)


# -- v4l2 ------------------------------------------------------------------------------------


def test_v4l2_pipeline_prefers_the_hardware_encoder() -> None:
    assert select_pipeline({"h264_v4l2m2m", "libx264", "h264"}) == "h264_v4l2m2m"
    assert select_pipeline({"libx264"}) == "libx264"
    with pytest.raises(MediaError, match=r"no H\.264 encoder"):
        select_pipeline({"mjpeg"})
    # This machine: whatever PyAV has, the choice is one of the two.
    assert V4l2Source(device="/dev/null").codec in ("h264_v4l2m2m", "libx264")


async def test_v4l2_missing_camera_is_a_hardware_error(tmp_path: Path) -> None:
    source = V4l2Source(device=str(tmp_path / "video9"))
    with pytest.raises(HardwareError, match="video9 could not be opened"):
        await source.start()
    assert not source.running


# -- picamera2 -------------------------------------------------------------------------------


class Recorder:
    """Records every call made on the stand-ins: (class, method, args, kwargs)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = []

    def add(self, cls: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.calls.append((cls, method, args, kwargs))


def fake_picamera2(recorder: Recorder, *, hardware: bool = True) -> Picamera2Modules:
    class Output:
        def __init__(self, pts: Any = None) -> None:
            recorder.add("Output", "__init__", (), {"pts": pts} if pts else {})

        def outputframe(
            self,
            frame: Any,
            keyframe: bool = True,
            timestamp: Any = None,
            packet: Any = None,
            audio: bool = False,
        ) -> None:
            pass

    class H264Encoder:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            recorder.add("H264Encoder", "__init__", args, kwargs)
            self.keyframes_forced = 0

        def force_key_frame(self) -> None:
            recorder.add("H264Encoder", "force_key_frame", (), {})
            self.keyframes_forced += 1

    class Picamera2:
        instances: list[Picamera2] = []

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            recorder.add("Picamera2", "__init__", args, kwargs)
            self.output: Any = None
            self.thread: threading.Thread | None = None
            self.running = threading.Event()
            Picamera2.instances.append(self)

        def create_video_configuration(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            recorder.add("Picamera2", "create_video_configuration", args, kwargs)
            return {"config": kwargs}

        def configure(self, *args: Any, **kwargs: Any) -> None:
            recorder.add("Picamera2", "configure", args, kwargs)

        def start_encoder(self, *args: Any, **kwargs: Any) -> None:
            recorder.add("Picamera2", "start_encoder", args, kwargs)
            self.output = args[1] if len(args) > 1 else kwargs["output"]

        def start(self, *args: Any, **kwargs: Any) -> None:
            recorder.add("Picamera2", "start", args, kwargs)
            self.running.set()

            def encode() -> None:  # picamera2's encoder thread
                for i in range(5):
                    self.output.outputframe(
                        b"\x00\x00\x00\x01\x65" if i == 0 else b"\x00\x00\x00\x01\x41",
                        i == 0,
                        1_000_000 + i * 33_333,
                    )

            self.thread = threading.Thread(target=encode, name="picamera2-encoder")
            self.thread.start()

        def stop_encoder(self, *args: Any, **kwargs: Any) -> None:
            recorder.add("Picamera2", "stop_encoder", args, kwargs)

        def stop(self, *args: Any, **kwargs: Any) -> None:
            recorder.add("Picamera2", "stop", args, kwargs)

        def close(self, *args: Any, **kwargs: Any) -> None:
            recorder.add("Picamera2", "close", args, kwargs)

    return Picamera2Modules(Picamera2, H264Encoder, Output, hardware)


async def _run_adapter(modules: Picamera2Modules) -> tuple[Picamera2Source, list[EncodedFrame]]:
    source = Picamera2Source(
        width=640, height=480, framerate=30, bitrate=1_500_000, modules=modules
    )
    frames: list[EncodedFrame] = []
    source.add_sink(frames.append)
    await source.start()
    await poll.until(lambda: len(frames) == 5, within=20.0)
    source.request_keyframe()
    await source.stop()
    return source, frames


async def test_picamera2_adapter_hands_packets_to_the_loop() -> None:
    recorder = Recorder()
    _source, frames = await _run_adapter(fake_picamera2(recorder))
    assert [f.keyframe for f in frames] == [True, False, False, False, False]
    assert [f.pts for f in frames] == [0, 2999, 5999, 8999, 11999]
    methods = [(c, m) for c, m, _, _ in recorder.calls]
    assert ("H264Encoder", "force_key_frame") in methods  # the request reached the encoder
    encoder_kwargs = next(k for c, m, _, k in recorder.calls if c == "H264Encoder")
    assert encoder_kwargs == {
        "bitrate": 1_500_000,
        "repeat": True,
        "iperiod": 30,
        "profile": "constrained baseline",
    }
    assert methods[-3:] == [
        ("Picamera2", "stop_encoder"),
        ("Picamera2", "stop"),
        ("Picamera2", "close"),
    ]


async def test_picamera2_keyframe_request_and_pi5_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    recorder = Recorder()
    modules = fake_picamera2(recorder, hardware=False)
    source = Picamera2Source(width=640, height=480, modules=modules)
    await source.start()
    source.request_keyframe()
    await source.stop()
    assert ("H264Encoder", "force_key_frame") in [(c, m) for c, m, _, _ in recorder.calls]
    assert "no hardware H.264 encoder" in caplog.text
    encoder_kwargs = next(k for c, m, _, k in recorder.calls if c == "H264Encoder")
    assert encoder_kwargs["profile"] == "baseline"  # libx264's name for the software fallback


async def _check_calls_fit(parameters: dict[str, dict[str, str]]) -> None:
    """Every call the adapter makes on the stand-ins binds to picamera2's method of that name
    (``parameters``: :data:`tests.media.picamera2_api.PARAMETERS` or a release's source)."""
    recorder = Recorder()
    await _run_adapter(fake_picamera2(recorder))
    modules = fake_picamera2(recorder, hardware=False)
    source = Picamera2Source(modules=modules)
    await source.start()
    source.request_keyframe()
    await source.stop()
    assert recorder.calls
    for cls, method, args, kwargs in recorder.calls:
        targets = ["H264Encoder", "LibavH264Encoder"] if cls == "H264Encoder" else [cls]
        for target in targets:
            params = parameters[target].get(method)
            assert params is not None, f"picamera2 {target} has no method {method}"
            picamera2_api.signature(params).bind(*args, **kwargs)  # TypeError: wrong name/count
    # Our Output subclass overrides exactly the callback picamera2 calls.
    real_cb = picamera2_api.signature(parameters["Output"]["outputframe"])
    assert list(real_cb.parameters) == ["frame", "keyframe", "timestamp", "packet", "audio"]
    ours = inspect.signature(fake_picamera2(recorder).Output.outputframe)
    assert list(ours.parameters)[1:] == list(real_cb.parameters)


async def test_picamera2_calls_match_its_api() -> None:
    """Against the copy of picamera2's parameter lists in tests/media/picamera2_api.py."""
    await _check_calls_fit(picamera2_api.PARAMETERS)


def test_the_api_check_can_fail() -> None:
    """A renamed parameter or a missing method is caught."""
    renamed = {c: dict(m) for c, m in picamera2_api.PARAMETERS.items()}
    renamed["H264Encoder"]["__init__"] = renamed["H264Encoder"]["__init__"].replace(
        "iperiod", "gop"
    )
    with pytest.raises(TypeError, match="iperiod"):
        asyncio.run(_check_calls_fit(renamed))
    del renamed["Picamera2"]["stop_encoder"]
    renamed["H264Encoder"] = dict(picamera2_api.PARAMETERS["H264Encoder"])
    with pytest.raises(AssertionError, match="no method stop_encoder"):
        asyncio.run(_check_calls_fit(renamed))


def _download_picamera2(where: Path) -> Path:
    """The newest picamera2 release from the package index, unpacked: its package folder."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "picamera2", "--no-deps", "-q", "-d", str(where)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    wheels = list(where.glob("picamera2-*.whl"))
    assert result.returncode == 0 and wheels, f"pip download picamera2: {result.stderr[-300:]}"
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(where)
    return where / "picamera2"


@pytest.mark.network
@pytest.mark.skipif(
    not os.environ.get("APPLIANCE_NETWORK_CHECKS"),
    reason="downloads picamera2 from the package index: make check-picamera2",
)
async def test_picamera2_api_copy_matches_the_newest_release(tmp_path: Path) -> None:
    """Opt-in (network): the newest picamera2 on the package index still has the parameter
    lists of our copy, and our calls fit it."""
    root = await asyncio.to_thread(_download_picamera2, tmp_path)
    release = picamera2_api.read_parameters(root)
    await _check_calls_fit(release)
    assert release == picamera2_api.PARAMETERS, (
        f"picamera2 on the index differs from our copy of {picamera2_api.VERSION}: "
        "regenerate it (tests/media/picamera2_api.py says how)"
    )


def test_parameter_sets_go_in_front_of_every_idr() -> None:
    sps, pps = b"\x67\x42\xc0\x1f\xaa", b"\x68\xce\x3c\x80"
    idr, p_slice = b"\x65\x88\x84\x00", b"\x41\x9a\x02"
    sets = ParameterSets(START_CODE + sps + START_CODE + pps)  # e.g. an encoder's extradata
    assert list(nal_units(sets.complete(START_CODE + idr))) == [sps, pps, idr]
    assert sets.complete(START_CODE + p_slice) == START_CODE + p_slice
    newer_sps = sps + b"\x01"
    full = START_CODE + newer_sps + START_CODE + pps + START_CODE + idr
    assert sets.complete(full) == full  # already complete: untouched, and remembered
    assert list(nal_units(sets.complete(START_CODE + idr))) == [newer_sps, pps, idr]
    assert ParameterSets().complete(START_CODE + idr) == START_CODE + idr  # nothing known yet
