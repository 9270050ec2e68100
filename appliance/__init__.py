"""appliance: a video-call appliance for Raspberry-Pi-class boards.

The curated public API. Names are imported lazily, so ``import appliance`` (and the CLI, which
the control commands must start in a blink) does not pay for the server or the media stack.

- :class:`Client`, :class:`Call` — the call API in async Python (``appliance.client``);
- :func:`create_app`, :class:`ServerSettings` — the call server as an ASGI app (``appliance.server``);
- :class:`CallMedia` — the per-call media engine the daemon drives (``appliance.media``);
- :func:`load_config`, :class:`DeviceConfig` — the device YAML (``appliance.daemon.config``);
- the exception tree of :mod:`appliance.errors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.errors import (
    APIError,
    ApplianceError,
    AudioDeviceError,
    AuthenticationError,
    ConfigError,
    Conflict,
    HardwareError,
    InvalidRequest,
    LibraryVersionError,
    MediaError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ServerUnavailable,
    StoreError,
)
from appliance.lazyexports import lazy_exports

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Client": "appliance.client",
    "Call": "appliance.client",
    "Event": "appliance.client",
    "create_app": "appliance.server.app",
    "ServerSettings": "appliance.server.settings",
    "CallMedia": "appliance.media.session",
    "DeviceConfig": "appliance.daemon.config",
    "load_config": "appliance.daemon.config",
}

__all__ = [
    "APIError",
    "ApplianceError",
    "AudioDeviceError",
    "AuthenticationError",
    "Call",
    "CallMedia",
    "Client",
    "ConfigError",
    "Conflict",
    "DeviceConfig",
    "Event",
    "HardwareError",
    "InvalidRequest",
    "LibraryVersionError",
    "MediaError",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "ServerSettings",
    "ServerUnavailable",
    "StoreError",
    "__version__",
    "create_app",
    "load_config",
]

if TYPE_CHECKING:
    from appliance.client import Call, Client, Event
    from appliance.daemon.config import DeviceConfig, load_config
    from appliance.media.session import CallMedia
    from appliance.server.app import create_app
    from appliance.server.settings import ServerSettings


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
