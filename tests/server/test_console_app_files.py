"""The installable console's files: the manifest's icons exist at the sizes it claims, and the
service worker and the manifest are served from the origin's root with their types."""

from __future__ import annotations

import json
import struct

from appliance.server.web import CONSOLE_DIR
from tests.support.server import ServerHandle


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_manifest_icons_exist_at_the_sizes_it_claims() -> None:
    manifest = json.loads((CONSOLE_DIR / "manifest.webmanifest").read_text(encoding="utf-8"))
    assert manifest["scope"] == "/" and manifest["start_url"] == "/"
    assert manifest["display"] == "standalone"
    sizes = set()
    for icon in manifest["icons"]:
        path = CONSOLE_DIR / icon["src"].lstrip("/")
        w, h = _png_size(path.read_bytes())
        assert icon["sizes"] == f"{w}x{h}", icon
        sizes.add((w, icon.get("purpose", "any")))
    # Android needs 192 and 512; a maskable one fills its adaptive icon shapes.
    assert {(192, "any"), (512, "any"), (512, "maskable")} <= sizes


async def test_worker_and_manifest_are_served_from_the_root(server: ServerHandle) -> None:
    async with server.client() as http:
        worker = await http.get("/sw.js")
        manifest = await http.get("/manifest.webmanifest")
        page = await http.get("/")
    assert worker.status_code == 200
    assert worker.headers["content-type"].split(";")[0] in (
        "text/javascript",
        "application/javascript",
    )
    assert manifest.status_code == 200
    assert manifest.headers["content-type"].split(";")[0] == "application/manifest+json"
    # The page's policy lets the worker and the manifest load (same origin, default-src 'self').
    assert "worker-src" not in page.headers["content-security-policy"]
    assert 'rel="manifest" href="/manifest.webmanifest"' in page.text
