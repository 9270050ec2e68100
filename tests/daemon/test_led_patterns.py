"""LED patterns as people write them in YAML: a bare ``on`` / ``off`` (which YAML reads as a
boolean) is the pattern it spells, as the shipped configs' comments promise."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.daemon.config import load_config
from appliance.errors import ConfigError
from tests.daemon.conftest import BASE


def write(tmp_path: Path, patterns: str) -> Path:
    text = BASE.replace("status: {pin: 27}", f"status: {{pin: 27, patterns: {patterns}}}")
    assert text != BASE
    path = tmp_path / "device.yaml"
    path.write_text(text)
    return path


def test_bare_on_and_off_are_patterns(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "{idle: on, in_call: off, ringing: blink 0.2 0.2}"))
    assert cfg.leds.status is not None
    table = {state: str(p) for state, p in cfg.leds.status.table().items()}
    assert (table["idle"], table["in_call"], table["ringing"]) == ("on", "off", "blink 0.2 0.2")


def test_other_non_patterns_still_fail_with_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"device\.yaml:\d+: leds\.status\.patterns"):
        load_config(write(tmp_path, "{idle: 5}"))
