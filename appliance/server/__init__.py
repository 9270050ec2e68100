"""The call server: a Stream-Video-shaped REST API, events and signaling, SQLite or PostgreSQL.

Names are imported lazily: ``appliance.server.cli`` (loaded to build every ``appliance``
command's parser) must not pay for fastapi and SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.lazyexports import lazy_exports

_LAZY: dict[str, str] = {
    "create_app": "appliance.server.app",
    "ServerSettings": "appliance.server.settings",
    "load_settings": "appliance.server.settings",
}

__all__ = ["ServerSettings", "create_app", "load_settings"]

if TYPE_CHECKING:
    from appliance.server.app import create_app
    from appliance.server.settings import ServerSettings, load_settings


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
