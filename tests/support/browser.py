"""Headless Chromium for the browser tests: Debian's ``/usr/bin/chromium`` driven by Playwright.

Playwright's own browser download does not work here, so the browser is always the system one.
Fake camera and microphone (a test pattern and a beep), no permission prompts, no traffic of
Chromium's own (component updates, sync, QUIC probes). Playwright gives every launch a fresh
temporary profile directory.

Fixtures (import them into a ``conftest.py`` or a test module):

- ``browser``: one Chromium process for the test.
- ``page_guard``: a :class:`PageGuard` that opens pages pinned to the origins it was told to
  ``allow()``; a request or WebSocket to any other host is blocked *and fails the test* at
  teardown, as does an uncaught exception in a page. ``guarded_browser()`` is the same as an
  async context manager (wrap it in a fixture of your own name).

Helpers: :meth:`PageGuard.console_lines` reads a page's console output, :func:`wait_for_js`
polls a JavaScript expression.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Route,
    WebSocketRoute,
    async_playwright,
)

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
HAVE_CHROMIUM = os.path.exists(CHROMIUM)

CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Headless tabs in the background must keep their timers and media running (two tabs ring).
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--autoplay-policy=no-user-gesture-required",
]

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@dataclass
class PageGuard:
    """Opens pages that may talk to ``origin`` only, and remembers everything else they tried."""

    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    logs: dict[int, list[str]] = field(default_factory=dict)
    allowed: set[str] = field(default_factory=set)

    def allow(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.allowed.add(f"{parts.hostname}:{parts.port}")

    def _is_allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about"):
            return True
        default_port = 443 if parts.scheme in ("https", "wss") else 80
        return f"{parts.hostname}:{parts.port or default_port}" in self.allowed

    async def new_context(
        self,
        *,
        viewport: dict[str, int] | None = None,
        permissions: bool = True,
        **kwargs: Any,
    ) -> BrowserContext:
        """A context (cookie jar, storage) of its own. ``permissions=False`` denies camera and
        microphone, like a user who said no (the page then runs receive-only)."""
        context = await self.browser.new_context(
            viewport=viewport or DESKTOP,  # type: ignore[arg-type]
            ignore_https_errors=True,
            **kwargs,
        )
        if permissions:
            await context.grant_permissions(["camera", "microphone"])
        else:
            await context.add_init_script(_DENY_MEDIA_JS)
        await context.route(lambda url: not self._is_allowed(url), self._block)
        await context.route_web_socket(lambda url: not self._is_allowed(url), self._block_ws)
        context.on("request", lambda req: self._note(req.url))
        self.contexts.append(context)
        return context

    async def new_page(self, context: BrowserContext | None = None, **kwargs: Any) -> Page:
        if context is None:
            context = await self.new_context(**kwargs)
        page = await context.new_page()
        lines: list[str] = []
        self.logs[id(page)] = lines
        page.on("console", lambda msg: self._console(page, lines, msg))
        page.on("pageerror", lambda err: self.page_errors.append(f"{page.url}: {err}"))
        return page

    def _console(self, page: Page, lines: list[str], msg: ConsoleMessage) -> None:
        line = _format_console(msg)
        lines.append(line)
        # The server's Content-Security-Policy refused something the page tried: a failure.
        if msg.type == "error" and "Content Security Policy" in msg.text:
            self.page_errors.append(f"{page.url}: {line}")

    def console_lines(self, page: Page) -> list[str]:
        """Everything ``page`` printed to its console so far, as ``"<type>: <text>"`` lines."""
        return list(self.logs.get(id(page), []))

    def _note(self, url: str) -> None:
        if not self._is_allowed(url):
            self.foreign.append(url)

    async def _block(self, route: Route) -> None:
        self.foreign.append(route.request.url)
        await route.abort("blockedbyclient")

    async def _block_ws(self, ws: WebSocketRoute) -> None:
        self.foreign.append(ws.url)
        await ws.close(code=1008, reason="blocked by test")

    def check(self) -> None:
        """Fail the test on foreign requests or uncaught page errors seen so far."""
        if self.page_errors:
            pytest.fail("uncaught errors in the page:\n" + "\n".join(self.page_errors))
        if self.foreign:
            hosts = "\n".join(sorted(set(self.foreign)))
            pytest.fail("the page made requests to other hosts:\n" + hosts)

    async def close(self) -> None:
        for context in self.contexts:
            try:
                await context.close()
            except Exception as err:  # a context may already be gone with its browser
                log.debug("closing browser context: %s", err)
        self.contexts.clear()


# A page without media permission: getUserMedia fails as it does for a user who declined.
_DENY_MEDIA_JS = """
(() => {
  const deny = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
  if (navigator.mediaDevices) {
    Object.defineProperty(navigator.mediaDevices, 'getUserMedia', {value: deny});
  }
})();
"""


def _format_console(msg: ConsoleMessage) -> str:
    return f"{msg.type}: {msg.text}"


async def launch_chromium(playwright: Any, extra_args: list[str] | None = None) -> Browser:
    if not HAVE_CHROMIUM:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (make system-deps)")
    browser: Browser = await playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[*CHROMIUM_ARGS, *(extra_args or [])],
    )
    return browser


@asynccontextmanager
async def guarded_browser(extra_args: list[str] | None = None) -> AsyncIterator[PageGuard]:
    """Chromium plus a :class:`PageGuard`; on exit fails the test if a page reached another host
    or threw an uncaught exception."""
    async with async_playwright() as playwright:
        chromium = await launch_chromium(playwright, extra_args)
        guard = PageGuard(chromium)
        try:
            yield guard
        finally:
            await guard.close()
            await chromium.close()
    guard.check()


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await launch_chromium(playwright)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture
async def page_guard() -> AsyncIterator[PageGuard]:
    async with guarded_browser() as guard:
        yield guard


async def wait_for_js(
    page: Page, expression: str, arg: Any = None, *, seconds: float = 15.0
) -> Any:
    """Poll ``expression`` (a JS expression or function) until it is truthy; return its value.

    Polled with ``page.evaluate``, not Playwright's ``wait_for_function``: that one evaluates
    the expression with ``eval`` inside the page, which the console's Content-Security-Policy
    (no ``unsafe-eval``) refuses."""
    return await poll_js(page, expression, bool, arg, seconds=seconds, every=0.1)


async def poll_js(
    page: Page,
    expression: str,
    check: Callable[[Any], bool],
    arg: Any = None,
    *,
    seconds: float = 15.0,
    every: float = 0.2,
) -> Any:
    """Evaluate ``expression`` (may be async) until ``check(value)`` holds; return the value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    value = await page.evaluate(expression, arg)
    while not check(value):
        if loop.time() > deadline:
            raise AssertionError(f"{expression!r} never satisfied the check; last value {value!r}")
        await asyncio.sleep(every)
        value = await page.evaluate(expression, arg)
    return value
