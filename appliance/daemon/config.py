"""The device YAML (``appliance run --config F``) as typed pydantic models.

Every model forbids unknown keys; every mistake surfaces as one line
``file:line: key: problem (hint: ...)`` through :mod:`appliance.yamlload`. Relative paths are
resolved against the config file's folder; the result is loaded once at the edge (the CLI) and
handed down — components never read files or the environment on their own.
"""

from __future__ import annotations

import ipaddress
import re
import string
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from appliance.errors import ConfigError
from appliance.hardware.config import (
    DEFAULT_PATTERNS,
    LED_STATES,
    Action,
    ButtonConfig,
    LedsConfig,
    Model,
    Pattern,
    RelayConfig,
    SimpleLed,
    StatusLed,
)
from appliance.media.audio.settings import AudioSettings
from appliance.yamlload import YamlDocument, load_yaml

ID_RE = re.compile(r"^[A-Za-z0-9@_.-]{1,64}$")


def id_validator(kind: str) -> AfterValidator:
    """The check of a user or device id (``Annotated[str, id_validator("user")]``): the
    characters the server accepts in ids, 1-64 of them; ``kind`` names it in the error."""

    def check(value: str) -> str:
        if not ID_RE.match(value):
            raise ValueError(f"{kind} ids are 1-64 characters of letters, digits, @ _ . -")
        return value

    return AfterValidator(check)


class Mode(StrEnum):
    CALL = "call"
    ANSWER = "answer"
    AUTO_JOIN = "auto_join"


class UserSeed(Model):
    id: Annotated[str, id_validator("user")]
    name: str | None = None
    role: str = "user"
    teams: list[str] = Field(default_factory=list)
    custom: dict[str, Any] = Field(default_factory=dict)


class TlsPaths(Model):
    cert: Path
    key: Path


class EmbeddedServer(Model):
    """The call server running inside the daemon (a stand-alone intercom needs no other host).
    ``tls``: browsers give a page camera and microphone only over HTTPS (or on localhost), so a
    console opened from a phone on the LAN needs ``self-signed`` (made once, kept in the state
    dir) or your ``{cert, key}``."""

    host: str = "127.0.0.1"
    # Not 3030: Stream's client SDKs rewrite ":3030" to ":8800" in their WebSocket URL.
    port: int = Field(default=3040, ge=0, le=65535)
    call_types: Path | None = None
    users: list[UserSeed] = Field(default_factory=list)
    secret_file: Path | None = None
    api_key: str = "appliance"
    database: str | None = None
    public_url: str | None = None
    tls: Literal["self-signed"] | TlsPaths | None = None
    # Web Push to the residents' phones: the server's ``push`` settings (config/server.yaml,
    # README "Push notifications"); checked when the embedded server starts.
    push: dict[str, Any] | None = None


class ServerConfig(Model):
    """``server: embedded`` (or an ``embedded:`` block), or a remote ``url`` + ``api_key`` with a
    device user token (``token`` or ``token_file``): devices hold a user token, never the secret."""

    embedded: EmbeddedServer | None = None
    url: str | None = None
    api_key: str | None = None
    token: str | None = None
    token_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        if data == "embedded":
            return {"embedded": {}}
        if isinstance(data, dict) and "embedded" in data and data["embedded"] in (None, True):
            return {**data, "embedded": {}}
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("the server url starts with http:// or https://")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _one(self) -> ServerConfig:
        remote = (self.url, self.api_key, self.token, self.token_file)
        if self.embedded is not None:
            if any(x is not None for x in remote):
                raise ValueError("an embedded server takes no url, api_key or token")
            return self
        if self.url is None or self.api_key is None:
            raise ValueError("write either 'server: embedded' or url + api_key + token")
        if (self.token is None) == (self.token_file is None):
            raise ValueError("give exactly one of token or token_file")
        return self


class DeviceUser(Model):
    id: Annotated[str, id_validator("device")]
    name: str | None = None
    team: str | None = None
    model: str | None = None


