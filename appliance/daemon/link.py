"""The daemon's server link over :class:`appliance.client.Client` (the :class:`Link` port).

It reduces the client's typed events to :class:`LinkEvent` for the state machine, and re-raises
network failures as our :class:`ServerUnavailable` so the state machine sees one error tree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from appliance.client import CONNECTION_LOST, CONNECTION_OK, Call, Client, Event
from appliance.daemon.config import CallConfig, DeviceConfig
from appliance.daemon.ports import LinkEvent
from appliance.errors import APIError, ServerUnavailable

log = logging.getLogger(__name__)

EVENTS = (
    CONNECTION_OK,
    CONNECTION_LOST,
    "call.ring",
    "call.accepted",
    "call.rejected",
    "call.missed",
    "call.ended",
    "call.session_participant_joined",
    "call.session_participant_left",
    "custom",
)


def to_link_event(event: Event) -> LinkEvent:
    if event.type == CONNECTION_OK:
        return LinkEvent("link.online")
    if event.type == CONNECTION_LOST:
        return LinkEvent("link.offline")
    participant = event.participant
    user_id = event.user.id if event.user is not None else None
    if user_id is None and participant is not None:
        user_id = participant.user_id
    return LinkEvent(
        event.type,
        call_cid=event.cid,
        user_id=user_id,
        reason=event.reason,
        custom=event.custom,
        session_id=event.call_session_id,
        participant_session=participant.session_id if participant is not None else None,
        resynced=event.resynced,
    )


class ClientLink:
    def __init__(self, client: Client, cfg: DeviceConfig) -> None:
        self.client = client
        self.cfg = cfg
        self.user_id = cfg.device.id
        self._calls: dict[str, Call] = {}
        self._remove: Callable[[], None] | None = None

    async def start(self, on_event: Callable[[LinkEvent], None]) -> None:
        self._remove = self.client.on(EVENTS, lambda e: on_event(to_link_event(e)))

    async def close(self) -> None:
        if self._remove is not None:
            self._remove()
        await self.client.aclose()

    def _call(self, cid: str) -> Call:
        call = self._calls.get(cid)
        if call is None:
            call_type, call_id = cid.split(":", 1)
            call = self.client.call(call_type, call_id)
            self._calls[cid] = call
        return call

    async def _guarded(self, what: str, cid: str, work: Any) -> Any:
        try:
            return await work
        except APIError:
            raise
        except (httpx.HTTPError, OSError) as err:
            raise ServerUnavailable(f"{what}: {err}", cid=cid) from err

    def _members(self, call: CallConfig) -> list[dict[str, Any]]:
        """The configured members, plus this device as ``call_member`` unless listed."""
        members = [m.model_dump() for m in call.members]
        if not any(m["user_id"] == self.user_id for m in members):
            members.append({"user_id": self.user_id, "role": "call_member", "custom": {}})
        return members

    def _create_data(self, call: CallConfig) -> dict[str, Any]:
        return {
            "members": self._members(call),
            "custom": call.custom or None,
            "settings": call.settings_override or None,
            "starts_at": call.starts_at,
            "team": self.cfg.device.team,
        }

    async def ring(self, call: CallConfig, call_id: str) -> str:
        handle = self.client.call(call.type, call_id)
        self._calls[handle.cid] = handle
        ring_all = call.ring is None
        await self._guarded(
            "ring",
            handle.cid,
            handle.create(**self._create_data(call), ring=ring_all, video=call.video),
        )
        if not ring_all:
            await self._guarded("ring", handle.cid, handle.ring(call.ring, video=call.video))
        return handle.cid

    async def prepare_call(self) -> str | None:
        """Get-or-create the configured call WITHOUT ringing, so that its members see the device
        in their console before it ever rang; returns the cid, or None for an empty ``call.id``
        (a fresh call each time: nothing to create ahead).

        Idempotent: an existing call keeps its data (custom, settings, starts_at, team and the
        roles of its members are the server's from then on); members listed in the config that
        the call lacks are added; members the server has and the config does not list stay.
        With a user token this needs ``create-call`` for the role ``user`` on the call type (or
        the global role admin) and, to add members later, ``update-call-member`` for the
        device's member role (the built-in ``default`` type grants both)."""
        call = self.cfg.call
        call_id = self.cfg.call_id
        if not call_id:
            return None
        handle = self._call(f"{call.type}:{call_id}")
        data = self._create_data(call)
        response = await self._guarded("get-or-create", handle.cid, handle.create(**data))
        if response.created:
            log.info("Device(%s): created %s (no ring)", self.user_id, handle.cid)
            return handle.cid
        wanted = {m["user_id"]: m for m in data["members"]}
        present = await self._guarded("query members", handle.cid, self._present(handle, wanted))
        missing = [m for user_id, m in wanted.items() if user_id not in present]
        if missing:
            await self._guarded(
                "update members", handle.cid, handle.update_members(members=missing)
            )
            log.info(
                "Device(%s): %s exists; added members %s",
                self.user_id,
                handle.cid,
                ", ".join(m["user_id"] for m in missing),
            )
        else:
            log.info("Device(%s): %s exists with every configured member", self.user_id, handle.cid)
        return handle.cid

    @staticmethod
    async def _present(handle: Call, wanted: dict[str, Any]) -> set[str]:
        filters = {"user_id": {"$in": sorted(wanted)}}
        return {m.user_id async for m in handle.iter_members(filters)}

    async def accept(self, cid: str) -> None:
        await self._guarded("accept", cid, self._call(cid).accept())

    async def reject(self, cid: str, reason: str) -> None:
        await self._guarded("reject", cid, self._call(cid).reject(reason))

    async def send_event(self, cid: str, custom: dict[str, Any]) -> None:
        await self._guarded("event", cid, self._call(cid).send_event(custom))

    async def member_role(self, cid: str, user_id: str) -> str | None:
        page = await self._guarded(
            "query members",
            cid,
            self._call(cid).query_members({"user_id": {"$eq": user_id}}, limit=1),
        )
        return page.members[0].role if page.members else None

    async def participant_sessions(self, cid: str) -> set[str] | None:
        response = await self._guarded("get", cid, self._call(cid).get())
        session = response.call.live_session
        if session is None:
            return None
        return {p.session_id for p in session.participants}

    async def upcoming(self, within_s: float) -> list[tuple[str, float]]:
        horizon = datetime.now(UTC) + timedelta(seconds=within_s)
        filters = {
            "members": {"$in": [self.user_id]},
            "starts_at": {"$lte": horizon.isoformat()},
            "ended_at": {"$exists": False},
        }
        page = await self._guarded(
            "query calls", "-", self.client.query_calls(filters, ("starts_at", 1), limit=25)
        )
        out = []
        for item in page.calls:
            starts = item.call.starts_at
            if isinstance(starts, datetime):
                out.append((item.call.cid, starts.timestamp()))
        return out

    async def publish_device(self) -> None:
        """Set ``custom.device`` on our user (docs/architecture.md, "Devices"); a fleet server may not let a
        device token do that (then an admin seeds it), which is logged, not fatal."""
        user: dict[str, Any] = {"id": self.user_id, "custom": {"device": self.cfg.device_custom()}}
        if self.cfg.device.name:
            user["name"] = self.cfg.device.name
        try:
            # role and teams are the server's business: a device token may not set them
            await self.client.rest.request(
                "POST", "/api/v2/users", json={"users": {self.user_id: user}}
            )
        except (APIError, httpx.HTTPError, OSError) as err:
            log.warning("Device(%s): cannot publish custom.device: %s", self.user_id, err)

    def __repr__(self) -> str:
        return f"<ClientLink {self.user_id} {self.client!r}>"
