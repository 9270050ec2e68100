"""Device-config checks that look across keys or into referenced files, run by ``appliance check``
and ``appliance run`` after the typed validation of :func:`appliance.daemon.config.load_config`: a GPIO
pin used twice, a remote server URL that cannot be used, a device token that is not a JWT or
belongs to another user. Each mistake is one ``file:line: key: problem (hint)`` ConfigError."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.errors import ConfigError
from appliance.yamlload import YamlDocument, load_yaml

if TYPE_CHECKING:
    from appliance.daemon.config import DeviceConfig

Loc = tuple[Any, ...]


def check_device_config(path: str | Path, cfg: DeviceConfig) -> None:
    doc = load_yaml(path)
    check_pins(doc, cfg)
    check_remote_server(doc, cfg)


def check_pins(doc: YamlDocument, cfg: DeviceConfig) -> None:
    used: list[tuple[Loc, str]] = [
        (("buttons", i, "pin"), button.pin) for i, button in enumerate(cfg.buttons)
    ]
    if cfg.leds.status is not None:
        used.append((("leds", "status", "pin"), cfg.leds.status.pin))
    if cfg.leds.camera_live is not None:
        used.append((("leds", "camera_live", "pin"), cfg.leds.camera_live.pin))
    if cfg.relay is not None:
        used.append((("relay", "pin"), cfg.relay.pin))
    first: dict[str, Loc] = {}
    for loc, pin in used:
        if pin in first:
            other = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first[pin])
            other = other.lstrip(".")
            raise doc.error(
                loc,
                f"pin {pin} is already used by {other}",
                hint="each button, LED and relay needs its own pin",
            )
        first[pin] = loc


def check_remote_server(doc: YamlDocument, cfg: DeviceConfig) -> None:
    import jwt

    from appliance.client.client import check_base_url

    server = cfg.server
    if server.embedded is not None:
        return
    try:
        check_base_url(server.url or "")
    except ConfigError as err:
        raise doc.error(("server", "url"), err.message) from err
    if server.token_file is not None:
        loc: Loc = ("server", "token_file")
        token = server.token_file.read_text().strip()
    else:
        loc = ("server", "token")
        token = (server.token or "").strip()
    hint = f"appliance token --config server.yaml --user {cfg.device.id}"
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as err:
        raise doc.error(loc, f"the token is not a JWT ({err})", hint=hint) from err
    user_id = claims.get("user_id")
    if user_id is not None and user_id != cfg.device.id:
        raise doc.error(
            loc,
            f"the token is for user {user_id!r}, not for device.id {cfg.device.id!r}",
            hint=hint,
        )
