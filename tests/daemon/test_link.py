"""The daemon's server link against the real server: ring, roles, appointments, custom.device."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from appliance.client import Client
from appliance.config import DeviceConfig
from appliance.link import ClientLink
from tests.support.server import running_server


def config(url: str, api_key: str) -> DeviceConfig:
    return DeviceConfig.model_validate(
        {
            "device": {"id": "bed", "name": "Bed 7", "model": "bedside"},
            "server": {"url": url, "api_key": api_key, "token": "unused"},
            "mode": "answer",
            "call": {"type": "default", "id": "room-{device}", "members": ["dr:admin"]},
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

    from appliance.config import load_config
    from appliance.service import running

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
