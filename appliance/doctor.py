"""``appliance doctor``: what a device needs, checked on the device and explained in one screen.

Each check gives ``ok``, ``warn`` or ``fail``, one line of what it found and, when not ok, one
line of what to do (:mod:`appliance.diagnosis`); the hardware checks are in
:mod:`appliance.hardwarechecks`. ``--json`` gives the same as one object for fleet tooling.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from appliance.daemon.config import DeviceConfig
from appliance.diagnosis import TIME_ERROR, Check, Probes, Status
from appliance.errors import ApplianceError
from appliance.hardwarechecks import check_audio, check_camera, check_disk, check_gpio

TOKEN_WARN_SECONDS = 7 * 86400


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


# ------------------------------------------------------------------------------- driver


async def diagnose(
    path: str,
    *,
    state_dir: Path,
    probes: Probes | None = None,
    transport: Any = None,
    picamera2: Any = None,
) -> list[Check]:
    from appliance.daemon.config import load_config
    from appliance.daemon.configchecks import check_device_config
    from appliance.daemon.control import SOCKET_NAME

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
