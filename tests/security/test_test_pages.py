"""The test-only pages (``appliance/server/web/testpages``: ``probe.html``, ``blockcode.js``) are
not part of a production server: 404 unless the server setting ``test_pages`` asks for them,
also by a path that climbs out of the console's folders; the server's own Python files in the
web folder are never served."""

from __future__ import annotations

from pathlib import Path

from tests.support.server import ServerHandle, running_server

TEST_PAGES = ["/probe.html", "/probe.js", "/probe.css", "/blockcode.js"]
# Climbing from a served folder into its neighbours or its parent (uvicorn decodes %2e and %2f).
CLIMBS = [
    "/testpages/probe.html",
    "/%2e%2e/testpages/probe.html",
    "/..%2ftestpages%2fblockcode.js",
    "/icons/%2e%2e/%2e%2e/testpages/probe.html",
    "/__init__.py",
    "/%2e%2e/__init__.py",
    "/%2e%2e/%2e%2e/app.py",
]


async def _status(srv: ServerHandle, path: str) -> int:
    async with srv.client() as http:
        r = await http.get(path)
    assert r.headers["x-content-type-options"] == "nosniff", path
    return r.status_code


async def test_by_default_the_test_pages_are_404_and_the_console_is_served(
    server: ServerHandle,
) -> None:
    for path in TEST_PAGES + CLIMBS:
        assert await _status(server, path) == 404, path
    for path in ("/", "/index.html", "/console.js", "/call.js", "/connection.js", "/sw.js"):
        assert await _status(server, path) == 200, path


async def test_the_setting_serves_them_with_the_same_headers(tmp_path: Path) -> None:
    async with running_server(tmp_path, test_pages=True) as srv:
        async with srv.client() as http:
            for path in TEST_PAGES:
                r = await http.get(path)
                assert r.status_code == 200, path
                assert "script-src 'self'" in r.headers["content-security-policy"], path
            page = await http.get("/probe.html")
        assert '<script type="module" src="probe.js">' in page.text
        for path in CLIMBS[4:]:  # the Python files stay out of reach
            assert await _status(srv, path) == 404, path
        assert await _status(srv, "/console.js") == 200
