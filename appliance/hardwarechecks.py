"""The hardware side of ``appliance doctor``: camera and encoder path, ALSA devices, GPIO
pins, disk space and the daemon's writes (SD-card wear)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from appliance.daemon.config import DeviceConfig
from appliance.diagnosis import Check, Probes, Status, read_text
from appliance.errors import HardwareError

MIN_FREE_BYTES = 200 * 1024 * 1024
# An SD card's endurance is its size times a few hundred to a few thousand writes: a few MB an
# hour is nothing, 100 MB an hour wears a cheap card out within a few years.
WRITES_WARN_BYTES_PER_HOUR = 50 * 1024 * 1024


def check_camera(cfg: DeviceConfig, probes: Probes, picamera2: Any = None) -> Check:
    camera = cfg.media.camera
    source = camera.source
    if source == "none":
        return Check("camera", "ok", "none configured (audio-only device)")
    if source == "test":
        return Check("camera", "ok", "synthetic test picture, encoded by libx264 (off-Pi source)")
    if source == "file":
        return Check("camera", "ok", f"replays {camera.file} (no encoding)")
    if source == "v4l2":
        return _check_v4l2(cfg)
    from appliance.media.sources.picamera2 import describe_cameras  # picamera2 lives there

    try:
        cameras, hardware = describe_cameras(picamera2)
    except HardwareError as err:
        return Check(
            "camera", "fail", str(err), "on Raspberry Pi OS: apt install python3-picamera2"
        )
    if not cameras:
        return Check(
            "camera",
            "fail",
            "picamera2 finds no camera",
            "check the ribbon cable and `rpicam-hello --list-cameras`",
        )
    model = probes.board_model() or "unknown board"
    if hardware:
        encoder = "hardware H.264 encoder"
    else:
        encoder = (
            "no hardware H.264 encoder: libav software fallback (uses CPU; lower the size/fps)"
        )
    return Check(
        "camera",
        "ok" if hardware else "warn",
        f"{cameras[0]} on {model}; {encoder}",
        "" if hardware else "on a Pi 5, keep media.camera at 720p or below",
        {"cameras": cameras, "hardware_encoder": hardware},
    )


def _check_v4l2(cfg: DeviceConfig) -> Check:
    device = cfg.media.camera.device or "/dev/video0"
    if not os.path.exists(device):
        return Check(
            "camera",
            "fail",
            f"{device} does not exist",
            "plug the USB camera in, or fix media.camera.device",
        )
    try:
        fd = os.open(device, os.O_RDWR)
        os.close(fd)
    except OSError as err:
        return Check(
            "camera", "fail", f"cannot open {device}: {err.strerror}", "add the user to group video"
        )
    import av

    encoder = (
        "h264_v4l2m2m (hardware)" if "h264_v4l2m2m" in av.codecs_available else "libx264 (software)"
    )
    return Check("camera", "ok", f"{device}; encoder {encoder}")


def check_audio(cfg: DeviceConfig) -> Check:
    from appliance.errors import AudioDeviceError
    from appliance.media.audio.pcm import PcmFormat, open_capture, open_playback

    audio = cfg.media.audio
    capture_fmt = PcmFormat.for_period(period_ms=audio.period_ms)
    playback_fmt = PcmFormat.for_period(
        rate=audio.rate, channels=audio.channels, period_ms=audio.period_ms
    )
    opened = []
    for kind, device, fmt, opener in (
        ("capture", audio.capture_device, capture_fmt, open_capture),
        ("playback", audio.playback_device, playback_fmt, open_playback),
    ):
        try:
            with _alsa_lib_quiet():
                opener(device, fmt).close()
        except AudioDeviceError as err:
            busy = "busy" in str(err).lower()
            return Check(
                "audio",
                "warn" if busy else "fail",
                str(err),
                "stop the daemon to test it (it holds the device)"
                if busy
                else f"fix media.audio.{kind}_device (list them: arecord -L / aplay -L)",
            )
        opened.append(f"{kind} {device!r} at {fmt.rate} Hz")
    return Check("audio", "ok", ", ".join(opened))


@contextlib.contextmanager
def _alsa_lib_quiet() -> Iterator[None]:
    """alsa-lib prints its own errors on fd 2; the check's one line says the same."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def check_gpio(
    cfg: DeviceConfig, probes: Probes, daemon_running: bool, factory: Any = None
) -> Check:
    from appliance.hardware.pins import is_mock, make_pin_factory, pins_in_use

    pins = [b.pin for b in cfg.buttons]
    pins += [led.pin for led in (cfg.leds.status, cfg.leds.camera_live) if led is not None]
    if cfg.relay is not None:
        pins.append(cfg.relay.pin)
    listed = ", ".join(str(p) for p in pins)
    if cfg.pin_factory == "mock":
        return Check("gpio", "ok", f"simulated pins (pin_factory: mock): {listed}")
    chips = probes.gpio_chips()
    if not chips:
        status: Status = "warn" if cfg.pin_factory == "auto" else "fail"
        return Check(
            "gpio",
            status,
            "no /dev/gpiochip*: the daemon falls back to simulated pins"
            if status == "warn"
            else "no /dev/gpiochip*",
            "on a Pi: check the kernel; elsewhere set pin_factory: mock",
        )
    if daemon_running:
        return Check("gpio", "ok", f"{chips[0]}; pins {listed} held by the running daemon")
    try:
        factory = factory or make_pin_factory(cfg.pin_factory)
    except HardwareError as err:
        return Check(
            "gpio", "fail", str(err), "apt install python3-lgpio (Pi OS), or pin_factory: mock"
        )
    if is_mock(factory) and cfg.pin_factory == "auto":
        return Check(
            "gpio", "warn", "lgpio unavailable: simulated pins", "apt install python3-lgpio"
        )
    try:
        used = pins_in_use(factory, pins, chips[0])
    except HardwareError as err:
        return Check("gpio", "fail", str(err), "apt install python3-lgpio")
    if used:
        pin, why = next(iter(used.items()))
        return Check(
            "gpio",
            "fail",
            f"{chips[0]}: {pin} {why}",
            "another program holds it (gpioinfo shows who), or fix the pin in the config",
            {"in_use": used},
        )
    return Check("gpio", "ok", f"{chips[0]}; pins {listed} free")


