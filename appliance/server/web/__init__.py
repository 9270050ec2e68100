"""What the call server gives browsers, at ``/``: three folders with one URL space.

- ``call/``: the reusable call module (``call.js`` and the modules it re-exports:
  ``connection.js``, ``peer.js``, ``localmedia.js``), documented in docs/call-js.md. Pages
  import it as ``/call.js``.
- ``console/``: the web console (``index.html``, ``console.js`` and its views, the service
  worker ``sw.js`` and the manifest, which must sit at the root of the origin to control it).
- ``testpages/``: pages for tests and benchmarks only (``probe.html``: the call module and the
  block-code reader with no UI; ``blockcode.js``). Served only with the server setting
  ``test_pages: true``; otherwise they answer 404 like any missing file.

The folders are searched in that order (console, call module, test pages); no file name is in
two of them (tests/server/test_console_headers.py checks it), so nothing shadows anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parent
CALL_DIR = WEB_DIR / "call"
CONSOLE_DIR = WEB_DIR / "console"
TEST_PAGES_DIR = WEB_DIR / "testpages"


def served_folders(*, test_pages: bool) -> list[Path]:
    """The folders served at ``/``, first match wins; the test pages only when asked for."""
    folders = [CONSOLE_DIR, CALL_DIR, *([TEST_PAGES_DIR] if test_pages else [])]
    return [folder for folder in folders if folder.is_dir()]


class _Folders(StaticFiles):
    """Starlette's static files over several folders (its lookup walks ``all_directories`` in
    order, the list it builds for ``packages=``), with its checks that a path stays inside."""

    def __init__(self, folders: list[Path]) -> None:
        self._folders = folders
        super().__init__(html=True, check_dir=False)

    def get_directories(
        self,
        directory: str | os.PathLike[str] | None = None,
        packages: list[str | tuple[str, str]] | None = None,
    ) -> list[str | os.PathLike[str]]:
        return list(self._folders)


def static_files(*, test_pages: bool = False) -> StaticFiles | None:
    """The ASGI app for ``/`` (``None`` when an install carries no browser files)."""
    folders = served_folders(test_pages=test_pages)
    return _Folders(folders) if folders else None
