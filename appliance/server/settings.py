"""The call server's settings (``config/server.yaml``), loaded once at the edge and handed down.

``load_settings`` is the only place that reads the environment (``APPLIANCE_API_KEY``,
``APPLIANCE_API_SECRET``); ``ensure_secret`` is the only place that reads or writes the
generated secret file (``<state_dir>/api_secret``, mode 0600), so a server with no configured
secret keeps the same one, and its tokens, across restarts.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from appliance.errors import ConfigError
from appliance.yamlload import load_yaml

log = logging.getLogger(__name__)

SECRET_FILE = "api_secret"
DEFAULT_API_KEY = "appliance"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeedUser(_Strict):
    """A user created (or updated) at every start."""

    id: str = Field(min_length=1, max_length=255)
    name: str | None = None
    role: str = "user"
    teams: list[str] = Field(default_factory=list)
    custom: dict[str, Any] = Field(default_factory=dict)


class IceServer(_Strict):
    """A STUN or TURN server handed to clients on join.

    TURN with ``secret`` issues coturn ``use-auth-secret`` credentials: username
    ``<expiry>:<user_id>``, password ``base64(HMAC-SHA1(secret, username))``, valid ``ttl_seconds``.
    """

    urls: list[str] = Field(min_length=1)
    username: str | None = None
    credential: str | None = None
    secret: str | None = None
    ttl_seconds: int = Field(default=86_400, ge=60)

    @field_validator("urls", mode="before")
    @classmethod
    def _one_url(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("urls")
    @classmethod
    def _schemes(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"{url!r} is not a stun:, stuns:, turn: or turns: URL")
        return value


class TlsFiles(_Strict):
    cert: Path
    key: Path


class Limits(_Strict):
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_members_per_request: int = Field(default=100, ge=1)
    # Custom data of a call, a member, a user (users travel inside events: keep them small).
    max_custom_bytes: int = Field(default=5_120, ge=16)
    # Slow clients (httpguard.py): a request header must be complete this long after its first
    # byte, a body this long after its header; else 408 and the connection is closed.
    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    http_body_timeout_seconds: float = Field(default=30.0, gt=0)
    # Open connections (WebSockets included) per client address; 0 = no cap. A reverse proxy
    # makes every client one address: list its address in unlimited_addresses.
    max_connections_per_address: int = Field(default=64, ge=0)
    unlimited_addresses: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])


class CorsSettings(_Strict):
    """Browser apps on other origins that may call the API (``appliance/server/api/cors.py``)."""

    # Exact origins, e.g. "https://app.example.org" (scheme, host, port); none by default.
    allowed_origins: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*":
                raise ValueError("'*' is not allowed: every API request carries credentials")
            if not origin.startswith(("http://", "https://")) or "/" in origin.split("://", 1)[
                1
            ].rstrip("/"):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.org")
        return [o.rstrip("/") for o in value]


# The browsers' push services (Chrome/Edge-on-Android/Samsung/Opera: FCM; Firefox: autopush;
# Safari on macOS and iOS 16.4+: Apple; Edge on Windows: WNS).
DEFAULT_PUSH_HOSTS = [
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "push.services.mozilla.com",
    "web.push.apple.com",
    "*.notify.windows.com",
]
_LOOPBACK = ("127.", "[::1]", "localhost")


class PushSettings(_Strict):
    """Web Push (``appliance/server/outbound/pushsender.py``): who the server may send to, and how hard.

    ``allowed_hosts`` entries: a host name (``fcm.googleapis.com``: https on port 443), a
    wildcard for its subdomains (``*.notify.windows.com``), or an origin with its scheme and
    port (``https://push.example.org:8443``). Plain ``http://`` is allowed for loopback origins
    only (``http://127.0.0.1:8470``: the tests' push-service stand-in), never by default.
    """

    enabled: bool = True
    # The contact a push service may write to about our traffic (RFC 8292 ``sub``).
    vapid_subject: str = "mailto:admin@localhost"
    allowed_hosts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PUSH_HOSTS), max_length=100
    )
    # A user's subscriptions (phones, browsers); a new one beyond it drops the oldest.
    max_devices_per_user: int = Field(default=10, ge=1, le=1000)
    # HTTP requests to push services in flight at once (all users, all rings).
    max_concurrent_sends: int = Field(default=64, ge=1, le=1024)
    # One request to a push service; a timed-out one is retried while the ring lasts.
    send_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("vapid_subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if value.startswith("mailto:") and "@" in value[7:] and " " not in value:
            return value
        if value.startswith("https://") and len(value) > 8 and " " not in value:
            return value
        raise ValueError(f"{value!r} is not a mailto: or https: URL (RFC 8292 sub)")

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        return host_entries(value, plain_http="loopback")


def host_entries(value: list[str], *, plain_http: Literal["loopback", "listed"]) -> list[str]:
    """An allow-list of hosts, normalised: ``host`` (https, port 443), ``*.domain`` or an
    origin ``scheme://host:port``. ``plain_http``: ``http://`` origins for loopback only, or
    for any host listed as such."""
    out = []
    for entry in value:
        entry = entry.strip().lower().rstrip("/")
        if "://" in entry:
            scheme, rest = entry.split("://", 1)
            if scheme not in ("http", "https") or not rest or "/" in rest or "@" in rest:
                raise ValueError(f"{entry!r} is not an origin like https://push.example.org")
            if scheme == "http" and plain_http == "loopback" and not rest.startswith(_LOOPBACK):
                raise ValueError(
                    f"{entry!r}: plain http is allowed for loopback origins only "
                    "(a test's push-service stand-in)"
                )
        elif not entry or "/" in entry or ":" in entry or "*" in entry.removeprefix("*."):
            raise ValueError(
                f"{entry!r} is not a host name, *.domain, or scheme://host:port origin"
            )
        out.append(entry)
    return out


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def host_allowed(endpoint: str, allowed: Iterable[str]) -> bool:
    """Whether ``endpoint`` is on a host of an allow-list made by ``host_entries`` (push
    subscriptions, webhook receivers)."""
    parts = urlsplit(endpoint)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or _default_port(parts.scheme)
    except ValueError:
        return False
    for entry in allowed:
        if "://" in entry:
            want = urlsplit(entry)
            if (
                parts.scheme == want.scheme
                and host == (want.hostname or "")
                and port == (want.port or _default_port(want.scheme))
            ):
                return True
        elif parts.scheme == "https" and port == 443:
            if entry.startswith("*."):
                if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                    return True
            elif host == entry:
                return True
    return False


class MetricsSettings(_Strict):
    """``GET /metrics`` (``appliance/server/metrics.py``): who may read it. A request is
    answered when it comes from an address in ``allow_from`` or carries
    ``Authorization: Bearer <token>``; else 403. The address is uvicorn's view of the client:
    through a proxy on loopback it is ``X-Forwarded-For``'s, and the proxy's own when it sends
    none (then every request looks like loopback: use the token and an empty ``allow_from``)."""

    enabled: bool = True
    token: str | None = Field(default=None, min_length=16, max_length=256)
    allow_from: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])

    @field_validator("allow_from")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as err:
                raise ValueError(f"{entry!r} is not an address or CIDR network: {err}") from None
        return value


class WebhookHook(_Strict):
    """One receiver: every event of the listed call types (all when empty) whose type is in
    ``events`` (all when empty; a trailing ``*`` matches a prefix: ``call.*``) is POSTed to
    ``url``."""

    url: str = Field(min_length=8, max_length=2048)
    call_types: list[str] = Field(default_factory=list, max_length=100)
    events: list[str] = Field(default_factory=list, max_length=200)

    def wants(self, call_type: str, event_type: str) -> bool:
        if self.call_types and call_type not in self.call_types:
            return False
        if not self.events:
            return True
        return any(
            event_type == e or (e.endswith("*") and event_type.startswith(e[:-1]))
            for e in self.events
        )


class WebhookSettings(_Strict):
    """Webhooks for integrators (``appliance/server/outbound/webhooks.py``). ``allowed_hosts`` as in
    ``push``; a plain ``http://`` origin is allowed when listed as such (a LAN system)."""

    allowed_hosts: list[str] = Field(default_factory=list, max_length=100)
    hooks: list[WebhookHook] = Field(default_factory=list, max_length=20)
    # One POST; a timed-out one is retried.
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Retries (5xx, 429, timeouts, network errors) back off from the first delay, doubling up
    # to 60 s, for at most this long after the event; then the delivery is given up.
    retry_first_seconds: float = Field(default=1.0, gt=0, le=60)
    retry_for_seconds: float = Field(default=600.0, ge=0, le=86_400)
    # Events waiting per receiver; beyond it new ones are dropped (and counted).
    max_queued: int = Field(default=1000, ge=1, le=100_000)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        return host_entries(value, plain_http="listed")

    @field_validator("hooks")
    @classmethod
    def _urls_allowed(cls, value: list[WebhookHook], info: ValidationInfo) -> list[WebhookHook]:
        allowed = info.data.get("allowed_hosts") or []
        for i, hook in enumerate(value):
            parts = urlsplit(hook.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"hooks[{i}].url is not an http(s) URL")
            if parts.username or parts.password:
                raise ValueError(f"hooks[{i}].url: no user:password@ in the URL")
            if not host_allowed(hook.url, allowed):
                raise ValueError(
                    f"hooks[{i}].url: its host {parts.hostname!r} (scheme {parts.scheme}) is "
                    "not in webhooks.allowed_hosts"
                )
        return value


class ServerSettings(_Strict):
    api_key: str | None = None
    api_secret: str | None = None
    state_dir: Path = Path("state")
    database: str = ""
    call_types: Path | None = None
    users: list[SeedUser] = Field(default_factory=list)
    ice_servers: list[IceServer] = Field(default_factory=list)
    tls: TlsFiles | Literal["self-signed"] | None = None
    host: str = "127.0.0.1"
    # Not 3030: Stream's client SDKs rewrite ":3030" to ":8800" in their WebSocket URL.
    port: int = Field(default=3040, ge=0, le=65535)
    base_url: str | None = None
    ws_grace_seconds: float = Field(default=20.0, ge=0)
    ws_health_seconds: float = Field(default=10.0, gt=0)
    # SIGTERM (a rolling restart): stop listening, then close the WebSockets spread evenly over
    # this many seconds, then stop. The other replicas take the devices back a few at a time
    # instead of a third of the fleet at once; a device not yet closed still gets its events.
    # 0: close them all at once (as a lone server on SQLite always does: nowhere to go).
    ws_drain_seconds: float = Field(default=30.0, ge=0, le=600)
    ws_max_frame_bytes: int = Field(default=131_072, ge=1024)
    # permessage-deflate compresses every frame once per socket (no shared context): an event
    # fanned out to 100 sockets is compressed 100 times, the largest CPU cost of a ring on a
    # Pi. Off by default; turn it on for clients on slow links.
    ws_compression: bool = False
    token_leeway_seconds: float = Field(default=300.0, ge=0)
    limits: Limits = Field(default_factory=Limits)
    cors: CorsSettings = Field(default_factory=CorsSettings)
    push: PushSettings = Field(default_factory=PushSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    # Serve the test-only pages (appliance/server/web/testpages: probe.html, blockcode.js) for
    # tests and benchmarks; off, they answer 404.
    test_pages: bool = False

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def secret(self) -> str:
        """``api_secret`` once ``ensure_secret`` has filled it (the app does, before serving)."""
        if not self.api_secret:
            raise ConfigError("api_secret is not set (ensure_secret fills it)")
        return self.api_secret

    def public_base_url(self, host: str | None = None, port: int | None = None) -> str:
        """``base_url`` if configured, else what this server listens on."""
        if self.base_url:
            return self.base_url.rstrip("/")
        h = host or self.host
        if h in ("0.0.0.0", "::", ""):
            h = "127.0.0.1"
        return f"{self.scheme}://{h}:{port if port is not None else self.port}"


def load_settings(
    path: str | Path, env: Mapping[str, str] | None = None, *, state_dir: Path | None = None
) -> ServerSettings:
    """Read ``server.yaml``; relative paths in it are relative to the file; env fills api key/secret.
    ``state_dir`` is the default when the YAML names none (the CLI passes systemd's
    ``$STATE_DIRECTORY`` or ``./state``); without it, ``state`` next to the file."""
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise doc.error((), "the server config must be a mapping")
    settings = doc.validate(ServerSettings)
    base = Path(path).resolve().parent
    update: dict[str, Any] = {}
    if "state_dir" not in doc.data and state_dir is not None:
        update["state_dir"] = state_dir
    elif not settings.state_dir.is_absolute():
        update["state_dir"] = base / settings.state_dir
    if settings.call_types is not None and not settings.call_types.is_absolute():
        update["call_types"] = base / settings.call_types
    if isinstance(settings.tls, TlsFiles):
        update["tls"] = TlsFiles(
            cert=base / settings.tls.cert
            if not settings.tls.cert.is_absolute()
            else settings.tls.cert,
            key=base / settings.tls.key if not settings.tls.key.is_absolute() else settings.tls.key,
        )
    environ = os.environ if env is None else env
    if environ.get("APPLIANCE_API_KEY"):
        update["api_key"] = environ["APPLIANCE_API_KEY"]
    if environ.get("APPLIANCE_API_SECRET"):
        update["api_secret"] = environ["APPLIANCE_API_SECRET"]
    return settings.model_copy(update=update)


def ensure_secret(settings: ServerSettings) -> ServerSettings:
    """Fill ``api_key`` and ``api_secret``: configured, else the generated secret in ``state_dir``."""
    update: dict[str, Any] = {}
    if not settings.api_key:
        update["api_key"] = DEFAULT_API_KEY
    if not settings.api_secret:
        update["api_secret"] = _stored_secret(settings.state_dir)
    return settings.model_copy(update=update) if update else settings


def _stored_secret(state_dir: Path) -> str:
    path = state_dir / SECRET_FILE
    try:
        secret = path.read_text(encoding="ascii").strip()
        if secret:
            return secret
    except FileNotFoundError:
        pass
    except OSError as err:
        raise ConfigError(f"cannot read the generated secret: {err}", file=str(path)) from err
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secret + "\n")
    except FileExistsError:
        return _stored_secret(state_dir)
    except OSError as err:
        raise ConfigError(
            f"cannot store a generated secret: {err}",
            file=str(path),
            hint="set api_secret in the config or APPLIANCE_API_SECRET",
        ) from err
    log.warning("no api_secret configured: generated one in %s (mode 0600)", path)
    return secret
