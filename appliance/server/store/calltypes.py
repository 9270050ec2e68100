"""Call types: the built-ins, those of ``config/call-types.yaml``, and those created by the API.

The store holds every call type; at start the built-ins and the YAML file are written into it
(the file wins over a built-in of the same name, and is re-applied at every start so the file
stays the source of truth for the types it names).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance.calls.capabilities import ROLES, unknown_capabilities
from appliance.calls.settings import CallSettings, merge
from appliance.calls.types import BUILTIN_CALL_TYPES, CallType, notification_settings
from appliance.errors import ConfigError, InvalidRequest, NotFound
from appliance.server.store.schema import call_types
from appliance.yamlload import load_yaml

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9_-]{1,64}$")


def _role(value: str) -> str:
    if value not in ROLES:
        raise ValueError(f"unknown role {value!r} (roles: {', '.join(sorted(ROLES))})")
    return value


def _capability(value: str) -> str:
    if unknown_capabilities([value]):
        raise ValueError(f"unknown capability {value!r}")
    return value


RoleName = Annotated[str, AfterValidator(_role)]
CapabilityName = Annotated[str, AfterValidator(_capability)]


class CallTypeSpec(BaseModel):
    """A call type as written in YAML or sent to ``POST /calltypes``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_RE.pattern)
    settings: dict[str, Any] = Field(default_factory=dict)
    grants: dict[RoleName, list[CapabilityName]] | None = None
    notification_settings: dict[str, Any] | None = None
    external_storage: str | None = None


class CallTypesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    call_types: list[CallTypeSpec] = Field(default_factory=list)


def build(spec: CallTypeSpec, base: CallType | None = None) -> CallType:
    """A complete call type from ``spec``, on top of ``base`` (default: the built-in ``default``)."""
    base = base or BUILTIN_CALL_TYPES.get(spec.name) or BUILTIN_CALL_TYPES["default"]
    try:
        settings = CallSettings.model_validate(merge(base.settings, spec.settings)).stored()
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(
            f"settings.{where}: {first['msg']}", field=f"settings.{where}"
        ) from None
    grants = {**base.grants, **spec.grants} if spec.grants is not None else dict(base.grants)
    grants = {role: sorted(set(caps)) for role, caps in grants.items()}
    return CallType(
        spec.name, settings, grants, spec.notification_settings or notification_settings()
    )


def load_file(path: Path) -> list[CallType]:
    doc = load_yaml(path)
    parsed = doc.validate(CallTypesFile)
    out: list[CallType] = []
    for i, spec in enumerate(parsed.call_types):
        base = BUILTIN_CALL_TYPES.get(spec.name) or BUILTIN_CALL_TYPES["default"]
        try:
            CallSettings.model_validate(merge(base.settings, spec.settings))
        except ValidationError as err:
            raise doc.from_validation(err, prefix=("call_types", i, "settings")) from None
        out.append(build(spec))
    names = [t.name for t in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"call type {dupes[0]!r} is defined twice", file=str(path))
    return out


async def seed(conn: AsyncConnection, file: Path | None, now: int) -> None:
    """Write the built-ins (if absent) and the YAML file's types (always) into the store."""
    have = set((await conn.execute(select(call_types.c.name))).scalars())
    for t in BUILTIN_CALL_TYPES.values():
        if t.name not in have:
            await save(conn, t, now, create=True)
            have.add(t.name)
    if file is not None:
        for t in load_file(file):
            await save(conn, t, now, create=t.name not in have)
            have.add(t.name)
        log.info("call types of %s applied", file)


async def save(conn: AsyncConnection, t: CallType, now: int, *, create: bool) -> None:
    values = {
        "settings": t.settings,
        "grants": t.grants,
        "notification_settings": t.notification_settings or notification_settings(),
        "updated_at": now,
    }
    if create:
        await conn.execute(call_types.insert().values(name=t.name, created_at=now, **values))
    else:
        await conn.execute(call_types.update().where(call_types.c.name == t.name).values(**values))


async def get_row(conn: AsyncConnection, name: str) -> dict[str, Any]:
    row = (
        (await conn.execute(select(call_types).where(call_types.c.name == name))).mappings().first()
    )
    if row is None:
        raise NotFound(f"call type {name!r} does not exist", field="type")
    return dict(row)


async def all_rows(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(select(call_types).order_by(call_types.c.name))
    return [dict(r) for r in rows.mappings()]


def to_call_type(row: dict[str, Any]) -> CallType:
    return CallType(row["name"], row["settings"], row["grants"], row["notification_settings"] or {})