class Member(Model):
    user_id: str
    role: str = "call_member"
    custom: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        if isinstance(data, str):
            user, _, role = data.partition(":")
            return {"user_id": user, "role": role or "call_member"}
        return data


class CallConfig(Model):
    type: str = "default"
    id: str = ""
    members: list[Member] = Field(default_factory=list)
    ring: list[str] | None = None
    custom: dict[str, Any] = Field(default_factory=dict)
    settings_override: dict[str, Any] = Field(default_factory=dict)
    starts_at: datetime | None = None
    video: bool = True

    @field_validator("id")
    @classmethod
    def _template(cls, value: str) -> str:
        for _, field, spec, conv in string.Formatter().parse(value):
            if field is not None and (field != "device" or spec or conv):
                raise ValueError(f"unknown placeholder {{{field}}}; only {{device}} is allowed")
        return value

    def call_id(self, device_id: str) -> str:
        """The configured id with ``{device}`` filled in; "" means a fresh id each call (then
        there is no call to get-or-create at start: consoles list the device only once it rang)."""
        return self.id.format(device=device_id)


class CameraConfig(Model):
    source: Literal["test", "file", "v4l2", "picamera2", "none"] = "test"
    width: int = Field(default=640, ge=16, le=3840)
    height: int = Field(default=480, ge=16, le=2160)
    fps: int = Field(default=15, ge=1, le=60)
    bitrate: int = Field(default=1_000_000, ge=50_000, le=20_000_000)
    file: Path | None = None
    device: str | None = None

    @model_validator(mode="after")
    def _file(self) -> CameraConfig:
        if self.source == "file" and self.file is None:
            raise ValueError("source 'file' needs file: PATH (an H.264 elementary stream)")
        if self.source == "test" and (self.width < 128 or self.height < 144):
            raise ValueError("the test source draws a 128x144 block code: use at least 128x144")
        return self


class MediaConfig(Model):
    camera: CameraConfig = Field(default_factory=CameraConfig)
    display: bool = False
    audio: AudioSettings = Field(default_factory=lambda: AudioSettings.model_validate({}))


class SoundsConfig(Model):
    """WAV files; ``builtin`` uses the sounds shipped with the package, ``none`` stays silent."""

    chime: str = "builtin"
    ringback: str = "builtin"
    pre_announce: str = "builtin"


class AutoAnswer(Model):
    users: list[str] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=list)
    delay_s: float = Field(default=3.0, ge=0, le=120)


class Timings(Model):
    ring_timeout_s: float = Field(default=60.0, gt=0)
    missed_s: float = Field(default=60.0, ge=0)
    connect_timeout_s: float = Field(default=20.0, gt=0)
    accept_join_wait_s: float = Field(default=3.0, ge=0, le=30)
    appointment_poll_s: float = Field(default=60.0, ge=0)
    rejoin_min_s: float = Field(default=1.0, gt=0)
    rejoin_max_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _backoff(self) -> Timings:
        if self.rejoin_min_s > self.rejoin_max_s:
            raise ValueError("rejoin_min_s must not exceed rejoin_max_s")
        return self


class ControlConfig(Model):
    socket: Path | None = None


class MetricsConfig(Model):
    """The daemon's Prometheus endpoint (``appliance/daemonmetrics.py``): ``GET /metrics`` on
    ``listen``. Loopback needs nothing more; any other address needs ``token``."""

    listen: str = "127.0.0.1:9310"
    token: str | None = Field(default=None, min_length=16, max_length=256)

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:9310, [::1]:9310)")
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            if host != "localhost":
                raise ValueError(f"{host!r} is not an IP address or localhost") from None
        return value

    @model_validator(mode="after")
    def _remote_needs_token(self) -> MetricsConfig:
        host = self.host
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        if not loopback and not self.token:
            raise ValueError(
                f"listen {self.listen!r} is not a loopback address: set metrics.token too "
                "(scrapes then send Authorization: Bearer <token>)"
            )
        return self


