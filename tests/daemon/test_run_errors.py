"""`appliance run` mistakes found before the daemon starts: one line, exit 78, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.cli import main
from tests.daemon.conftest import BASE


def test_state_dir_that_is_a_file_exits_78_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = tmp_path / "device.yaml"
    config.write_text(BASE + f"state_dir: {blocker / 'state'}\n")
    assert main(["run", "--config", str(config), "--no-banner"]) == 78
    err = capsys.readouterr().err
    assert err.startswith("appliance: config error: state_dir: cannot create ")
    assert err.count("\n") == 1 and "Traceback" not in err
