"""A Debian bookworm root made with debootstrap, cached outside the tree and keyed by what goes in.

``python -m tests.field.rootfs [--arch arm64]`` builds (or finds) one and prints its path. The root
holds systemd and the Debian packages that ``deploy/install.sh`` asks for (so the installer's own
apt step finds them and the test needs no archive access once the root is cached). A foreign
architecture runs under qemu-user-static through binfmt_misc, which is registered here when it is not.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("APPLIANCE_FIELD_CACHE", "/var/cache/appliance-field"))
SUITE = "bookworm"
# Bump when the recipe changes in a way the key does not see.
RECIPE = "2"
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "ca-certificates", "iproute2", "procps"]
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
QEMU_BINFMT = {"arm64": "qemu-aarch64"}


def installer_packages(*, server: bool = False) -> list[str]:
    cmd = ["bash", str(ROOT / "deploy" / "install.sh"), "--no-pi", "--print-packages"]
    if server:
        cmd.insert(2, "--server")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return out.split()


def packages() -> list[str]:
    return sorted({*BASE_PACKAGES, *installer_packages(), *installer_packages(server=True)})


def host_mirror() -> str:
    """The Debian mirror the host's apt uses (deb822 or one-line sources)."""
    if os.environ.get("APPLIANCE_FIELD_MIRROR"):
        return os.environ["APPLIANCE_FIELD_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for block in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", block, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", block, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
        for line in text.splitlines():
            m = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line)
            if m:
                return m.group(1)
    raise SystemExit("no bookworm mirror in /etc/apt; set APPLIANCE_FIELD_MIRROR")


def key(arch: str) -> str:
    h = hashlib.sha256(f"{RECIPE}\n{SUITE}\n{arch}\n{' '.join(packages())}".encode())
    return h.hexdigest()[:16]


def ensure_binfmt(arch: str) -> None:
    """Foreign binaries need qemu-user-static registered with binfmt_misc (F flag: the
    interpreter is opened at registration, so it works inside the root without a copy)."""
    name = QEMU_BINFMT.get(arch)
    if name is None:
        return
    if not (BINFMT_DIR / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], check=True)
    if not (BINFMT_DIR / name).exists():
        subprocess.run(["update-binfmts", "--enable", name], check=True)
    if "enabled" not in (BINFMT_DIR / name).read_text():
        raise SystemExit(f"binfmt_misc: {name} is registered but disabled")


def build(arch: str, *, log: bool = True) -> Path:
    """The cached root for ``arch`` (built when absent). Returns its path."""
    native = subprocess.run(
        ["dpkg", "--print-architecture"], check=True, capture_output=True, text=True
    ).stdout.strip()
    target = CACHE / f"bookworm-{arch}-{key(arch)}"
    if (target / ".complete").exists():
        return target
    missing = [t for t in ("debootstrap", "systemd-nspawn") if shutil.which(t) is None]
    if arch != native and shutil.which("qemu-aarch64-static") is None:
        missing.append("qemu-user-static")
    if missing:
        raise SystemExit(f"missing tools: {' '.join(missing)} (make test-field installs them)")
    if arch != native:
        ensure_binfmt(arch)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f".build-{arch}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.monotonic()
    cmd = [
        "nice",
        "-n",
        "10",
        "debootstrap",
        "--variant=minbase",
        f"--arch={arch}",
        f"--include={','.join(packages())}",
        SUITE,
        str(tmp),
        host_mirror(),
    ]
    if log:
        print(f"building {target} ({' '.join(cmd[3:6])} ...)", file=sys.stderr, flush=True)
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"debootstrap failed ({result.returncode}):\n{result.stdout[-4000:]}")
    # What a booted image needs and debootstrap leaves out.
    (tmp / "etc" / "hostname").write_text("appliance-field\n")
    (tmp / "etc" / "machine-id").write_text("")
    subprocess.run(["chroot", str(tmp), "apt-get", "clean"], check=True)
    (tmp / ".complete").write_text(f"{time.monotonic() - started:.0f} s\n")
    tmp.rename(target)
    if log:
        print(f"built {target} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return target


def wheelhouse() -> Path:
    """Wheels of every dependency for this machine's Python (the container's is the same
    bookworm 3.11), so the installer runs in the container without a network: pip honours
    ``PIP_NO_INDEX`` / ``PIP_FIND_LINKS``. Keyed by pyproject.toml; pyalsaaudio is built here."""
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    target = CACHE / f"wheels-{hashlib.sha256(pyproject).hexdigest()[:16]}"
    if (target / ".complete").exists():
        return target
    tmp = CACHE / f".wheels-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip"]
    build = tmp / "src"
    # a copy: pip builds in the tree, and the work tree is not ours to litter
    shutil.copytree(ROOT, build, ignore=shutil.ignore_patterns(".*", "state", "test-artifacts"))
    subprocess.run(
        ["nice", "-n", "10", *pip, "wheel", "-q", "-w", str(tmp), str(build)], check=True
    )
    subprocess.run(
        [*pip, "download", "-q", "-d", str(tmp), "pip", "setuptools>=77", "wheel"], check=True
    )
    shutil.rmtree(build)
    for own in tmp.glob("appliance-*.whl"):
        own.unlink()
    (tmp / ".complete").write_text("")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="amd64")
    args = parser.parse_args()
    print(build(args.arch))


if __name__ == "__main__":
    main()
