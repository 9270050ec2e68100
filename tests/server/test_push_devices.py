"""Push subscriptions in Stream's device API shape, the VAPID key, and the endpoint allow-list.

A real server on loopback with a real SQLite file; subscriptions are made by the push-service
stand-in (``tests/support/pushservice.py``), the way a browser's ``pushManager.subscribe``
would, and Stream's own Python SDK lists and deletes them.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from getstream import AsyncStream
from getstream.exceptions import StreamApiException
from pydantic import ValidationError

from appliance.clock import ManualClock
from appliance.server.outbound import vapid
from appliance.server.settings import DEFAULT_PUSH_HOSTS, PushSettings, host_allowed
from appliance.server.store.engine import Store
from tests.conftest import DEFAULT_USERS
from tests.support.pushservice import PushService
from tests.support.server import ServerHandle, running_server


@pytest_asyncio.fixture
async def srv(tmp_path: Path, push: PushService) -> AsyncIterator[ServerHandle]:
    async with running_server(
        tmp_path,
        users=DEFAULT_USERS,
        push={"allowed_hosts": [*DEFAULT_PUSH_HOSTS, push.origin], "max_devices_per_user": 3},
    ) as s:
        yield s


def device_body(sub: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": sub["endpoint"],
        "push_provider": "web_push",
        "web_push_subscription": sub,
        **extra,
    }


async def _post(srv: ServerHandle, user: str | None, body: dict[str, Any]) -> Any:
    async with srv.client(user) as http:
        return await http.post("/api/v2/devices", json=body)


async def _ids(srv: ServerHandle, user: str) -> list[str]:
    async with srv.client(user) as http:
        r = await http.get("/api/v2/devices")
    assert r.status_code == 200, r.text
    return [d["id"] for d in r.json()["devices"]]


async def test_app_serves_one_vapid_key_per_database(srv: ServerHandle) -> None:
    async with srv.client("alice") as http:
        first = (await http.get("/api/v2/app")).json()
    key = first["app"]["web_push"]["vapid_public_key"]
    point = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
    assert len(point) == 65 and point[0] == 4
    assert first["app"]["web_push"]["enabled"] is True
    assert first["duration"].endswith("ms")
    await srv.restart()
    async with srv.client() as http:
        again = (await http.get("/api/v2/app")).json()
    assert again["app"]["web_push"]["vapid_public_key"] == key


async def race_for_the_key(url: str) -> set[str]:
    """Four stores on one database make the key pair at once: the public keys they end with."""
    stores = [Store(url) for _ in range(4)]
    try:
        await stores[0].open()
        keys = await asyncio.gather(
            *(vapid.load_or_create(s, "mailto:a@example.org", 1) for s in stores)
        )
    finally:
        for s in stores:
            await s.close()
    return {k.public_key for k in keys}


async def test_replicas_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    assert len(await race_for_the_key(f"sqlite+aiosqlite:///{tmp_path / 'k.db'}")) == 1


async def test_register_list_update_move_and_delete(srv: ServerHandle, push: PushService) -> None:
    sub, _ = push.make_subscription("alice")
    r = await _post(srv, "alice", device_body(sub))
    assert r.status_code == 201, r.text
    device = r.json()["device"]
    assert (device["id"], device["push_provider"], device["user_id"]) == (
        sub["endpoint"],
        "web_push",
        "alice",
    )
    created = device["created_at"]
    assert await _ids(srv, "alice") == [sub["endpoint"]]
    assert await _ids(srv, "bob") == []
    # posting it again (new keys) updates it in place
    fresh, _ = push.make_subscription("alice")
    fresh["endpoint"] = sub["endpoint"]
    r = await _post(srv, "alice", device_body(fresh))
    assert r.status_code == 201 and r.json()["device"]["created_at"] == created
    assert await _ids(srv, "alice") == [sub["endpoint"]]
    # the same browser, now signed in as bob: the subscription moves to bob
    r = await _post(srv, "bob", device_body(fresh))
    assert r.status_code == 201 and r.json()["device"]["user_id"] == "bob"
    assert await _ids(srv, "alice") == []
    assert await _ids(srv, "bob") == [sub["endpoint"]]
    # alice cannot delete bob's (not found, nothing said about whose it is)
    async with srv.client("alice") as http:
        r = await http.delete("/api/v2/devices", params={"id": sub["endpoint"]})
    assert r.status_code == 404 and r.json()["exception_fields"]["field"] == "id"
    async with srv.client("bob") as http:
        r = await http.delete("/api/v2/devices", params={"id": sub["endpoint"]})
    assert r.status_code == 200, r.text
    assert await _ids(srv, "bob") == []


async def test_server_token_acts_for_a_named_user(srv: ServerHandle, push: PushService) -> None:
    sub, _ = push.make_subscription("carol")
    r = await _post(srv, None, device_body(sub))
    assert r.status_code == 400 and r.json()["exception_fields"]["field"] == "user_id"
    r = await _post(srv, None, device_body(sub, user_id="nobody"))
    assert r.status_code == 400 and r.json()["exception_fields"]["field"] == "user_id"
    r = await _post(srv, None, device_body(sub, user_id="carol"))
    assert r.status_code == 201, r.text
    assert await _ids(srv, "carol") == [sub["endpoint"]]
    async with srv.client() as http:
        listed = (await http.get("/api/v2/devices", params={"user_id": "carol"})).json()
        assert [d["user_id"] for d in listed["devices"]] == ["carol"]
        assert (await http.get("/api/v2/devices")).status_code == 400
        r = await http.delete("/api/v2/devices", params={"id": sub["endpoint"], "user_id": "carol"})
    assert r.status_code == 200, r.text
    # a user token naming someone else is refused
    r = await _post(srv, "alice", device_body(sub, user_id="carol"))
    assert r.status_code == 403 and r.json()["exception_fields"]["field"] == "user_id"


async def test_oldest_subscription_makes_room(tmp_path: Path, push: PushService) -> None:
    clock = ManualClock()
    async with running_server(
        tmp_path,
        users=["alice"],
        clock=clock,
        push={"allowed_hosts": [push.origin], "max_devices_per_user": 3},
    ) as srv:
        subs = [push.make_subscription("alice")[0] for _ in range(4)]
        for sub in subs:
            assert (await _post(srv, "alice", device_body(sub))).status_code == 201
            clock.advance(1)  # posted one after the other
        # posting the second again makes it the newest: the third goes next, not the second
        assert (await _post(srv, "alice", device_body(subs[1]))).status_code == 201
        clock.advance(1)
        fresh = push.make_subscription("alice")[0]
        assert (await _post(srv, "alice", device_body(fresh))).status_code == 201
        kept = await _ids(srv, "alice")
    # max_devices_per_user 3: the first went when the fourth came, the third when the fifth came
    assert kept == [fresh["endpoint"], subs[1]["endpoint"], subs[3]["endpoint"]]


async def test_revoking_tokens_drops_the_subscriptions(
    srv: ServerHandle, push: PushService
) -> None:
    sub, _ = push.make_subscription("bob")
    other, _ = push.make_subscription("alice")
    assert (await _post(srv, "bob", device_body(sub))).status_code == 201
    assert (await _post(srv, "alice", device_body(other))).status_code == 201
    async with srv.client() as http:
        r = await http.post("/api/v2/users/revoke_tokens", json={"user_ids": ["bob"]})
        assert r.status_code == 200, r.text
        assert (await http.get("/api/v2/devices", params={"user_id": "bob"})).json()[
            "devices"
        ] == []
    assert await _ids(srv, "alice") == [other["endpoint"]]


def _point_off_the_curve() -> str:
    return base64.urlsafe_b64encode(b"\x04" + b"\x01" * 64).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"push_provider": "firebase"}, "push_provider"),
        ({"web_push_subscription": None}, "web_push_subscription"),
        ({"id": "https://fcm.googleapis.com/fcm/send/other"}, "id"),
        ({"endpoint": "https://evil.example.org/push/x"}, "web_push_subscription.endpoint"),
        ({"endpoint": "http://fcm.googleapis.com/fcm/send/x"}, "web_push_subscription.endpoint"),
        (
            {"endpoint": "https://fcm.googleapis.com:8443/fcm/send/x"},
            "web_push_subscription.endpoint",
        ),
        (
            {"endpoint": "https://user:pw@fcm.googleapis.com/fcm/send/x"},
            "web_push_subscription.endpoint",
        ),
        (
            {"endpoint": "https://fcm.googleapis.com.evil.org/x"},
            "web_push_subscription.endpoint",
        ),
        ({"endpoint": "https://notify.windows.com/x"}, "web_push_subscription.endpoint"),
        ({"endpoint": "ftp://fcm.googleapis.com/x"}, "web_push_subscription.endpoint"),
        (
            {"endpoint": "https://fcm.googleapis.com/" + "x" * 2048},
            "web_push_subscription.endpoint",
        ),
        ({"p256dh": _point_off_the_curve()}, "web_push_subscription.keys.p256dh"),
        ({"p256dh": "BAAA"}, "web_push_subscription.keys.p256dh"),
        ({"p256dh": "not base64!"}, "web_push_subscription.keys.p256dh"),
        ({"auth": "AAAAAAAAAAAAAAAAAAAA"}, "web_push_subscription.keys.auth"),
        ({"auth": "x" * 65}, "web_push_subscription.keys.auth"),
    ],
)
async def test_bad_subscriptions_name_their_field(
    srv: ServerHandle, push: PushService, change: dict[str, Any], field: str
) -> None:
    sub, _ = push.make_subscription("alice")
    body = device_body(sub)
    for name, value in change.items():
        if name == "endpoint":
            sub["endpoint"] = body["id"] = value
        elif name in ("p256dh", "auth"):
            sub["keys"][name] = value
        else:
            body[name] = value
    r = await _post(srv, "alice", body)
    assert r.status_code == 400, r.text
    assert r.json()["exception_fields"]["field"] == field, r.text
    assert await _ids(srv, "alice") == []


def test_allowed_hosts_match_exactly() -> None:
    hosts = PushSettings().allowed_hosts
    assert host_allowed("https://fcm.googleapis.com/fcm/send/abc", hosts)
    assert host_allowed("https://fcm.googleapis.com:443/fcm/send/abc", hosts)
    assert host_allowed("https://wns2-by3p.notify.windows.com/w/?token=x", hosts)
    assert host_allowed("https://web.push.apple.com/QGx", hosts)
    assert not host_allowed("https://notify.windows.com/w", hosts)
    assert not host_allowed("https://evilnotify.windows.com.example/w", hosts)
    assert not host_allowed("http://127.0.0.1:8470/push/x", hosts)
    stand_in = [*hosts, "http://127.0.0.1:8470"]
    assert host_allowed("http://127.0.0.1:8470/push/x", stand_in)
    assert not host_allowed("http://127.0.0.1:8471/push/x", stand_in)
    assert not host_allowed("https://127.0.0.1:8470/push/x", stand_in)


@pytest.mark.parametrize(
    "entry", ["http://push.example.org", "http://10.0.0.1:80", "ftp://x", "a/b", "*.*.x", "h:1"]
)
def test_settings_refuse_unsafe_allowed_hosts(entry: str) -> None:
    with pytest.raises(ValidationError):
        PushSettings(allowed_hosts=[entry])


@pytest.mark.parametrize("subject", ["admin@example.org", "http://example.org", "mailto:nobody"])
def test_settings_refuse_a_bad_vapid_subject(subject: str) -> None:
    with pytest.raises(ValidationError):
        PushSettings(vapid_subject=subject)


async def test_stream_sdk_lists_and_deletes_devices(srv: ServerHandle, push: PushService) -> None:
    sub, _ = push.make_subscription("alice")
    client = AsyncStream(api_key=srv.api_key, api_secret=srv.api_secret, base_url=srv.base_url)
    try:
        # The SDK's create_device has no web_push_subscription: it gets a 400 naming it ...
        with pytest.raises(StreamApiException) as err:
            await client.create_device(
                id=sub["endpoint"], push_provider="web_push", user_id="alice"
            )
        assert err.value.status_code == 400
        assert "web_push_subscription" in str(err.value.api_error.message)
        # ... and its generic POST carries one.
        r = await client.post("/api/v2/devices", json=device_body(sub, user_id="alice"))
        assert r.status_code() == 201
        listed = await client.list_devices(user_id="alice")
        (device,) = listed.data.devices
        assert (device.id, device.push_provider, device.user_id) == (
            sub["endpoint"],
            "web_push",
            "alice",
        )
        assert device.created_at.year >= 2024 and device.disabled is False
        await client.delete_device(id=sub["endpoint"], user_id="alice")
        assert (await client.list_devices(user_id="alice")).data.devices == []
    finally:
        await client.aclose()


async def test_push_turned_off(tmp_path: Path, push: PushService) -> None:
    async with running_server(
        tmp_path, users=["alice"], push={"enabled": False, "allowed_hosts": [push.origin]}
    ) as srv:
        sub, _ = push.make_subscription("alice")
        r = await _post(srv, "alice", device_body(sub))
        assert r.status_code == 501, r.text
        async with srv.client("alice") as http:
            web_push = (await http.get("/api/v2/app")).json()["app"]["web_push"]
        assert web_push["enabled"] is False and web_push["vapid_public_key"]
