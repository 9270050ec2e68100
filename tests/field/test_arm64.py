"""The same Debian bookworm root for arm64 (a Raspberry Pi's architecture), emulated by
qemu-user-static through binfmt_misc, with the installer run as on a device: the package index's
aarch64 wheels (aiortc, av, numpy, cryptography ...) and pyalsaaudio built from source. Then a
smoke run: ``appliance check`` of every shipped config and the unit tests that need no browser.

``make test-arm64``; the root is cached like the amd64 one. The container shares the host's
network (pip reaches the package index); nothing in it listens on a fixed port.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.field import rootfs
from tests.field.container import Container, copy_root, have_tools
from tests.field.test_field import copy_source

pytestmark = [pytest.mark.timeout(5400)]

ROOT = Path(__file__).resolve().parents[2]
RUN = Path("/var/tmp/appliance-arm64-test")
SRC = "/root/appliance-src"
VENV = "/opt/appliance/.venv"
FIGURES: dict[str, object] = {}
# pip in the container trusts what the host's pip trusts (a site CA in front of the index, here)
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
PIP_ENV = {"PIP_CERT": "/etc/ssl/host-ca-certificates.crt"} if HOST_CA.exists() else {}
# Unit tests with no browser, no PostgreSQL, no network namespaces, no second process tree.
SMOKE = ["tests/hardware", "tests/daemon/test_config.py", "tests/daemon/test_configchecks.py"]
SMOKE += ["tests/daemon/test_led_patterns.py", "tests/daemon/test_journal.py"]
SMOKE += ["tests/daemon/test_systemd_units.py", "tests/daemon/test_doctor.py"]
SMOKE += ["tests/media/test_sources.py", "tests/server/test_settings.py"]


@pytest.fixture(scope="module")
def box() -> Iterator[Container]:
    missing = have_tools()
    if missing:
        pytest.fail(f"make test-arm64 needs {', '.join(missing)}")
    t0 = time.monotonic()
    root = rootfs.build("arm64")
    FIGURES["root_ready_s"] = round(time.monotonic() - t0, 1)
    copy_root(root, RUN)
    copy_source(RUN / SRC.lstrip("/"))
    container = Container(
        RUN,
        binds_ro={HOST_CA: PIP_ENV["PIP_CERT"]} if PIP_ENV else {},
        log=RUN.parent / "arm64-nspawn.log",
        name="appliance-arm64",
        private_network=False,
    )
    started = time.monotonic()
    container.boot(timeout=600)
    FIGURES["boot_s"] = round(time.monotonic() - started, 1)
    try:
        yield container
    finally:
        container.shutdown()
        print("\narm64 figures:", json.dumps(FIGURES, indent=1), file=sys.stderr)
        out = ROOT / "test-artifacts"
        out.mkdir(exist_ok=True)
        (out / "arm64.json").write_text(json.dumps(FIGURES, indent=1) + "\n")


def test_it_is_arm64(box: Container) -> None:
    assert box.run(["uname", "-m"]).stdout.strip() == "aarch64"
    assert box.run(["dpkg", "--print-architecture"]).stdout.strip() == "arm64"


def test_install_from_aarch64_wheels(box: Container) -> None:
    started = time.monotonic()
    out = box.run(
        ["bash", f"{SRC}/deploy/install.sh", "--no-start"], timeout=5000, env=PIP_ENV
    ).stdout
    FIGURES["install_s"] = round(time.monotonic() - started, 1)
    assert "ok — device entrance" in out, out
    versions = box.run(
        [
            f"{VENV}/bin/python",
            "-c",
            "import aiortc, av, numpy, alsaaudio, platform; "
            "print(platform.machine(), aiortc.__version__, av.__version__, numpy.__version__)",
        ]
    ).stdout.split()
    FIGURES["versions"] = versions
    assert versions[0] == "aarch64"
    wheels = box.run([f"{VENV}/bin/pip", "list", "--format=json"]).stdout
    assert "pyalsaaudio" in wheels


def test_check_every_shipped_config(box: Container) -> None:
    names = sorted(p.name for p in (ROOT / "config").glob("*.yaml") if p.name != "call-types.yaml")
    for name in names:
        done = box.run(
            [f"{VENV}/bin/appliance", "check", "--config", f"{SRC}/config/{name}"],
            env={"APPLIANCE_STATE_DIR": "/tmp/check-state"},
        )
        assert ": ok — " in done.stdout, (name, done.stdout, done.stderr)
    FIGURES["configs_checked"] = names


def test_unit_tests_without_a_browser(box: Container) -> None:
    box.run([f"{VENV}/bin/pip", "install", "-q", "pytest>=8", "pytest-asyncio>=0.24",
             "pytest-timeout>=2.3", "pyyaml"], timeout=1800, env=PIP_ENV)  # fmt: skip
    started = time.monotonic()
    done = box.run(
        ["bash", "-c", f"cd {SRC} && {VENV}/bin/python -m pytest -q -p no:cacheprovider "
         f"-m 'not e2e and not netns and not postgres' {' '.join(SMOKE)}"],
        check=False,
        timeout=3600,
        env=PIP_ENV,
    )  # fmt: skip
    FIGURES["unit_tests_s"] = round(time.monotonic() - started, 1)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
    FIGURES["unit_tests"] = summary
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_binfmt_runs_the_emulator() -> None:
    status = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").read_text()
    assert "enabled" in status and "F" in status.split("flags: ")[1]
