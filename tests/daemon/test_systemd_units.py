"""systemd-analyze verify on both units (with an ExecStart that exists on this machine)."""

from __future__ import annotations

import re
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


SCORE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+)")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", ["appliance.service", "appliance-server.service"])
def test_security_exposure_at_most_2_5(tmp_path: Path, name: str) -> None:
    unit = tmp_path / name
    unit.write_text(units()[name].replace("/opt/appliance/.venv/bin/appliance", "/bin/true"))
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = SCORE.search(result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.5, result.stdout


@pytest.mark.parametrize("name", ["appliance.service", "appliance-server.service"])
def test_start_limit_stops_a_restart_loop(name: str) -> None:
    """An unrecoverable start failure (216/GROUP) must not restart every 2 s forever."""
    text = units()[name]
    interval = re.search(r"^StartLimitIntervalSec=(\d+)$", text, re.M)
    burst = re.search(r"^StartLimitBurst=(\d+)$", text, re.M)
    assert interval and burst, "no start limit"
    restart_sec = float(re.search(r"^RestartSec=(\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
    # the burst must be reachable within the interval by a unit failing at once
    assert int(interval.group(1)) > 0 and int(burst.group(1)) * restart_sec < int(interval.group(1))
    assert "Restart=always" in text and "SystemCallFilter=@system-service" in text
    assert "UMask=0077" in text and "CapabilityBoundingSet=\n" in text
