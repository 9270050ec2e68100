"""The call server: a Stream-Video-shaped REST API, events and signaling, SQLite or PostgreSQL.

Names are imported lazily: ``appliance.server.cli`` (loaded to build every ``appliance``
command's parser) must not pay for fastapi and SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY: dict[str, str] = {
    "create_app": "appliance.server.app",
    "ServerSettings": "appliance.server.settings",
    "load_settings": "appliance.server.settings",
}

__all__ = ["ServerSettings", "create_app", "load_settings"]

if TYPE_CHECKING:
    from appliance.server.app import create_app
    from appliance.server.settings import ServerSettings, load_settings


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
