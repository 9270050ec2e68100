"""The daemon's server link against the real server: ring, roles, appointments, custom.device."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from appliance.client import Client
from appliance.daemon.config import DeviceConfig
from appliance.daemon.link import ClientLink
from tests.support import poll
from tests.support.server import running_server


def config(url: str, api_key: str, **call: Any) -> DeviceConfig:
    return DeviceConfig.model_validate(
        {
            "device": {"id": "bed", "name": "Bed 7", "model": "bedside"},
            "server": {"url": url, "api_key": api_key, "token": "unused"},
            "mode": "answer",
            "call": {"type": "default", "id": "room-{device}", "members": ["dr:admin"], **call},
        }
    )


async def test_link_against_the_real_server(tmp_path: Path) -> None:
    async with running_server(tmp_path, users=["bed", "dr"]) as srv:
        async with Client(srv.base_url, srv.api_key, srv.server_token()) as admin:
            soon = admin.call("default", "visit-1")
            await soon.create(
                members=[{"user_id": "bed"}, {"user_id": "dr"}],
                starts_at=datetime.now(UTC) + timedelta(seconds=30),
                created_by_id="dr",
            )
            later = admin.call("default", "visit-2")
            await later.create(
                members=[{"user_id": "bed"}],
                starts_at=datetime.now(UTC) + timedelta(hours=3),
                created_by_id="dr",
            )
        cfg = config(srv.base_url, srv.api_key)
        link = ClientLink(Client(srv.base_url, srv.api_key, srv.user_token("bed")), cfg)
        try:
            upcoming = await link.upcoming(120)
            assert [cid for cid, _ in upcoming] == ["default:visit-1"]
            assert abs(upcoming[0][1] - (datetime.now(UTC).timestamp() + 30)) < 10

            cid = await link.ring(cfg.call, cfg.call_id)
            assert cid == "default:room-bed"
            assert await link.member_role(cid, "dr") == "admin"
            assert await link.member_role(cid, "bed") == "call_member"
            assert await link.member_role(cid, "nobody") is None

            await link.publish_device()
            async with Client(srv.base_url, srv.api_key, srv.server_token()) as admin:
                members = (await admin.call("default", "room-bed").get()).members
            bed = next(m for m in members if m.user_id == "bed")
            assert bed.user is not None and bed.user.custom["device"] == cfg.device_custom()
            assert bed.user.name == "Bed 7"
        finally:
            await link.close()


async def test_embedded_server_with_a_self_signed_certificate(tmp_path: Path) -> None:
    import yaml

    from appliance.daemon.config import load_config
    from appliance.daemon.service import running

    data = {
        "device": {"id": "door-1"},
        "server": {"embedded": {"port": 0, "tls": "self-signed", "users": [{"id": "alice"}]}},
        "call": {"members": ["alice"]},
        "pin_factory": "mock",
        "state_dir": str(tmp_path / "state"),
        "media": {"audio": {"capture_device": "null", "playback_device": "null"}},
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(data))
    async with running(load_config(path)) as run:
        import asyncio

        await asyncio.wait_for(run.daemon.wait_online(), 20)
        assert run.base_url.startswith("https://127.0.0.1:")
        assert run.embedded.login_link("alice").startswith(run.base_url + "/?api_key=")
        assert (tmp_path / "state" / "server").is_dir()


async def test_prepare_call_gets_or_creates_without_ringing_and_adds_members_later(
    tmp_path: Path,
) -> None:
    """At start the device get-or-creates its configured call (no ring) with its user token;
    a restart with more members in the YAML adds them and removes nobody."""
    users = ["bed", "dr", "nurse", "extra"]
    async with running_server(tmp_path, users=users) as srv:
        cfg = config(srv.base_url, srv.api_key)
        async with Client(srv.base_url, srv.api_key, srv.user_token("dr")) as dr:
            rings = dr.events({"call.ring"})
            await dr.connect()
            link = ClientLink(Client(srv.base_url, srv.api_key, srv.user_token("bed")), cfg)
            try:
                assert await link.prepare_call() == "default:room-bed"
            finally:
                await link.close()
            async with Client(srv.base_url, srv.api_key, srv.server_token()) as admin:
                door = admin.call("default", "room-bed")
                state = await door.get()
                assert {m.user_id: m.role for m in state.members} == {
                    "dr": "admin",
                    "bed": "call_member",
                }
                assert state.call.created_by is not None and state.call.created_by.id == "bed"
                # an admin changes the call on the server meanwhile
                await door.update_members(members=[{"user_id": "extra", "role": "call_member"}])
                await door.update_members(members=[{"user_id": "dr", "role": "host"}])

            # restart with one more member and other custom data in the YAML
            cfg2 = config(
                srv.base_url,
                srv.api_key,
                members=["dr:admin", "nurse:call_member"],
                custom={"changed": True},
            )
            link = ClientLink(Client(srv.base_url, srv.api_key, srv.user_token("bed")), cfg2)
            try:
                assert await link.prepare_call() == "default:room-bed"
                assert await link.prepare_call() == "default:room-bed"  # nothing left to add
            finally:
                await link.close()
            async with Client(srv.base_url, srv.api_key, srv.server_token()) as admin:
                state = await admin.call("default", "room-bed").get()
            # added: nurse; kept: extra (not in the YAML) and dr's server-side role
            assert {m.user_id: m.role for m in state.members} == {
                "dr": "host",
                "bed": "call_member",
                "extra": "call_member",
                "nurse": "call_member",
            }
            assert "changed" not in state.call.custom  # get-or-create ignores data when it exists
            # preparing never rang: the first ring dr's connection gets is a later one on another call
            async with Client(srv.base_url, srv.api_key, srv.server_token()) as admin:
                await admin.call("default", "probe").create(
                    members=[{"user_id": "dr"}, {"user_id": "bed"}],
                    created_by_id="bed",
                    ring=True,
                )
            first = await asyncio.wait_for(rings.get(), 20)
            assert first.type == "call.ring" and first.cid == "default:probe", first
            rings.close()


async def test_prepare_call_with_a_fresh_id_each_time_creates_nothing(tmp_path: Path) -> None:
    async with running_server(tmp_path, users=["bed", "dr"]) as srv:
        cfg = config(srv.base_url, srv.api_key, id="")
        link = ClientLink(Client(srv.base_url, srv.api_key, srv.user_token("bed")), cfg)
        try:
            assert await link.prepare_call() is None
            page = await link.client.query_calls({}, limit=5)
            assert page.calls == []
        finally:
            await link.close()


async def test_running_daemon_creates_its_call_once_online(tmp_path: Path) -> None:
    """service.running against a remote server: once online the call exists (no press), with
    the members and the published custom.device (unlock_roles included)."""
    from appliance.daemon.service import running

    async with running_server(tmp_path, users=["door-1", "alice", "bob"]) as srv:
        token_file = tmp_path / "door.token"
        token_file.write_text(srv.user_token("door-1"))
        cfg = DeviceConfig.model_validate(
            {
                "device": {"id": "door-1", "name": "Front door"},
                "server": {"url": srv.base_url, "api_key": srv.api_key, "token_file": token_file},
                "call": {"id": "door-{device}", "members": ["alice:admin", "bob"]},
                "relay": {"pin": 23, "unlock_roles": ["admin", "host"]},
                "pin_factory": "mock",
                "state_dir": tmp_path / "state",
                "media": {"audio": {"capture_device": "null", "playback_device": "null"}},
            }
        )
        async with running(cfg) as run:
            await asyncio.wait_for(run.daemon.wait_online(), 20)
            async with Client(srv.base_url, srv.api_key, srv.user_token("bob")) as bob:
                found: list[Any] = []

                async def listed_with_the_device() -> bool:
                    page = await bob.query_calls({"members": {"$in": ["bob"]}}, limit=5)
                    door = next(
                        (c for c in page.calls if c.call.cid == "default:door-door-1"), None
                    )
                    device = (
                        next((m for m in door.members if m.user_id == "door-1"), None)
                        if door
                        else None
                    )
                    if device is not None and device.user is not None and device.user.custom:
                        found.append(door)
                    return bool(found)

                await poll.until(
                    listed_with_the_device, 20.0, what="the device's call, for bob", every=0.1
                )
                state = found[-1]
            roles = {m.user_id: m.role for m in state.members}
            assert roles == {"alice": "admin", "bob": "call_member", "door-1": "call_member"}
            assert run.daemon.call_state.value == "idle"
            device_user = next(m for m in state.members if m.user_id == "door-1").user
            assert device_user is not None
            spec = device_user.custom["device"]
            assert spec["relay"] is True and spec["unlock_roles"] == ["admin", "host"]


async def test_a_refused_get_or_create_is_a_warning_not_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A call type whose role ``user`` lacks create-call (built-in livestream): the device token
    cannot create its call; the daemon says why in one warning and stays up and idle."""
    from appliance.daemon.service import running

    async with running_server(tmp_path, users=["door-1", "alice"]) as srv:
        cfg = DeviceConfig.model_validate(
            {
                "device": {"id": "door-1"},
                "server": {
                    "url": srv.base_url,
                    "api_key": srv.api_key,
                    "token": srv.user_token("door-1"),
                },
                "call": {"type": "livestream", "id": "door-{device}", "members": ["alice"]},
                "pin_factory": "mock",
                "state_dir": tmp_path / "state",
                "media": {"audio": {"capture_device": "null", "playback_device": "null"}},
            }
        )
        with caplog.at_level(logging.WARNING, logger="appliance.daemon.service"):
            async with running(cfg) as run:
                await asyncio.wait_for(run.daemon.wait_online(), 20)
                await poll.until(
                    lambda: "cannot get-or-create its call" in caplog.text,
                    20.0,
                    what="the warning that the call cannot be made",
                    every=0.1,
                )
                assert "create-call" in caplog.text, caplog.text
                assert run.daemon.call_state.value == "idle"
                assert run.daemon.last_error is None
