"""``appliance doctor``: what a device needs, checked on the device and explained in one screen.

Each check gives ``ok``, ``warn`` or ``fail``, one line of what it found and, when not ok, one
line of what to do. The probes that touch the machine (the kernel's clock state, /proc, the
camera library) are injected, so the tests run them against simulated devices and broken set-ups.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from appliance.config import DeviceConfig
from appliance.errors import ApplianceError, HardwareError

Status = Literal["ok", "warn", "fail"]
MIN_FREE_BYTES = 200 * 1024 * 1024
# An SD card's endurance is its size times a few hundred to a few thousand writes: a few MB an
# hour is nothing, 100 MB an hour wears a cheap card out within a few years.
WRITES_WARN_BYTES_PER_HOUR = 50 * 1024 * 1024
TOKEN_WARN_SECONDS = 7 * 86400
TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised


@dataclass
class Check:
    name: str
    status: Status
    summary: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def kernel_clock_state() -> int:
    """adjtimex(2) with no changes: TIME_ERROR (5) while no NTP client has synchronised it."""
    buf = ctypes.create_string_buffer(512)  # struct timex; modes = 0 (read only)
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.adjtimex(buf))


@dataclass
class Probes:
    """Everything the checks read from the machine."""

    clock_state: Callable[[], int] = kernel_clock_state
    now: Callable[[], float] = time.time
    board_model: Callable[[], str] = lambda: _read("/proc/device-tree/model")
    gpio_chips: Callable[[], list[str]] = lambda: sorted(
        str(p) for p in Path("/dev").glob("gpiochip*")
    )
    daemon_pid: Callable[[Path], int | None] = lambda sock: _peer_pid(sock)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").strip("\0\n ")
    except OSError:
        return ""


def _peer_pid(sock_path: Path) -> int | None:
    """The running daemon's pid: the peer credentials of its control socket."""
    import socket
    import struct

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(sock_path))
            creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid: int = struct.unpack("3i", creds)[0]
    return pid


# ------------------------------------------------------------------------------ checks


def check_clock(probes: Probes) -> Check:
    if probes.clock_state() == TIME_ERROR:
        return Check(
            "clock",
            "fail",
            "not synchronised (a Pi has no real-time clock: tokens and ring deadlines need it)",
            "check the network and NTP: timedatectl; systemctl status systemd-timesyncd",
        )
    return Check("clock", "ok", "synchronised")


def _token_claims(token: str) -> dict[str, Any]:
    try:
        payload = token.split(".")[1]
        claims: dict[str, Any] = json.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
        return claims
    except (IndexError, ValueError):
        return {}


async def check_server(cfg: DeviceConfig, probes: Probes, transport: Any = None) -> Check:
    from appliance.client import Client
    from appliance.errors import APIError, AuthenticationError, NotFound, ServerUnavailable

    server = cfg.server
    if server.embedded is not None:
        return Check("server", "ok", "embedded in the daemon (no other machine needed)")
    token = (
        server.token_file.read_text().strip() if server.token_file is not None else server.token
    ) or ""
    url = server.url or ""
    fix_token = f"mint a new one: appliance token --config server.yaml --user {cfg.device.id}"
    exp = _token_claims(token).get("exp")
    left = None if exp is None else float(exp) - probes.now()
    expiry = "never expires" if left is None else f"expires in {left / 86400:.1f} days"
    if left is not None and left <= 0:
        return Check("server", "fail", f"{url}: the device token expired", fix_token)
    kwargs: dict[str, Any] = {"timeout": 5.0}
    if transport is not None:
        kwargs["transport"] = transport
    try:
        async with Client(url, server.api_key or "", token, **kwargs) as client:
            try:
                await client.call(cfg.call.type, cfg.call_id or "doctor-probe").get()
            except NotFound:
                pass  # the token was accepted; the call simply does not exist yet
    except ServerUnavailable as err:
        return Check(
            "server",
            "fail",
            f"{url}: not reachable ({err.message})",
            "check server.url, the network, and that appliance-server runs on that machine",
        )
    except AuthenticationError as err:
        return Check("server", "fail", f"{url}: token refused ({err.message})", fix_token)
    except APIError as err:
        if err.status_code in (401, 403):
            return Check("server", "fail", f"{url}: token refused ({err.message})", fix_token)
        # any other answer (400, 409, ...) came from the server past authentication
    except (ApplianceError, OSError) as err:
        return Check("server", "fail", f"{url}: not reachable ({err})", "check server.url")
    status: Status = "warn" if left is not None and left < TOKEN_WARN_SECONDS else "ok"
    return Check(
        "server",
        status,
        f"{url}: reachable, token accepted, {expiry}",
        fix_token if status == "warn" else "",
    )


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


def check_relay(cfg: DeviceConfig) -> Check:
    relay = cfg.relay
    if relay is None:
        return Check("relay", "ok", "none configured")
    if relay.active_high:
        wiring = "active-high: energised when GPIO high, released (low) at rest and at boot"
    else:
        wiring = "active-low: energised when GPIO low, released (high) at rest and at boot"
    return Check(
        "relay",
        "ok",
        f"{relay.pin} {wiring}; pulse {relay.pulse_ms} ms",
        details={"pin": relay.pin, "active_high": relay.active_high},
    )


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
    io = _read(f"/proc/{pid}/io")
    stat = _read(f"/proc/{pid}/stat")
    uptime = _read("/proc/uptime")
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


# ------------------------------------------------------------------------------- driver


async def diagnose(
    path: str,
    *,
    state_dir: Path,
    probes: Probes | None = None,
    transport: Any = None,
    picamera2: Any = None,
) -> list[Check]:
    from appliance.config import load_config
    from appliance.configchecks import check_device_config
    from appliance.control import SOCKET_NAME

    probes = probes or Probes()
    try:
        cfg = load_config(path, state_dir=state_dir)
        check_device_config(path, cfg)
    except ApplianceError as err:
        return [
            Check(
                "config", "fail", str(err), "fix that line, then: appliance check --config " + path
            )
        ]
    checks = [Check("config", "ok", f"{path}: device {cfg.device.id}, mode {cfg.mode.value}")]
    checks.append(check_clock(probes))
    checks.append(await check_server(cfg, probes, transport))
    checks.append(check_camera(cfg, probes, picamera2))
    assert cfg.state_dir is not None
    sock = cfg.control.socket or cfg.state_dir / SOCKET_NAME
    pid = probes.daemon_pid(sock)
    checks.append(
        check_audio(cfg) if pid is None else Check("audio", "ok", "held by the running daemon")
    )
    checks.append(check_gpio(cfg, probes, daemon_running=pid is not None))
    checks.append(check_relay(cfg))
    checks.append(check_disk(cfg.state_dir, pid, probes))
    return checks


MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def render(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"{MARK[c.status]} {c.name:<7} {c.summary}")
        if c.fix:
            lines.append(f"     {'':<7} fix: {c.fix}")
    return "\n".join(lines) + "\n"


def as_json(checks: list[Check]) -> str:
    return json.dumps(
        {"ok": all(c.status != "fail" for c in checks), "checks": [asdict(c) for c in checks]},
        sort_keys=True,
    )
