"""Who may do what on a call: call-type grants → capabilities per role, plus the fences around them.

Order of checks for a user token (a server token may do anything):

1. ``call_cids`` pin: a token that lists call cids reaches those calls only (a device token);
2. team isolation: a user who belongs to teams reaches only calls of those teams, and a call of a
   team is reached only by that team's users;
3. roles: a member has the member's call role, anyone else the role ``user``; a user whose global
   role is ``admin`` also has ``admin``. Capabilities are the union of the grants of those roles.

"Only members can join" is a call type whose ``user`` role lacks ``join-call``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from appliance.calls.capabilities import Capability
from appliance.errors import NotFound, PermissionDenied
from appliance.server.auth import Principal

OFFERED: frozenset[str] = frozenset(c.value for c in Capability)


def reachable(who: Principal, cid: str, team: str | None) -> str | None:
    """``None`` if ``who`` may reach the call at all, else why not."""
    if who.is_server:
        return None
    if who.call_cids is not None and cid not in who.call_cids:
        return f"this token is limited to calls {', '.join(who.call_cids) or '(none)'}"
    if team is not None and team not in who.teams:
        return f"call belongs to team {team!r} and user {who.user_id} is not in it"
    if team is None and who.teams:
        return f"user {who.user_id} belongs to teams and this call belongs to none"
    return None


def roles_of(who: Principal, member_role: str | None) -> list[str]:
    roles = [member_role] if member_role else ["user"]
    if who.role == "admin" and "admin" not in roles:
        roles.append("admin")
    return roles


@dataclass(frozen=True)
class Access:
    """The outcome for one principal on one call."""

    cid: str
    who: Principal
    capabilities: frozenset[str]
    blocked: str | None = None

    def own_capabilities(self) -> list[str]:
        return sorted(self.capabilities)

    def can(self, capability: str) -> bool:
        return self.blocked is None and capability in self.capabilities

    def require(self, capability: str) -> None:
        if self.blocked is not None:
            raise PermissionDenied(self.blocked, cid=self.cid)
        if capability not in self.capabilities:
            raise PermissionDenied(
                f"user {self.who.user_id} lacks the capability {capability} on this call",
                cid=self.cid,
            )

    def require_ring(self, creator_id: str | None) -> None:
        """Ringing: ``ring-call``, or being the call's creator (a device ringing the residents
        of a call it made, without being one of them)."""
        if self.who.user_id is not None and self.who.user_id == creator_id and self.blocked is None:
            return
        self.require(Capability.RING_CALL)

    def require_read(self) -> None:
        """Reading a call: ``read-call``, or being able to join it; unreachable calls look absent."""
        if self.blocked is not None:
            raise NotFound(f"call {self.cid} not found", cid=self.cid)
        if not (self.can(Capability.READ_CALL) or self.can(Capability.JOIN_CALL)):
            raise PermissionDenied(f"user {self.who.user_id} may not read this call", cid=self.cid)


def access(
    who: Principal,
    cid: str,
    team: str | None,
    grants: Mapping[str, Iterable[str]],
    member_role: str | None,
) -> Access:
    if who.is_server:
        return Access(cid, who, OFFERED)
    blocked = reachable(who, cid, team)
    if blocked is not None:
        return Access(cid, who, frozenset(), blocked)
    caps: set[str] = set()
    for role in roles_of(who, member_role):
        caps.update(grants.get(role, ()))
    return Access(cid, who, frozenset(caps & OFFERED))


def check_create(
    who: Principal, cid: str, team: str | None, grants: Mapping[str, Iterable[str]]
) -> None:
    """Creating a call: reachable with the requested team, and ``create-call`` as a non-member."""
    if who.is_server:
        return
    if team is not None and team not in who.teams:
        raise PermissionDenied(
            f"user {who.user_id} may not create a call for team {team!r}",
            cid=cid,
            field="data.team",
        )
    access(who, cid, team, grants, None).require(Capability.CREATE_CALL)


def _granted(grants: Mapping[str, Iterable[str]], role: str) -> frozenset[str]:
    return frozenset(grants.get(role, ())) & OFFERED


def check_member_changes(
    acc: Access,
    grants: Mapping[str, Iterable[str]],
    current: Mapping[str, str],
    upserts: Iterable[tuple[int, str, str | None]],
    removals: Iterable[str],
    creator_id: str,
) -> None:
    """Changing the members of an existing call with a user token (a server token may do anything).

    ``current`` maps the affected users who are members to their role; ``upserts`` are
    ``(index, user_id, role or None)``. A caller grants only roles whose capabilities she has on
    this call herself, so she never raises her own role; she changes or removes only members
    whose role's capabilities she has too (a moderator cannot demote or remove an admin); and
    nobody but the creator herself, a global admin or a server token removes the call's creator.
    """
    who = acc.who
    if who.is_server:
        return
    mine = acc.capabilities if acc.blocked is None else frozenset()

    def above(role: str) -> list[str]:
        return sorted(_granted(grants, role) - mine)

    for index, user_id, role in upserts:
        where = f"update_members[{index}]"
        old = current.get(user_id)
        if old is not None and user_id != who.user_id and above(old):
            raise PermissionDenied(
                f"user {who.user_id} may not change member {user_id}: role {old} has "
                f"capabilities {who.user_id} lacks here ({', '.join(above(old))})",
                cid=acc.cid,
                field=f"{where}.user_id",
            )
        new = role if role is not None else (old or "call_member")
        if new != old and above(new):
            raise PermissionDenied(
                f"user {who.user_id} may not grant role {new}: it has capabilities "
                f"{who.user_id} lacks here ({', '.join(above(new))})",
                cid=acc.cid,
                field=f"{where}.role",
            )
    for index, user_id in enumerate(removals):
        if user_id == who.user_id:
            continue
        if user_id == creator_id and not who.is_admin:
            raise PermissionDenied(
                f"user {who.user_id} may not remove {user_id}, who created the call",
                cid=acc.cid,
                field=f"remove_members[{index}]",
            )
        old = current.get(user_id)
        if old is not None and above(old):
            raise PermissionDenied(
                f"user {who.user_id} may not remove member {user_id}: role {old} has "
                f"capabilities {who.user_id} lacks here ({', '.join(above(old))})",
                cid=acc.cid,
                field=f"remove_members[{index}]",
            )
