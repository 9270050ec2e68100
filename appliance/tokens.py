"""Minting the HS256 JWTs the call server accepts (server/auth.py checks them): shared by the
server, the embedded server of the daemon and the client CLI, so that the client does not import
the server to mint one."""

from __future__ import annotations

from typing import Any

import jwt

from appliance.clock import Clock


def create_token(
    secret: str,
    user_id: str | None = None,
    *,
    clock: Clock | None = None,
    ttl: float | None = None,
    call_cids: list[str] | None = None,
    iat: bool | int = True,
    **claims: Any,
) -> str:
    """A token for ``user_id`` (a server token when ``None``: literally ``{}`` like the SDK's).

    ``iat``: ``True`` stamps the clock's time, ``False`` leaves it out, an int is used as is.
    """
    body: dict[str, Any] = dict(claims)
    if user_id is not None:
        body["user_id"] = user_id
        if not isinstance(iat, bool):
            body["iat"] = iat
        elif clock is not None and iat:
            body.setdefault("iat", int(clock.time()))
        if clock is not None and ttl is not None:
            body.setdefault("exp", int(clock.time() + ttl))
        if call_cids is not None:
            body["call_cids"] = list(call_cids)
    return jwt.encode(body, secret, algorithm="HS256")