class DeviceConfig(Model):
    device: DeviceUser
    server: ServerConfig
    call: CallConfig = Field(default_factory=CallConfig)
    mode: Mode = Mode.CALL
    buttons: list[ButtonConfig] = Field(default_factory=list)
    leds: LedsConfig = Field(default_factory=LedsConfig)
    relay: RelayConfig | None = None
    pin_factory: Literal["auto", "mock", "lgpio", "rpigpio", "pigpio", "native"] = "auto"
    media: MediaConfig = Field(default_factory=MediaConfig)
    sounds: SoundsConfig = Field(default_factory=SoundsConfig)
    auto_answer: AutoAnswer | None = None
    timings: Timings = Field(default_factory=Timings)
    state_dir: Path | None = None
    control: ControlConfig = Field(default_factory=ControlConfig)
    # Off unless present: ``metrics: {}`` serves on 127.0.0.1:9310.
    metrics: MetricsConfig | None = None

    @field_validator("buttons")
    @classmethod
    def _unique_buttons(cls, value: list[ButtonConfig]) -> list[ButtonConfig]:
        names = [b.name for b in value]
        pins = [b.pin for b in value]
        for seen, what in ((names, "name"), (pins, "pin")):
            dup = {x for x in seen if seen.count(x) > 1}
            if dup:
                raise ValueError(f"two buttons share the {what} {sorted(dup)[0]!r}")
        return value

    def sound_files(self) -> dict[str, Path]:
        """Overrides for the chime player (its names: chime, ringback, preannounce)."""
        names = {"chime": "chime", "ringback": "ringback", "pre_announce": "preannounce"}
        return {
            player_name: Path(value)
            for field_name, player_name in names.items()
            if (value := getattr(self.sounds, field_name)) not in ("builtin", "none")
        }

    def named_files(self) -> list[Path]:
        """Every file this config names (resolved): what must travel with it."""
        out: list[Path] = []
        e = self.server.embedded
        if e is not None:
            out += [p for p in (e.call_types, e.secret_file) if p is not None]
            if isinstance(e.tls, TlsPaths):
                out += [e.tls.cert, e.tls.key]
        if self.server.token_file is not None:
            out.append(self.server.token_file)
        if self.media.camera.file is not None:
            out.append(self.media.camera.file)
        return out + list(self.sound_files().values())

    def button(self, name: str) -> ButtonConfig | None:
        return next((b for b in self.buttons if b.name == name), None)

    @property
    def call_id(self) -> str:
        return self.call.call_id(self.device.id)

    def device_custom(self) -> dict[str, Any]:
        """What the daemon publishes as ``custom.device`` on its user (docs/architecture.md, "Devices").

        With a relay it carries ``unlock_roles``: the console shows Unlock only to members whose
        call role is listed (the device still checks every unlock itself)."""
        custom: dict[str, Any] = {
            "relay": self.relay is not None,
            "video": "send-receive" if self.media.display else "send-only",
            "model": self.device.model,
            "mode": self.mode.value,
        }
        if self.relay is not None:
            custom["unlock_roles"] = list(self.relay.unlock_roles)
        return custom


