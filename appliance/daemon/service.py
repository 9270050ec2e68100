"""``appliance run``: config → (embedded server) → hardware → client → state machine, as one
async context; systemd is told READY=1 once the server link is up, then kept fed by a
health-gated watchdog task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from appliance.clock import Clock, SystemClock
from appliance.daemon.config import DeviceConfig
from appliance.daemon.control import ControlServer
from appliance.daemon.machine import Daemon
from appliance.errors import AudioDeviceError
from appliance.sdnotify import Notifier

if TYPE_CHECKING:
    from appliance.daemon.link import ClientLink

log = logging.getLogger(__name__)


@dataclass
class Running:
    daemon: Daemon
    control: ControlServer
    embedded: Any = None
    base_url: str = ""
    extras: dict[str, Any] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def running(
    cfg: DeviceConfig,
    *,
    notifier: Notifier | None = None,
    clock: Clock | None = None,
    factory: Any = None,
) -> AsyncIterator[Running]:
    from appliance.client import Client
    from appliance.daemon.embedded import EmbeddedServer
    from appliance.daemon.link import ClientLink
    from appliance.daemon.medialink import ChimeSounds, DaemonMedia
    from appliance.hardware.panel import Panel
    from appliance.hardware.pins import make_pin_factory
    from appliance.media.audio import AudioDevices

    clock = clock or SystemClock()
    notifier = notifier or Notifier(None)
    loop = asyncio.get_running_loop()
    assert cfg.state_dir is not None
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        embedded = None
        if cfg.server.embedded is not None:
            notifier.status("starting the embedded call server")
            embedded = EmbeddedServer(cfg, clock)
            await embedded.start()
            stack.push_async_callback(embedded.stop)
            base_url, api_key = embedded.base_url, embedded.settings.api_key or ""
            token = embedded.token(cfg.device.id)
            ca_file = embedded.ca_file
        else:
            ca_file = None
            base_url, api_key = cfg.server.url or "", cfg.server.api_key or ""
            token = cfg.server.token or ""
            if cfg.server.token_file is not None:
                token = cfg.server.token_file.read_text().strip()
        client = Client(
            base_url, api_key, token, user_id=cfg.device.id, clock=clock, ca_file=ca_file
        )
        link = ClientLink(client, cfg)
        settings = cfg.media.audio
        settings = settings.model_copy(update={"sounds": {**settings.sounds, **cfg.sound_files()}})
        try:
            audio = AudioDevices.open(settings, clock=clock)
            stack.push_async_callback(audio.close)
        except AudioDeviceError as err:
            log.error("audio unavailable, calls carry no sound: %s", err)
            audio = None
        sounds = ChimeSounds(audio, cfg)
        factory = factory if factory is not None else make_pin_factory(cfg.pin_factory)
        panel = Panel(cfg, factory, clock, loop)
        stack.callback(panel.close)

        def media_factory(cid: str, create: bool, on_event: Any) -> DaemonMedia:
            return DaemonMedia(client, cid, create, on_event, cfg=cfg, audio=audio, clock=clock)

        daemon = Daemon(cfg, link, media_factory, panel, sounds, clock)
        panel.bind(daemon.on_button)
        if audio is not None:
            daemon.audio_stats = audio.stats

        async def handle(request: dict[str, Any]) -> dict[str, Any]:
            cmd = request.get("cmd")
            if cmd == "status":
                return {"ok": True, "status": daemon.status()}
            if cmd == "press":
                await panel.press(str(request.get("button")), hold=bool(request.get("hold")))
                return {"ok": True, "status": daemon.status()}
            return {"ok": False, "error": f"unknown command {cmd!r}"}

        control = ControlServer(cfg.state_dir, handle, cfg.control.socket)
        await control.start()
        stack.push_async_callback(control.close)
        extras: dict[str, Any] = {}
        if cfg.metrics is not None:
            from appliance.daemon.metrics import MetricsEndpoint, registry_for

            endpoint = MetricsEndpoint(cfg.metrics, registry_for(daemon))
            await endpoint.start()
            stack.push_async_callback(endpoint.close)
            extras["metrics"] = endpoint
        await daemon.start()
        stack.push_async_callback(daemon.stop)
        daemon.spawn(_announce(daemon, link, publish=embedded is None))
        yield Running(daemon, control, embedded, base_url, extras)


async def _announce(daemon: Daemon, link: ClientLink, *, publish: bool) -> None:
    """Each time the server link comes up: publish ``custom.device`` (a remote server; the
    embedded one seeds it) and get-or-create the configured call without ringing, so consoles
    list the device before its first ring and a server that lost its database gets it back."""
    from appliance.client import CONNECTION_OK
    from appliance.daemon.ports import LinkState
    from appliance.errors import APIError

    online = asyncio.Event()
    remove = link.client.on(CONNECTION_OK, lambda _event: online.set())
    if daemon.link_state is LinkState.ONLINE:  # came up before this task ran
        online.set()
    try:
        while True:
            await online.wait()
            online.clear()
            if publish:
                await link.publish_device()
            try:
                await link.prepare_call()
            except APIError as err:
                log.warning(
                    "Device(%s): cannot get-or-create its call %s:%s (%s); consoles list the "
                    "device once it rang. With a user token the call type must grant "
                    "create-call to the role user (and update-call-member to the device's "
                    "member role to add members listed later)",
                    daemon.me,
                    daemon.cfg.call.type,
                    daemon.cfg.call_id,
                    err,
                )
    finally:
        remove()


async def serve(cfg: DeviceConfig, notifier: Notifier, *, banner: bool = True) -> int:
    """Run until SIGTERM/SIGINT. READY=1 once the server link is up."""
    clock = SystemClock()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running(cfg, notifier=notifier, clock=clock) as run:
        daemon = run.daemon
        notifier.status(f"connecting to {run.base_url}")
        waiter = asyncio.ensure_future(daemon.wait_online())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            waiter.cancel()
            return 0
        notifier.ready(f"{daemon.call_state.value}, server {daemon.link_state.value}")
        if banner:
            print_banner(cfg, run)
        watchdog = asyncio.ensure_future(
            notifier.run_watchdog(daemon.healthy, clock, None if notifier.watchdog_s else 0)
        )
        status_task = asyncio.ensure_future(_status_lines(daemon, notifier))
        await stopper
        notifier.stopping()
        watchdog.cancel()
        status_task.cancel()
    return 0


async def _status_lines(daemon: Daemon, notifier: Notifier) -> None:
    last = ""
    while True:
        line = f"{daemon.call_state.value}, server {daemon.link_state.value}"
        if daemon.cid:
            line += f", call {daemon.cid}"
        if line != last:
            notifier.status(line)
            last = line
        await asyncio.sleep(1.0)


def _own_command() -> str:
    """How the user can run this same ``appliance`` again: bare when it is on PATH (an installed
    package), else its path (``make run`` runs ``.venv/bin/appliance``, which is not on PATH)."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if not argv0.endswith("appliance"):
        return "appliance"
    found = shutil.which("appliance")
    if found and os.path.realpath(found) == os.path.realpath(argv0):
        return "appliance"
    try:
        return os.path.relpath(argv0)
    except ValueError:
        return argv0


def print_banner(cfg: DeviceConfig, run: Running) -> None:
    lines = [f"appliance {cfg.device.id} ({cfg.mode.value}) is ready."]
    if run.embedded is not None:
        lines.append(f"  console:      {run.base_url}/")
        people = [m.user_id for m in cfg.call.members] or [
            u.id for u in (cfg.server.embedded.users if cfg.server.embedded else [])
        ]
        for user in people[:3]:
            lines.append(f"  log in as {user}: {run.embedded.login_link(user)}")
    else:
        lines.append(f"  server:       {run.base_url}")
    buttons = ", ".join(b.name for b in cfg.buttons) or "none"
    command = _own_command()
    lines.append(f"  buttons:      {buttons}")
    if cfg.buttons:
        name = cfg.buttons[0].name
        lines.append(f"  press one:    {command} press {name}   (add --hold to hold it)")
    lines.append(f"  state:        {command} status --json")
    print("\n".join(lines), file=sys.stdout, flush=True)
