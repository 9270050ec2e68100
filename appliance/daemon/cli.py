"""``appliance run | check | press | status``: the daemon's sub-commands.

A config mistake exits 78 (EX_CONFIG; the units carry ``RestartPreventExitStatus=78``) with the
one-line ``file:line: key: problem`` message and never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

# ``press`` and ``status`` answer in a blink: this module's top imports only the standard
# library; the config (pydantic, YAML) and the daemon are imported by the commands using them.
if TYPE_CHECKING:
    from appliance.daemon.config import DeviceConfig


def register(subparsers: Any) -> None:
    run = subparsers.add_parser("run", help="run the appliance daemon")
    run.add_argument("--config", required=True, help="device YAML (e.g. config/intercom.yaml)")
    run.add_argument("--no-banner", action="store_true", help="do not print the console links")
    run.set_defaults(func=cmd_run)

    check = subparsers.add_parser(
        "check", help="check a device or server config; exit 78 if it is wrong"
    )
    check.add_argument("--config", required=True)
    check.add_argument(
        "--files",
        action="store_true",
        help="list the files the config names next to it (call types, token, ...)",
    )
    check.set_defaults(func=cmd_check)

    doctor = subparsers.add_parser(
        "doctor", help="check this device: config, clock, server, camera, audio, GPIO, disk"
    )
    doctor.add_argument("--config", required=True, help="device YAML (/etc/appliance/device.yaml)")
    doctor.add_argument("--json", action="store_true", help="one JSON object (fleet tooling)")
    doctor.set_defaults(func=cmd_doctor)

    press = subparsers.add_parser("press", help="press a button of the running daemon's panel")
    press.add_argument("button", help="button name from the config, e.g. call")
    press.add_argument("--hold", action="store_true", help="hold it (the button's hold action)")
    _where(press)
    press.set_defaults(func=cmd_press)

    status = subparsers.add_parser("status", help="the running daemon's state")
    status.add_argument("--json", action="store_true", help="one JSON object")
    _where(status)
    status.set_defaults(func=cmd_status)


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="device YAML of the daemon (finds its state dir)")
    parser.add_argument("--state-dir", type=Path, help="the daemon's state dir")


def default_state_dir(env: dict[str, str] | None = None) -> Path:
    from appliance.statedir import DEVICE_SYSTEM_STATE
    from appliance.statedir import default_state_dir as default

    return default(DEVICE_SYSTEM_STATE, env)


def _load(path: str, *, full: bool = False) -> DeviceConfig:
    """The device config; ``full`` (check, run) adds the cross-key and token checks, which
    ``press`` / ``status --config`` skip: they only need the socket path, and stay light."""
    from appliance.daemon.config import load_config

    cfg = load_config(path, state_dir=default_state_dir())
    if full:
        from appliance.daemon.configchecks import check_device_config

        check_device_config(path, cfg)
    return cfg


def _is_server_config(path: str) -> bool:
    """A server config (``appliance serve``) has no ``device`` section."""
    from appliance.yamlload import load_yaml

    data = load_yaml(path).data
    return isinstance(data, dict) and "device" not in data


def _print_files(config: str, files: list[Path]) -> None:
    """The named files that live in the config's own directory, relative to it: what an
    installer copies next to the config (deploy/install.sh)."""
    base = Path(config).resolve().parent
    for f in files:
        if f.resolve().is_relative_to(base) and f.exists():
            print(f.resolve().relative_to(base))


def cmd_check(args: argparse.Namespace) -> int:
    if _is_server_config(args.config):
        from appliance.server.cli import check_server_config

        settings, files = check_server_config(args.config)
        if args.files:
            _print_files(args.config, files)
            return 0
        print(
            f"{args.config}: ok — server on {settings.host}:{settings.port}, "
            f"state {settings.state_dir}, database {settings.database or 'SQLite'}, "
            f"{'TLS' if settings.tls else 'plain HTTP'}"
        )
        return 0
    cfg = _load(args.config, full=True)
    if args.files:
        _print_files(args.config, cfg.named_files())
        return 0
    server = "embedded" if cfg.server.embedded else cfg.server.url
    print(
        f"{args.config}: ok — device {cfg.device.id}, mode {cfg.mode.value}, "
        f"call {cfg.call.type}:{cfg.call_id or '<fresh>'}, server {server}, "
        f"{len(cfg.buttons)} button(s), pins {cfg.pin_factory}"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from appliance.daemon.service import serve
    from appliance.sdnotify import Notifier
    from appliance.statedir import check_writable

    cfg = _load(args.config, full=True)
    if cfg.state_dir is not None:
        check_writable(cfg.state_dir)
    notifier = Notifier.from_env()
    try:
        return asyncio.run(serve(cfg, notifier, banner=not args.no_banner))
    finally:
        notifier.close()


def cmd_doctor(args: argparse.Namespace) -> int:
    import logging

    from appliance.doctor import as_json, diagnose, render

    # the checks open devices and libraries that log at INFO: one screen means only our lines
    logging.getLogger().setLevel(logging.WARNING)
    checks = asyncio.run(diagnose(args.config, state_dir=default_state_dir()))
    sys.stdout.write(as_json(checks) + "\n" if args.json else render(checks))
    return 1 if any(c.status == "fail" for c in checks) else 0


def _socket(args: argparse.Namespace) -> Path:
    from appliance.daemon.control import SOCKET_NAME

    if args.config:
        cfg = _load(args.config)
        if cfg.control.socket is not None:
            return cfg.control.socket
        assert cfg.state_dir is not None
        return cfg.state_dir / SOCKET_NAME
    return (args.state_dir or default_state_dir()) / SOCKET_NAME


def cmd_press(args: argparse.Namespace) -> int:
    from appliance.daemon.control import request

    reply = request(_socket(args), {"cmd": "press", "button": args.button, "hold": args.hold})
    status = reply.get("status", {})
    print(f"pressed {args.button}{' (hold)' if args.hold else ''}: {status.get('call_state')}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from appliance.daemon.control import request

    status = request(_socket(args), {"cmd": "status"})["status"]
    if args.json:
        print(json.dumps(status, sort_keys=True))
        return 0
    leds = status.get("leds") or {}
    relay = status.get("relay") or {}
    lines = [
        f"device       {status['device']} ({status['mode']})",
        f"call         {status['call_state']}"
        + (f" {status['call_cid']}" if status["call_cid"] else ""),
        f"server link  {status['server_link']}",
        f"status LED   {leds.get('status')} ({leds.get('status_pattern')})",
        f"camera live  {'on' if leds.get('camera_live') else 'off'}",
        f"muted        {'yes' if status['muted'] else 'no'}",
        f"relay        {relay.get('pulses', 0)} pulse(s)" if relay else "relay        none",
    ]
    if status.get("last_error"):
        lines.append(f"last error   {status['last_error']}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
