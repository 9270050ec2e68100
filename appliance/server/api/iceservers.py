"""ICE servers for a joining user, with coturn ``use-auth-secret`` TURN credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from appliance.clock import Clock
from appliance.server.settings import IceServer


def turn_credentials(secret: str, user_id: str, expires_at: int) -> tuple[str, str]:
    """coturn's REST-API scheme: username ``<unix expiry>:<user>``, password HMAC-SHA1, base64."""
    username = f"{expires_at}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers_for(servers: list[IceServer], user_id: str, clock: Clock) -> list[dict[str, Any]]:
    """The ``ice_servers`` list of a join response: ``[{urls, username, password}]``."""
    out: list[dict[str, Any]] = []
    for server in servers:
        entry: dict[str, Any] = {"urls": list(server.urls), "username": "", "password": ""}
        if server.secret:
            expires = int(clock.time()) + server.ttl_seconds
            entry["username"], entry["password"] = turn_credentials(server.secret, user_id, expires)
        elif server.username is not None:
            entry["username"] = server.username
            entry["password"] = server.credential or ""
        out.append(entry)
    return out
