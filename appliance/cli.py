"""``appliance`` command line: run | serve | check | token | users | call | events | press | status.

Each layer registers its own sub-commands (``register(subparsers)`` in its ``cli`` module);
this module only builds the parser, configures logging and turns our errors into one-line
messages with the right exit code. A user mistake never shows a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from appliance.errors import APIError, ApplianceError, ConfigError

# Exit code for a configuration mistake; systemd units carry RestartPreventExitStatus=78.
EX_CONFIG = 78

# Modules that contribute sub-commands through ``register(subparsers)``. All of them are imported
# for every command, ``press`` and ``status`` too, which must answer in a blink: their top imports
# only the standard library and appliance.errors; each command imports what it needs (the server,
# the client, the media stack) when it runs. tests/daemon/test_cli_imports.py checks it.
COMMAND_MODULES: list[str] = [
    "appliance.server.cli",
    "appliance.client.cli",
    "appliance.daemon.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log-level",
        default=os.environ.get("APPLIANCE_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING, ERROR (default INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def configure_logging(level: str) -> None:
    """The only place handlers are set up. The servers run uvicorn with ``log_config=None``:
    uvicorn's own ``dictConfig`` would close every handler made here (the journal one too)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO: a device's journal would be mostly that.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.root.level))
    _audit_to_journal()


def _audit_to_journal() -> None:
    """Under systemd, audit records go to journald natively, with CALL_CID/USER/ACTION fields
    (``journalctl ACTION=unlock``); elsewhere they reach stderr as text like any record."""
    from appliance.journal import JournalHandler

    audit = logging.getLogger("appliance.audit")
    if JournalHandler.available() and not any(
        isinstance(h, JournalHandler) for h in audit.handlers
    ):
        audit.addHandler(JournalHandler())
        audit.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        result = args.func(args)
        return int(result or 0)
    except ConfigError as err:
        print(f"appliance: config error: {err}", file=sys.stderr)
        return EX_CONFIG
    except APIError as err:
        print(f"appliance: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    except ApplianceError as err:
        print(f"appliance: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
