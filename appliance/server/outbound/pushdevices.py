"""Push subscriptions ("devices" in Stream's words) in the store, and the checks they pass first.

A subscription's endpoint is an untrusted URL that the server will later POST to, so it must be
``https`` on a host of ``push.allowed_hosts`` (``PushSettings``); its keys must be what RFC 8291
needs: ``p256dh`` an uncompressed P-256 point that is on the curve, ``auth`` 16 bytes. A
mistake is a 400 naming the JSON field.

Storing: the endpoint is the row's id. Posting an endpoint again updates its keys and moves it
to the posting user (one browser profile, a new resident signed in). A user has at most
``push.max_devices_per_user``; a new one beyond that drops the least recently posted (a
resident who re-installs the app on a phone must not be locked out by its old subscriptions).
A token revocation drops the subscriptions posted before it. Logs name a subscription by its
push service and a short hash, never by its URL (the URL is the capability to push to it).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.errors import InvalidRequest
from appliance.server.outbound.vapid import b64url_decode
from appliance.server.settings import PushSettings, host_allowed
from appliance.server.store.arrays import one_of
from appliance.server.store.schema import push_devices

log = logging.getLogger(__name__)

PROVIDER = "web_push"
MAX_ENDPOINT_CHARS = 2048
ENDPOINT_FIELD = "web_push_subscription.endpoint"
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True)
class Subscription:
    endpoint: str
    p256dh: str
    auth: str
    user_id: str = ""

    @property
    def origin(self) -> str:
        return origin_of(self.endpoint)

    def __repr__(self) -> str:
        return f"Subscription({describe(self.endpoint)} of {self.user_id})"


def origin_of(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


def describe(endpoint: str) -> str:
    """How logs name a subscription: its push service host and a short hash of the URL."""
    host = urlsplit(endpoint).hostname or "?"
    return f"{host}#{hashlib.sha256(endpoint.encode()).hexdigest()[:8]}"


def check_endpoint(endpoint: str, settings: PushSettings) -> str:
    if len(endpoint) > MAX_ENDPOINT_CHARS:
        raise InvalidRequest(
            f"the endpoint is longer than {MAX_ENDPOINT_CHARS} characters", field=ENDPOINT_FIELD
        )
    if _CONTROL.search(endpoint):
        raise InvalidRequest(
            "the endpoint contains spaces or control characters", field=ENDPOINT_FIELD
        )
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise InvalidRequest("the endpoint is not a URL", field=ENDPOINT_FIELD) from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidRequest("the endpoint must be an https URL", field=ENDPOINT_FIELD)
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise InvalidRequest(
            "the endpoint may not carry credentials or a fragment", field=ENDPOINT_FIELD
        )
    if not host_allowed(endpoint, settings.allowed_hosts):
        raise InvalidRequest(
            f"the endpoint's push service {parts.scheme}://{parts.netloc} is not on this "
            "server's push.allowed_hosts",
            field=ENDPOINT_FIELD,
        )
    return endpoint


def check_keys(p256dh: str, auth: str) -> None:
    field = "web_push_subscription.keys.p256dh"
    try:
        point = b64url_decode(p256dh)
    except ValueError:
        raise InvalidRequest("p256dh is not base64url", field=field) from None
    if len(point) != 65 or point[0] != 4:
        raise InvalidRequest(
            "p256dh must be an uncompressed P-256 point (65 bytes, 0x04 first)", field=field
        )
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise InvalidRequest("p256dh is not a point on the P-256 curve", field=field) from None
    field = "web_push_subscription.keys.auth"
    try:
        secret = b64url_decode(auth)
    except ValueError:
        raise InvalidRequest("auth is not base64url", field=field) from None
    if len(secret) != 16:
        raise InvalidRequest("auth must be 16 bytes", field=field)


def device_response(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "push_provider": row["push_provider"],
        "push_provider_name": "",
        "user_id": row["user_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "disabled": False,
        "disabled_reason": "",
    }


async def save(
    conn: AsyncConnection, sub: Subscription, now: int, max_per_user: int
) -> dict[str, Any]:
    """Store ``sub`` (new, updated or moved to ``sub.user_id``); drop the user's oldest beyond
    ``max_per_user``. The stored row."""
    old = (
        (await conn.execute(select(push_devices).where(push_devices.c.id == sub.endpoint)))
        .mappings()
        .first()
    )
    values = {"user_id": sub.user_id, "p256dh": sub.p256dh, "auth": sub.auth, "updated_at": now}
    if old is None:
        await conn.execute(
            push_devices.insert().values(
                id=sub.endpoint, push_provider=PROVIDER, created_at=now, **values
            )
        )
        log.info("%r registered", sub)
    else:
        if old["user_id"] != sub.user_id:
            values["created_at"] = now
            log.info("%r moved from %s", sub, old["user_id"])
        await conn.execute(
            update(push_devices).where(push_devices.c.id == sub.endpoint).values(**values)
        )
    count = await conn.scalar(
        select(func.count()).select_from(push_devices).where(push_devices.c.user_id == sub.user_id)
    )
    if count is not None and count > max_per_user:
        oldest = list(
            (
                await conn.execute(
                    select(push_devices.c.id)
                    .where(push_devices.c.user_id == sub.user_id, push_devices.c.id != sub.endpoint)
                    .order_by(push_devices.c.updated_at, push_devices.c.id)
                    .limit(count - max_per_user)
                )
            ).scalars()
        )
        await conn.execute(delete(push_devices).where(push_devices.c.id.in_(oldest)))
        log.info(
            "User(%s) over %d push subscriptions: dropped %d",
            sub.user_id,
            max_per_user,
            len(oldest),
        )
    row = (
        (await conn.execute(select(push_devices).where(push_devices.c.id == sub.endpoint)))
        .mappings()
        .one()
    )
    return dict(row)


async def of_user(conn: AsyncConnection, user_id: str) -> list[dict[str, Any]]:
    q = (
        select(push_devices)
        .where(push_devices.c.user_id == user_id)
        .order_by(push_devices.c.updated_at.desc(), push_devices.c.id)
    )
    return [dict(r) for r in (await conn.execute(q)).mappings()]


async def of_users(conn: AsyncConnection, user_ids: Iterable[str]) -> list[Subscription]:
    wanted = sorted(set(user_ids))
    out: list[Subscription] = []
    cols = (push_devices.c.id, push_devices.c.p256dh, push_devices.c.auth, push_devices.c.user_id)
    for start in range(0, len(wanted), 500):
        rows = await conn.execute(
            select(*cols).where(one_of(conn, push_devices.c.user_id, wanted[start : start + 500]))
        )
        out.extend(Subscription(r[0], r[1], r[2], r[3]) for r in rows)
    return out


async def remove(conn: AsyncConnection, endpoint: str, user_id: str | None = None) -> bool:
    """Delete one subscription (of ``user_id`` only, when given); whether it existed."""
    q = delete(push_devices).where(push_devices.c.id == endpoint)
    if user_id is not None:
        q = q.where(push_devices.c.user_id == user_id)
    return bool((await conn.execute(q)).rowcount)


async def drop_revoked(conn: AsyncConnection, user_ids: Iterable[str], before_ns: int) -> int:
    """A revoked phone must stop hearing the door: subscriptions posted with tokens that the
    revocation ends (posted at or before it) go."""
    ids = sorted(set(user_ids))
    done = await conn.execute(
        delete(push_devices).where(
            push_devices.c.user_id.in_(ids), push_devices.c.updated_at <= before_ns
        )
    )
    if done.rowcount:
        log.info("tokens revoked: dropped %d push subscriptions of %s", done.rowcount, ids)
    return int(done.rowcount or 0)