def check_disk(state_dir: Path, pid: int | None, probes: Probes) -> Check:
    probe_dir = state_dir if state_dir.exists() else state_dir.parent
    usage = shutil.disk_usage(probe_dir)
    details: dict[str, Any] = {"free_bytes": usage.free, "total_bytes": usage.total}
    summary = f"{state_dir}: {usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f}"
    if usage.free < MIN_FREE_BYTES:
        return Check(
            "disk", "fail", summary, "free space: journalctl --vacuum-size=50M; apt clean", details
        )
    rate = writes_per_hour(pid, probes) if pid else None
    if rate is None:
        return Check(
            "disk",
            "ok",
            f"{summary}; daemon not running (writes per hour unknown)",
            details=details,
        )
    details["write_bytes_per_hour"] = round(rate)
    summary += f"; the daemon writes {rate / 2**20:.2f} MB/h"
    if rate > WRITES_WARN_BYTES_PER_HOUR:
        return Check(
            "disk",
            "warn",
            summary + " (SD-card wear)",
            "lower the log level (APPLIANCE_LOG_LEVEL=WARNING)",
            details,
        )
    return Check("disk", "ok", summary, details=details)


def process_writes(pid: int) -> tuple[int, float] | None:
    """Bytes the process caused to be written to storage (``/proc/PID/io`` ``write_bytes``,
    counted when pages are dirtied) and its age in seconds."""
    io = read_text(f"/proc/{pid}/io")
    stat = read_text(f"/proc/{pid}/stat")
    uptime = read_text("/proc/uptime")
    if not io or not stat or not uptime:
        return None
    written = int(dict(line.split(": ") for line in io.splitlines())["write_bytes"])
    start_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    age = float(uptime.split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    return written, age


def writes_per_hour(pid: int, probes: Probes) -> float | None:
    """Bytes written per hour of the process's life."""
    found = process_writes(pid)
    if found is None:
        return None
    written, age = found
    return written / max(age, 1.0) * 3600
