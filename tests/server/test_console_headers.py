"""The console's origin: a Content-Security-Policy that allows only its own files, no framing,
no MIME sniffing, no referrer (a sign-in link carries a token), and no script from elsewhere."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from appliance.server.web import WEB_DIR
from tests.support.server import ServerHandle


def _policy(header: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


@pytest.mark.parametrize("path", ["/", "/index.html", "/call.js", "/console.js", "/healthz"])
async def test_every_answer_carries_the_security_headers(server: ServerHandle, path: str) -> None:
    async with server.client() as http:
        r = await http.get(path)
    assert r.status_code == 200, r.text
    policy = _policy(r.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert "'unsafe-inline'" not in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"


async def test_errors_carry_them_too_and_the_cdn_docs_page_is_gone(server: ServerHandle) -> None:
    async with server.client() as http:
        r = await http.get("/api/v2/video/call/default/none")
        assert r.status_code == 404 and r.headers["x-content-type-options"] == "nosniff"
        # Swagger UI loaded its script from a public CDN on the console's origin.
        r = await http.get("/api/docs")
        assert r.status_code == 404
        assert "cdn" not in r.text.lower()
        assert (await http.get("/openapi.json")).status_code == 200


class _InlineCode(HTMLParser):
    """Inline scripts, inline styles and event-handler attributes: what the policy blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style>")
        self.found.extend(f"{tag} {n}=" for n in names if n == "style" or n.startswith("on"))


@pytest.mark.parametrize(
    "page", sorted(p.relative_to(WEB_DIR).as_posix() for p in WEB_DIR.rglob("*.html"))
)
def test_the_pages_have_no_inline_code_the_policy_would_block(page: str) -> None:
    parser = _InlineCode()
    parser.feed((WEB_DIR / page).read_text(encoding="utf-8"))
    assert parser.found == []
    for script in Path(WEB_DIR).rglob("*.js"):
        text = script.read_text(encoding="utf-8")
        assert not re.search(r"\beval\(|new Function\(", text), script.name
