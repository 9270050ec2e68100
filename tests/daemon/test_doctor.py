"""``appliance doctor`` with the simulated devices (every check ok) and with broken set-ups,
each of which must make the right check fail (and only say ok where it is)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.daemon.config import load_config
from appliance.diagnosis import TIME_ERROR, Check, Probes
from appliance.doctor import check_relay, diagnose, render
from appliance.hardwarechecks import check_camera, check_gpio, process_writes, writes_per_hour
from appliance.media.sources.picamera2 import Picamera2Modules
from tests.support.server import running_server

CONFIG = Path(__file__).resolve().parents[2] / "config"
SYNCED = Probes(clock_state=lambda: 0, gpio_chips=lambda: [], daemon_pid=lambda _s: None)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def intercom(tmp_path: Path, **changes: Any) -> Path:
    """The shipped intercom (embedded server, mock pins, test camera, ALSA null) with changes."""
    data = yaml.safe_load((CONFIG / "intercom.yaml").read_text())
    data["server"]["embedded"]["port"] = 0
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    (tmp_path / "call-types.yaml").write_text((CONFIG / "call-types.yaml").read_text())
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def test_simulated_devices_all_ok_in_one_screen(tmp_path: Path) -> None:
    checks = await diagnose(str(intercom(tmp_path)), state_dir=tmp_path / "state", probes=SYNCED)
    assert [c.name for c in checks] == [
        "config",
        "clock",
        "server",
        "camera",
        "audio",
        "gpio",
        "relay",
        "disk",
    ]
    assert {c.name: c.status for c in checks} == {c.name: "ok" for c in checks}, render(checks)
    found = by_name(checks)
    assert "48000 Hz" in found["audio"].summary and "embedded" in found["server"].summary
    assert "active-high" in found["relay"].summary and "mock" in found["gpio"].summary
    assert len(render(checks).splitlines()) <= 24


def test_cli_json_and_exit_code(tmp_path: Path) -> None:
    path = intercom(tmp_path, **{"relay.pulse_ms": "long"})
    run = subprocess.run(
        [sys.executable, "-m", "appliance", "doctor", "--config", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "APPLIANCE_STATE_DIR": str(tmp_path / "state")},
    )
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert report["ok"] is False
    [config] = report["checks"]
    assert config["name"] == "config" and config["status"] == "fail"
    assert "device.yaml:" in config["summary"] and "relay.pulse_ms" in config["summary"]
    assert "Traceback" not in run.stderr


async def test_unsynchronised_clock_fails(tmp_path: Path) -> None:
    probes = Probes(clock_state=lambda: TIME_ERROR, gpio_chips=lambda: [])
    found = by_name(await diagnose(str(intercom(tmp_path)), state_dir=tmp_path, probes=probes))
    assert found["clock"].status == "fail" and "timedatectl" in found["clock"].fix
    assert found["config"].status == "ok"


async def test_missing_alsa_device_fails_the_audio_check(tmp_path: Path) -> None:
    path = intercom(tmp_path, **{"media.audio.capture_device": "hw:CARD=NoSuchCard"})
    found = by_name(await diagnose(str(path), state_dir=tmp_path, probes=SYNCED))
    assert found["audio"].status == "fail", found["audio"]
    assert "NoSuchCard" in found["audio"].summary and "capture_device" in found["audio"].fix
    assert found["camera"].status == "ok" and found["gpio"].status == "ok"


def fleet_config(tmp_path: Path, url: str, token: str) -> Path:
    data = yaml.safe_load((CONFIG / "field.yaml").read_text())
    data["device"]["id"] = "door-1"
    data["server"] = {"url": url, "api_key": "test-key", "token_file": "door-1.token"}
    data["pin_factory"] = "mock"
    data["media"]["camera"] = {"source": "test"}
    data["media"]["audio"] = {"capture_device": "null", "playback_device": "null"}
    (tmp_path / "door-1.token").write_text(token)
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def test_fleet_server_token_accepted_refused_expired_unreachable(tmp_path: Path) -> None:
    door = [{"id": "door-1", "name": "Front door"}]
    async with running_server(tmp_path / "srv", api_key="test-key", users=door) as srv:

        async def server_check(name: str, token: str, url: str = srv.base_url) -> Check:
            folder = tmp_path / name
            folder.mkdir()
            path = fleet_config(folder, url, token)
            return by_name(await diagnose(str(path), state_dir=folder, probes=SYNCED))["server"]

        good = await server_check("good", srv.user_token("door-1", ttl=30 * 86400))
        assert good.status == "ok" and "token accepted, expires in 30.0 days" in good.summary
        soon = await server_check("soon", srv.user_token("door-1", ttl=86400))
        assert soon.status == "warn" and "appliance token" in soon.fix
        forever = await server_check("forever", srv.user_token("door-1"))
        assert forever.status == "ok" and "never expires" in forever.summary
        from appliance.clock import SystemClock
        from appliance.server.auth import create_token

        forged = create_token(
            "another-secret-of-the-same-length-as-real-ones", "door-1", clock=SystemClock()
        )
        refused = await server_check("forged", forged)
        assert refused.status == "fail" and "token refused" in refused.summary
        past = create_token(srv.api_secret, "door-1", clock=SystemClock(), ttl=1)
        probes = Probes(clock_state=lambda: 0, now=lambda: 4e9, daemon_pid=lambda _s: None)
        folder = tmp_path / "past"
        folder.mkdir()
        found = by_name(
            await diagnose(
                str(fleet_config(folder, srv.base_url, past)), state_dir=folder, probes=probes
            )
        )
        assert found["server"].status == "fail" and "expired" in found["server"].summary
        port = srv.port
    gone = await server_check("gone", srv.user_token("door-1"), f"http://127.0.0.1:{port}")
    assert gone.status == "fail" and "not reachable" in gone.summary


def fake_picamera2(cameras: list[str], hardware: bool) -> Picamera2Modules:
    class Picamera2:
        @staticmethod
        def global_camera_info() -> list[dict[str, Any]]:
            return [{"Model": m, "Id": f"/base/{m}", "Num": i} for i, m in enumerate(cameras)]

    return Picamera2Modules(Picamera2, object, object, hardware)


def test_camera_encoder_paths(tmp_path: Path) -> None:
    cfg = load_config(
        intercom(tmp_path, **{"media.camera.source": "picamera2"}), state_dir=tmp_path
    )
    probes = Probes(board_model=lambda: "Raspberry Pi 4 Model B Rev 1.5")
    pi4 = check_camera(cfg, probes, fake_picamera2(["imx708"], hardware=True))
    assert pi4.status == "ok" and "imx708" in pi4.summary and "hardware H.264" in pi4.summary
    probes = Probes(board_model=lambda: "Raspberry Pi 5 Model B Rev 1.0")
    pi5 = check_camera(cfg, probes, fake_picamera2(["imx708"], hardware=False))
    assert pi5.status == "warn" and "software fallback" in pi5.summary
    none = check_camera(cfg, probes, fake_picamera2([], hardware=True))
    assert none.status == "fail" and "no camera" in none.summary
    # off a Pi picamera2 does not import: the adapter says so (and only the adapter imports it)
    off_pi = check_camera(cfg, probes)
    assert off_pi.status == "fail" and "python3-picamera2" in off_pi.fix
    assert "picamera2" not in sys.modules


def test_v4l2_camera_missing(tmp_path: Path) -> None:
    path = intercom(
        tmp_path, **{"media.camera": {"source": "v4l2", "device": str(tmp_path / "video9")}}
    )
    check = check_camera(load_config(path, state_dir=tmp_path), Probes())
    assert check.status == "fail" and "video9 does not exist" in check.summary


def test_gpio_chip_missing_and_pin_in_use(tmp_path: Path) -> None:
    from gpiozero import DigitalOutputDevice
    from gpiozero.pins.mock import MockFactory

    lgpio = load_config(intercom(tmp_path, pin_factory="lgpio"), state_dir=tmp_path)
    no_chip = check_gpio(lgpio, Probes(gpio_chips=lambda: []), daemon_running=False)
    assert no_chip.status == "fail" and "no /dev/gpiochip" in no_chip.summary
    auto = lgpio.model_copy(update={"pin_factory": "auto"})
    fallback = check_gpio(auto, Probes(gpio_chips=lambda: []), daemon_running=False)
    assert fallback.status == "warn"
    chip = Probes(gpio_chips=lambda: ["/dev/gpiochip0"])
    factory = MockFactory()
    free = check_gpio(lgpio, chip, daemon_running=False, factory=factory)
    assert free.status == "ok" and "free" in free.summary, free
    holder = DigitalOutputDevice(17, pin_factory=factory)  # another program's claim on GPIO17
    try:
        busy = check_gpio(lgpio, chip, daemon_running=False, factory=factory)
    finally:
        holder.close()
    assert busy.status == "fail" and "17" in busy.summary, busy
    held = check_gpio(lgpio, chip, daemon_running=True, factory=factory)
    assert held.status == "ok" and "running daemon" in held.summary


def test_relay_polarity_as_configured(tmp_path: Path) -> None:
    low = load_config(intercom(tmp_path, **{"relay.active_high": False}), state_dir=tmp_path)
    assert "active-low: energised when GPIO low" in check_relay(low).summary
    high = load_config(intercom(tmp_path), state_dir=tmp_path)
    assert "active-high: energised when GPIO high" in check_relay(high).summary


def write_and_sync(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="no /proc/<pid>/io")
async def test_writes_per_hour_of_the_running_daemon(tmp_path: Path) -> None:
    before = process_writes(os.getpid())
    assert before is not None
    # on disk, not in tmp_path: /tmp may be a tmpfs, whose writes reach no storage (and are
    # rightly not counted)
    with tempfile.TemporaryDirectory(dir=CONFIG.parent) as disk:
        write_and_sync(Path(disk) / "blob", 4 * 1024 * 1024)
    after = process_writes(os.getpid())
    assert after is not None and after[0] - before[0] >= 4 * 1024 * 1024
    assert after[1] >= before[1] > 0
    rate = writes_per_hour(os.getpid(), Probes())
    assert rate is not None and rate >= after[0] / max(after[1], 1.0) * 3600 * 0.99
    probes = Probes(clock_state=lambda: 0, daemon_pid=lambda _s: os.getpid())
    found = by_name(await diagnose(str(intercom(tmp_path)), state_dir=tmp_path, probes=probes))
    assert "MB/h" in found["disk"].summary and found["disk"].details["write_bytes_per_hour"] > 0
    assert "held by the running daemon" in found["audio"].summary