def _resolve(doc: YamlDocument, cfg: DeviceConfig, base: Path, state_default: Path) -> DeviceConfig:
    """Resolve relative paths against the config file and check that named files exist."""

    def path(p: Path | None, loc: tuple[str | int, ...], must_exist: bool = True) -> Path | None:
        if p is None:
            return None
        full = p if p.is_absolute() else base / p
        if must_exist and not full.exists():
            raise doc.error(loc, f"file {str(full)!r} does not exist")
        return full

    state_dir = cfg.state_dir
    state_dir = state_default if state_dir is None else (path(state_dir, ("state_dir",), False))
    server = cfg.server
    if server.embedded is not None:
        e = server.embedded
        tls = e.tls
        if isinstance(tls, TlsPaths):
            tls = TlsPaths(
                cert=path(tls.cert, ("server", "embedded", "tls", "cert")) or tls.cert,
                key=path(tls.key, ("server", "embedded", "tls", "key")) or tls.key,
            )
        emb = e.model_copy(
            update={
                "call_types": path(e.call_types, ("server", "embedded", "call_types")),
                "secret_file": path(e.secret_file, ("server", "embedded", "secret_file"), False),
                "tls": tls,
            }
        )
        server = server.model_copy(update={"embedded": emb})
    else:
        token_file = path(server.token_file, ("server", "token_file"))
        server = server.model_copy(update={"token_file": token_file})
    camera = cfg.media.camera
    if camera.file is not None:
        camera = camera.model_copy(update={"file": path(camera.file, ("media", "camera", "file"))})
    sounds = {}
    for name in ("chime", "ringback", "pre_announce"):
        value = getattr(cfg.sounds, name)
        if value not in ("builtin", "none"):
            sounds[name] = str(path(Path(value), ("sounds", name)))
    media = cfg.media.model_copy(update={"camera": camera})
    return cfg.model_copy(
        update={
            "state_dir": state_dir,
            "server": server,
            "media": media,
            "sounds": cfg.sounds.model_copy(update=sounds),
        }
    )


def load_config(path: str | Path, *, state_dir: Path | None = None) -> DeviceConfig:
    """Load and check a device config. ``state_dir`` is the default when the YAML names none
    (the CLI passes systemd's ``$STATE_DIRECTORY`` or ``./state``)."""
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise doc.error((), "a device config is a mapping (device:, server:, call:, ...)")
    cfg = _validate(doc)
    _check_modes(doc, cfg)
    base = Path(path).resolve().parent
    return _resolve(doc, cfg, base, state_dir or Path("state").resolve())


def _validate(doc: YamlDocument) -> DeviceConfig:
    try:
        return DeviceConfig.model_validate(doc.data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and "[" in p))
        if first["type"] == "extra_forbidden":
            known = _fields_at(DeviceConfig, loc[:-1])
            hint = f"known keys: {', '.join(known)}" if known else None
            raise doc.error(loc, "unknown key", hint) from None
        if first["type"] == "missing":
            raise doc.error(loc, "required key is missing") from None
        message = str(first["msg"]).removeprefix("Value error, ")
        value = first.get("input")
        if first["type"] != "value_error" and not isinstance(value, dict | list):
            message = f"{value!r}: {message}"
        raise doc.error(loc, message) from None


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the model at ``loc`` accepts (for the "unknown key" hint)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return []
        current = fields[part].annotation
        for arg in getattr(current, "__args__", ()):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
                break
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _check_modes(doc: YamlDocument, cfg: DeviceConfig) -> None:
    if cfg.mode is Mode.AUTO_JOIN and not cfg.call_id:
        raise doc.error(
            ("call", "id"), "auto_join needs a fixed call id", hint="e.g. id: site-{device}"
        )
    if cfg.mode is Mode.CALL and not cfg.call.members:
        raise doc.error(("call", "members"), "mode 'call' needs members to ring")
    for i, b in enumerate(cfg.buttons):
        for kind in ("press", "hold"):
            action = getattr(b, kind)
            if action is Action.JOIN and cfg.mode is not Mode.AUTO_JOIN:
                raise doc.error(("buttons", i, kind), "'join' is only for mode auto_join")
    if cfg.auto_answer is not None and cfg.mode is not Mode.ANSWER:
        raise doc.error(("auto_answer",), "auto_answer applies to mode 'answer' only")


__all__ = [
    "DEFAULT_PATTERNS",
    "LED_STATES",
    "Action",
    "ButtonConfig",
    "CallConfig",
    "CameraConfig",
    "ConfigError",
    "DeviceConfig",
    "LedsConfig",
    "Mode",
    "Pattern",
    "RelayConfig",
    "SimpleLed",
    "StatusLed",
    "load_config",
]
