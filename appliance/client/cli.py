"""``appliance call …`` and ``appliance events``: the client on the command line.

Where the server and credentials come from, first match wins:

1. ``--url``, ``--api-key``, ``--token`` (or ``APPLIANCE_URL``, ``APPLIANCE_API_KEY``,
   ``APPLIANCE_TOKEN``);
2. ``--config server.yaml`` (or ``APPLIANCE_SERVER_CONFIG``): the server's own config; the command
   mints a server token from its secret (``--as USER`` mints that user's token instead), and trusts
   the server's certificate when it serves TLS.

Human-readable output by default, ``--json`` for scripts; a mistake exits non-zero with one line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from appliance.errors import ConfigError

# Building the parser (every ``appliance`` command, ``press`` and ``status`` too) imports only
# this module's top: httpx, websockets and pydantic are imported by the commands that use them.
if TYPE_CHECKING:
    from appliance.client.call import Call
    from appliance.client.client import Client
    from appliance.client.models import CallResponse, MembersPage


class _VerbParser(argparse.ArgumentParser):
    """Lets ``--sort -created_at`` through: the verbs have no single-dash options but ``-h``."""

    def _parse_optional(self, arg_string: str) -> Any:
        if (
            arg_string.startswith("-")
            and not arg_string.startswith("--")
            and arg_string not in self._option_string_actions
        ):
            return None
        return super()._parse_optional(arg_string)


def _connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("server (flags, else environment, else --config)")
    group.add_argument("--url", help="server base URL (APPLIANCE_URL)")
    group.add_argument("--api-key", help="API key (APPLIANCE_API_KEY)")
    group.add_argument("--token", help="JWT (APPLIANCE_TOKEN)")
    group.add_argument("--config", help="server.yaml: mint a token from its secret")
    group.add_argument("--as", dest="as_user", metavar="USER", help="with --config: act as USER")
    group.add_argument("--ca-file", help="CA certificate to trust (a self-signed server)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def register(subparsers: Any) -> None:
    call = subparsers.add_parser("call", help="create, inspect and change calls")
    verbs = call.add_subparsers(dest="verb", metavar="VERB", parser_class=_VerbParser)
    verbs.required = True

    def verb(name: str, help_text: str, *, optional_id: bool = False) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=help_text)
        parser.add_argument("type", help="call type, e.g. default")
        if optional_id:
            parser.add_argument("id", nargs="?", default="", help="call id (default: a new UUID)")
        else:
            parser.add_argument("id", help="call id")
        _connection_options(parser)
        return parser

    create = verb("create", "get or create a call", optional_id=True)
    create.add_argument("--member", action="append", default=[], metavar="USER[:ROLE]")
    create.add_argument("--custom", action="append", default=[], metavar="KEY=VALUE")
    create.add_argument("--team")
    create.add_argument("--created-by", metavar="USER", help="needed with a server token")
    create.add_argument("--starts-at", metavar="ISO", help="RFC 3339, e.g. 2030-01-02T09:00:00Z")
    create.add_argument("--ring", action="store_true", help="ring the members")
    create.add_argument("--video", action=argparse.BooleanOptionalAction, default=None)
    create.set_defaults(func=_run(_create))

    get = verb("get", "show a call")
    get.set_defaults(func=_run(_get))

    update = verb("update", "change custom data or the start time")
    update.add_argument("--custom", action="append", default=[], metavar="KEY=VALUE")
    update.add_argument("--starts-at", metavar="ISO")
    update.set_defaults(func=_run(_update))

    ring = verb("ring", "ring members (default: all but me)")
    ring.add_argument("--member", action="append", default=None, metavar="USER")
    ring.set_defaults(func=_run(_ring))

    end = verb("end", "end the call for everyone")
    end.set_defaults(func=_run(_end))

    delete = verb("delete", "delete the call")
    delete.add_argument("--hard", action="store_true", help="also remove its history")
    delete.set_defaults(func=_run(_delete))

    members = verb("members", "query the members of a call")
    members.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="FIELD<op>VALUE",
        help="op: = != > >= < <= (e.g. role=admin, custom.color=red)",
    )
    members.add_argument(
        "--sort", action="append", default=[], metavar="[-]FIELD", help="-created_at: newest first"
    )
    members.add_argument("--limit", type=int, default=25)
    members.add_argument("--next", help="cursor of the next page")
    members.add_argument("--prev", help="cursor of the previous page")
    members.set_defaults(func=_run(_members))

    events = subparsers.add_parser("events", help="print events as JSON lines")
    events.add_argument("--type", action="append", default=None, help="only these event types")
    events.add_argument("--call", dest="cid", metavar="TYPE:ID", help="only this call's events")
    events.add_argument("--count", type=int, default=0, help="stop after N events")
    events.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the first connection",
    )
    _connection_options(events)
    events.set_defaults(func=_run(_events))


def _run(command: Any) -> Any:
    def func(args: argparse.Namespace) -> int:
        _quiet_libraries()
        return int(asyncio.run(_with_client(args, command)) or 0)

    return func


def _quiet_libraries() -> None:
    """At the default level, stderr carries only the one-line error (no request log lines)."""
    if logging.getLogger().getEffectiveLevel() >= logging.INFO:
        for name in ("httpx", "appliance.client"):
            logging.getLogger(name).setLevel(logging.WARNING)


async def _with_client(args: argparse.Namespace, command: Any) -> int:
    async with client_from_args(args) as client:
        return int(await command(client, args) or 0)


def client_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> Client:
    environ = os.environ if env is None else env
    url = args.url or environ.get("APPLIANCE_URL")
    api_key = args.api_key or environ.get("APPLIANCE_API_KEY")
    token = args.token or environ.get("APPLIANCE_TOKEN")
    ca_file = args.ca_file
    config = args.config or environ.get("APPLIANCE_SERVER_CONFIG")
    if config and not (url and api_key and token):
        from appliance.servercreds import from_server_config

        creds = from_server_config(config, args.as_user)
        url = url or creds.url
        api_key = api_key or creds.api_key
        token = token or creds.token
        ca_file = ca_file if ca_file is not None else creds.ca_file
    missing = [
        name
        for name, value in (("--url", url), ("--api-key", api_key), ("--token", token))
        if not value
    ]
    if missing:
        raise ConfigError(
            f"missing {', '.join(missing)}",
            hint="pass the flags, set APPLIANCE_URL / APPLIANCE_API_KEY / APPLIANCE_TOKEN, "
            "or --config server.yaml",
        )
    assert url and api_key and token
    from appliance.client.client import Client

    return Client(url, api_key, token, ca_file=ca_file)


def _print_call(response: CallResponse, args: argparse.Namespace) -> None:
    from appliance.client.clitext import call_text

    if args.json:
        print(response.model_dump_json(by_alias=True))
    else:
        print(call_text(response))


def _call(client: Client, args: argparse.Namespace) -> Call:
    return client.call(args.type, args.id)


async def _create(client: Client, args: argparse.Namespace) -> int:
    from appliance.client.clitext import parse_custom, parse_member

    response = await _call(client, args).create(
        members=[parse_member(m) for m in args.member],
        custom=parse_custom(args.custom) or None,
        team=args.team,
        created_by_id=args.created_by,
        starts_at=args.starts_at,
        ring=args.ring,
        video=args.video,
    )
    _print_call(response, args)
    return 0


async def _get(client: Client, args: argparse.Namespace) -> int:
    _print_call(await _call(client, args).get(), args)
    return 0


async def _update(client: Client, args: argparse.Namespace) -> int:
    from appliance.client.clitext import parse_custom

    custom = parse_custom(args.custom) or None
    if custom is None and args.starts_at is None:
        raise ConfigError("nothing to update", hint="pass --custom KEY=VALUE or --starts-at ISO")
    _print_call(await _call(client, args).update(custom=custom, starts_at=args.starts_at), args)
    return 0


async def _ring(client: Client, args: argparse.Namespace) -> int:
    await _call(client, args).ring(args.member)
    return _done(args, f"ringing {args.type}:{args.id}")


async def _end(client: Client, args: argparse.Namespace) -> int:
    await _call(client, args).end()
    return _done(args, f"ended {args.type}:{args.id}")


async def _delete(client: Client, args: argparse.Namespace) -> int:
    await _call(client, args).delete(hard=args.hard)
    return _done(args, f"deleted {args.type}:{args.id}")


def _done(args: argparse.Namespace, text: str) -> int:
    print(json.dumps({"ok": True, "cid": f"{args.type}:{args.id}"}) if args.json else text)
    return 0


async def _members(client: Client, args: argparse.Namespace) -> int:
    from appliance.client.clitext import member_line, parse_filters, parse_sort

    page: MembersPage = await _call(client, args).query_members(
        filters=parse_filters(args.filter) or None,
        sort=[parse_sort(s) for s in args.sort] or None,
        limit=args.limit,
        next=args.next,
        prev=args.prev,
    )
    if args.json:
        print(page.model_dump_json(by_alias=True))
        return 0
    for member in page.members:
        print(member_line(member))
    print(f"({len(page.members)} members)")
    if page.next:
        print(f"next: {page.next}")
    if page.prev:
        print(f"prev: {page.prev}")
    return 0


async def _events(client: Client, args: argparse.Namespace) -> int:
    from appliance.client.clitext import parse_cid

    seen = 0
    with client.events(args.type, call_cid=parse_cid(args.cid)) as events:
        # Fail fast (one line) when the server cannot be reached at all; once up, reconnect forever.
        await client.connect(args.connect_timeout)
        async for event in events:
            line = event.model_dump(mode="json", by_alias=True, exclude_none=True)
            print(json.dumps(line), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                break
    sys.stdout.flush()
    return 0
