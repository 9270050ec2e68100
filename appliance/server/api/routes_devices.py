"""Push subscriptions in Stream's device API shape, and the app settings a browser needs.

- ``POST /api/v2/devices`` ``{"id": <endpoint>, "push_provider": "web_push",
  "web_push_subscription": {"endpoint", "keys": {"p256dh", "auth"}}}`` → 201
- ``GET /api/v2/devices`` → ``{"devices": [{"id", "push_provider", "user_id", "created_at", …}]}``
- ``DELETE /api/v2/devices?id=<endpoint>``
- ``GET /api/v2/app`` → ``{"app": {"web_push": {"vapid_public_key", "enabled"}}}``

Who: a user token registers, lists and deletes its own subscriptions only (``user_id``, if
given, must be its own; someone else's endpoint is "not found"); a server token acts for the
``user_id`` it must pass. ``/app`` answers any valid token (the key is public; the route is not,
like the rest of the API). Bounds: endpoint length, key sizes, subscriptions per user
(``pushdevices.py``), the request body limit.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from appliance.errors import InvalidRequest, NotFound, PermissionDenied, Unsupported
from appliance.server.api.replies import ctx_of, reply
from appliance.server.auth import Principal, principal
from appliance.server.context import ServerContext, now_ns
from appliance.server.lifecycle.services import Services
from appliance.server.outbound import pushdevices
from appliance.server.outbound.pushdevices import PROVIDER, Subscription
from appliance.server.outbound.vapid import VapidKey
from appliance.server.store.users import missing_users

router = APIRouter(prefix="/api/v2", tags=["devices"])

# ``?user_id=``: whose subscriptions a server token acts on (a user token: its own, if given).
UserIdQuery = Annotated[
    str | None, Query(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9@_\-.=]+$")
]
# ``?id=``: an endpoint URL (no control characters: PostgreSQL refuses a NUL in text).
EndpointQuery = Annotated[
    str,
    Query(min_length=1, max_length=pushdevices.MAX_ENDPOINT_CHARS, pattern=r"^[^\x00-\x1f\x7f]+$"),
]


class WebPushKeys(BaseModel):
    model_config = ConfigDict(extra="ignore")

    p256dh: str = Field(max_length=128)
    auth: str = Field(max_length=64)


class WebPushSubscription(BaseModel):
    """What a browser's ``PushSubscription.toJSON()`` gives (``expirationTime`` is ignored)."""

    model_config = ConfigDict(extra="ignore")

    endpoint: str = Field(min_length=1, max_length=pushdevices.MAX_ENDPOINT_CHARS)
    keys: WebPushKeys


class CreateDeviceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # Bounded loosely: a too-long endpoint is reported as web_push_subscription.endpoint.
    id: str = Field(min_length=1, max_length=2 * pushdevices.MAX_ENDPOINT_CHARS)
    push_provider: str = Field(max_length=64)
    push_provider_name: str | None = Field(default=None, max_length=64)
    user_id: str | None = Field(default=None, min_length=1, max_length=255)
    web_push_subscription: WebPushSubscription | None = None


def vapid_key(ctx: ServerContext) -> VapidKey:
    svc = ctx.realtime
    key = svc.vapid if isinstance(svc, Services) else None
    if key is None:
        raise Unsupported("Web Push is not available on this server")
    return key


def _acting_for(who: Principal, user_id: str | None) -> str:
    if who.is_server:
        if not user_id:
            raise InvalidRequest("a server token must name the user_id", field="user_id")
        return user_id
    assert who.user_id is not None
    if user_id is not None and user_id != who.user_id:
        raise PermissionDenied(
            f"user {who.user_id} may manage only its own devices", field="user_id"
        )
    return who.user_id


@router.post("/devices", status_code=201)
async def create_device(
    body: CreateDeviceRequest, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    """Register (or update) a Web Push subscription of the caller (server token: ``user_id``)."""
    ctx = ctx_of(request)
    settings = ctx.settings.push
    user_id = _acting_for(who, body.user_id)
    if body.push_provider != PROVIDER:
        raise InvalidRequest(
            f"push_provider {body.push_provider!r} is not supported here (only {PROVIDER!r})",
            field="push_provider",
        )
    if not settings.enabled:
        raise Unsupported("Web Push is turned off on this server (push.enabled)")
    sub = body.web_push_subscription
    if sub is None:
        raise InvalidRequest(
            "web_push needs web_push_subscription {endpoint, keys: {p256dh, auth}}",
            field="web_push_subscription",
        )
    if body.id != sub.endpoint:
        raise InvalidRequest(
            "id must be the subscription's endpoint URL (web_push_subscription.endpoint)",
            field="id",
        )
    pushdevices.check_endpoint(sub.endpoint, settings)
    pushdevices.check_keys(sub.keys.p256dh, sub.keys.auth)
    now = now_ns(ctx.clock)
    async with ctx.store.begin() as conn:
        if who.is_server and await missing_users(conn, [user_id]):
            raise InvalidRequest(f"user {user_id} does not exist", field="user_id")
        row = await pushdevices.save(
            conn,
            Subscription(sub.endpoint, sub.keys.p256dh, sub.keys.auth, user_id),
            now,
            settings.max_devices_per_user,
        )
    return reply(request, {"device": pushdevices.device_response(row)})


@router.get("/devices")
async def list_devices(
    request: Request, user_id: UserIdQuery = None, who: Principal = Depends(principal)
) -> dict[str, Any]:
    """The caller's subscriptions (server token: those of ``user_id``), latest first."""
    ctx = ctx_of(request)
    owner = _acting_for(who, user_id)
    async with ctx.store.connect() as conn:
        rows = await pushdevices.of_user(conn, owner)
    return reply(request, {"devices": [pushdevices.device_response(r) for r in rows]})


@router.delete("/devices")
async def delete_device(
    request: Request,
    id: EndpointQuery,
    user_id: UserIdQuery = None,
    who: Principal = Depends(principal),
) -> dict[str, Any]:
    """Remove one of the caller's subscriptions (server token: one of ``user_id``'s)."""
    ctx = ctx_of(request)
    owner = _acting_for(who, user_id)
    async with ctx.store.begin() as conn:
        found = await pushdevices.remove(conn, id, owner)
    if not found:
        raise NotFound(f"user {owner} has no device with this id", field="id")
    return reply(request, {})


@router.get("/app")
async def get_app(request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    """What a browser needs to subscribe: the VAPID public key (``applicationServerKey``)."""
    ctx = ctx_of(request)
    key = vapid_key(ctx)
    web_push = {"vapid_public_key": key.public_key, "enabled": ctx.settings.push.enabled}
    return reply(request, {"app": {"web_push": web_push}})
