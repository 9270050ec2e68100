"""The call server: a Stream-Video-shaped REST API, events and signaling, SQLite or PostgreSQL."""

from appliance.server.app import create_app
from appliance.server.settings import ServerSettings, load_settings

__all__ = ["ServerSettings", "create_app", "load_settings"]
