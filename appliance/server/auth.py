"""Authentication: HS256 JWTs signed with the app secret, checked against an injected clock.

A *server token* carries no ``user_id`` (Stream's SDK signs literally ``{}``) and may do
anything. A *user token* carries ``user_id`` and optionally ``exp``, ``iat`` and ``call_cids``
(pinning a device's token to its own calls). ``exp``/``iat`` are checked with a leeway because a
Pi has no real-time clock; a user's tokens issued before ``revoke_tokens_issued_before`` are
refused. Every request also carries ``?api_key=`` which must be this server's.

``authenticate`` is the one function both the REST dependency (``principal``) and the WebSocket
layer (its first frame) use.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import jwt
from fastapi import Request
from sqlalchemy import select

from appliance.clock import Clock
from appliance.errors import AuthenticationError, PermissionDenied, TokenExpired
from appliance.server.context import ServerContext
from appliance.server.store.schema import users
from appliance.tokens import create_token  # noqa: F401  (moved to appliance/tokens.py; importers keep working)

log = logging.getLogger(__name__)

NS = 1_000_000_000


@dataclass(frozen=True)
class Principal:
    """Who is calling: the server itself (``user_id is None``) or a user."""

    user_id: str | None
    role: str = "admin"
    teams: tuple[str, ...] = ()
    call_cids: tuple[str, ...] | None = None
    claims: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_server(self) -> bool:
        return self.user_id is None

    @property
    def is_admin(self) -> bool:
        return self.is_server or self.role == "admin"

    def __repr__(self) -> str:
        return "Principal(server)" if self.is_server else f"Principal(user={self.user_id})"


SERVER = Principal(user_id=None)


# Tokens whose signature has been verified, with their claims: a device sends the same token
# with every request, and the HMAC check plus JSON decoding is a good part of a cheap request's
# time. Only the signature check is remembered; times, shape and (in ``authenticate``)
# revocation are checked on every use.
_VERIFIED_MAX = 1024
_verified: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()


def _verified_claims(token: str, secret: str) -> dict[str, Any]:
    key = (token, secret)
    claims = _verified.get(key)
    if claims is not None:
        _verified.move_to_end(key)
        return copy.deepcopy(claims)
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.InvalidSignatureError:
        raise AuthenticationError("token signature is not valid", field="Authorization") from None
    except jwt.PyJWTError as err:
        raise AuthenticationError(
            f"token is not a valid JWT: {err}", field="Authorization"
        ) from None
    if not isinstance(claims, dict):
        raise AuthenticationError("token payload is not an object", field="Authorization")
    _verified[key] = copy.deepcopy(claims)
    if len(_verified) > _VERIFIED_MAX:
        _verified.popitem(last=False)
    return claims


def decode_token(token: str, secret: str, clock: Clock, leeway: float) -> dict[str, Any]:
    """Verify signature and times; raises ``AuthenticationError`` naming the problem."""
    claims = _verified_claims(token, secret)
    now = clock.time()
    for name in ("exp", "iat", "nbf"):
        if name in claims and not isinstance(claims[name], int | float):
            raise AuthenticationError(f"token claim {name} is not a number", field="Authorization")
    if "exp" in claims and now > claims["exp"] + leeway:
        raise TokenExpired("token has expired", field="Authorization")
    if "iat" in claims and claims["iat"] > now + leeway:
        raise AuthenticationError(
            "token was issued in the future (check this device's clock)", field="Authorization"
        )
    if "nbf" in claims and claims["nbf"] > now + leeway:
        raise AuthenticationError("token is not valid yet", field="Authorization")
    uid = claims.get("user_id")
    if uid is not None and (not isinstance(uid, str) or not 0 < len(uid) <= 255 or "\x00" in uid):
        raise AuthenticationError("token claim user_id must be a string of 1 to 255 characters")
    cids = claims.get("call_cids")
    if cids is not None and (
        not isinstance(cids, list) or not all(isinstance(c, str) for c in cids)
    ):
        raise AuthenticationError("token claim call_cids must be a list of strings")
    return claims


async def authenticate(ctx: ServerContext, token: str | None, api_key: str | None) -> Principal:
    """Check api key and token; for a user token, load the user (it must exist) and check
    revocation."""
    settings = ctx.settings
    if not api_key:
        raise AuthenticationError("api_key query parameter is missing", field="api_key")
    if api_key != settings.api_key:
        raise AuthenticationError("api_key is not valid for this server", field="api_key")
    if not token:
        raise AuthenticationError("Authorization header is missing", field="Authorization")
    claims = decode_token(token, settings.secret, ctx.clock, settings.token_leeway_seconds)
    user_id = claims.get("user_id")
    if user_id is None:
        return Principal(user_id=None, claims=claims)
    row = await _user_row(ctx, user_id)
    revoked_before = row["revoke_tokens_issued_before"]
    if revoked_before is not None:
        iat = claims.get("iat")
        # iat has one-second resolution: a token of the revocation's own second is refused too.
        if iat is None or iat * NS <= revoked_before:
            raise AuthenticationError(f"token of user {user_id} has been revoked")
    cids = claims.get("call_cids")
    return Principal(
        user_id=user_id,
        role=row["role"] or "user",
        teams=tuple(row["teams"] or ()),
        call_cids=tuple(cids) if cids is not None else None,
        claims=claims,
    )


async def _user_row(ctx: ServerContext, user_id: str) -> dict[str, Any]:
    cols = [users.c.role, users.c.teams, users.c.revoke_tokens_issued_before]
    async with ctx.store.connect() as conn:
        row = (await conn.execute(select(*cols).where(users.c.id == user_id))).mappings().first()
    if row is None:
        # Users are created by the operator (seed users, `appliance users add`, POST
        # /api/v2/users with a server token), with their role and teams: a token, even a valid
        # one, does not create an account (a typo in `appliance token --user` would, with no
        # teams, so reaching every call of no team).
        raise AuthenticationError(
            f"user {user_id} does not exist: create it before using its token "
            f"(appliance users add {user_id})",
            field="Authorization",
        )
    return dict(row)


def token_from_headers(authorization: str | None) -> str | None:
    if not authorization:
        return None
    value = authorization.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


async def principal(request: Request) -> Principal:
    """FastAPI dependency: the caller of this request."""
    auth_type = request.headers.get("stream-auth-type")
    if auth_type is not None and auth_type.lower() != "jwt":
        raise AuthenticationError(
            f"stream-auth-type {auth_type!r} is not supported (use jwt)", field="stream-auth-type"
        )
    ctx: ServerContext = request.app.state.ctx
    token = token_from_headers(request.headers.get("authorization"))
    return await authenticate(ctx, token, request.query_params.get("api_key"))


def require_server(who: Principal, what: str) -> None:
    if not who.is_server:
        raise PermissionDenied(f"{what} needs a server token")
