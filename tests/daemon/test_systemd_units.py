"""systemd-analyze verify on both units (with an ExecStart that exists on this machine)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"


def units() -> dict[str, str]:
    return {p.name: p.read_text() for p in UNITS.glob("*.service")}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_units_verify(tmp_path: Path) -> None:
    names = []
    for name, text in units().items():
        (tmp_path / name).write_text(
            text.replace("/opt/appliance/.venv/bin/appliance", "/bin/true")
        )
        names.append(str(tmp_path / name))
    assert len(names) == 2
    result = subprocess.run(
        ["systemd-analyze", "verify", *names], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "appliance" not in result.stderr, result.stderr


def test_device_unit_settings() -> None:
    text = units()["appliance.service"]
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "RestartPreventExitStatus=78",
        "After=time-sync.target network-online.target",
        "DynamicUser=yes",
        "SupplementaryGroups=gpio audio video",
        "StateDirectory=appliance",
        "ConfigurationDirectory=appliance",
        "DeviceAllow=/dev/gpiochip0 rw",
        "DeviceAllow=char-alsa rw",
        "DeviceAllow=char-video4linux rw",
        "DeviceAllow=char-media rw",
        "DeviceAllow=/dev/dma_heap/linux,cma rw",
        "Environment=LG_WD=",
    ):
        assert line in text, line
    assert "PrivateDevices=" not in text.replace("Not PrivateDevices=", "")


def test_server_unit_has_no_hardware() -> None:
    text = units()["appliance-server.service"]
    assert "PrivateDevices=yes" in text and "RestartPreventExitStatus=78" in text
    assert "DeviceAllow" not in text and "SupplementaryGroups" not in text
