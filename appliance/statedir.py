"""Where a process keeps its state when its config names no ``state_dir``.

Under systemd, ``StateDirectory=`` hands the unit its directory in ``$STATE_DIRECTORY``; a shell
on the same machine (``appliance status``, ``appliance token``) has no such variable and finds the
unit's directory under ``/var/lib``; a laptop uses ``./state``. The CLI asks once, at the edge.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from appliance.errors import ConfigError

DEVICE_SYSTEM_STATE = Path("/var/lib/appliance")
SERVER_SYSTEM_STATE = Path("/var/lib/appliance-server")


def default_state_dir(system: Path, env: Mapping[str, str] | None = None) -> Path:
    """``$APPLIANCE_STATE_DIR``, else ``$STATE_DIRECTORY`` (its first entry), else ``./state``
    unless only the system unit's directory exists."""
    environ = os.environ if env is None else env
    for name in ("APPLIANCE_STATE_DIR", "STATE_DIRECTORY"):
        if environ.get(name):
            return Path(environ[name].split(":")[0]).resolve()
    local = Path("state").resolve()
    if not local.exists() and system.exists():
        return system
    return local


def check_writable(state_dir: Path) -> None:
    """An unusable state dir is a one-line config error (exit 78), not a traceback at start."""
    hint = "a writable directory; under systemd leave it unset (StateDirectory=)"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"cannot create {state_dir} ({err.strerror or err})", key="state_dir", hint=hint
        ) from err
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"{state_dir} is not writable by this user", key="state_dir", hint=hint)
