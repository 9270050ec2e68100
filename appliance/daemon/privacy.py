"""PRIVACY: mute and what the LEDs say about it. The LEDs never claim more than the wire
shows: muting, they change once the media is quiet; unmuting, they change before the media
may send again."""

from __future__ import annotations

from typing import Protocol

from appliance.daemon.audit import audit
from appliance.daemon.ports import Machine, Media


class PrivacyHost(Machine, Protocol):
    @property
    def gate_open(self) -> bool: ...


class Privacy:
    def __init__(self, host: PrivacyHost) -> None:
        self._host = host
        self.muted = False
        # What the LEDs say: set once the media confirmed that nothing leaves, cleared before
        # anything may leave again.
        self.shown = False
        self._changes = 0

    def video_leaves(self) -> bool:
        return self._host.cfg.media.camera.source != "none" and not self.muted

    def joining(self, media: Media) -> None:
        """A new call's media, before anything is negotiated: the mute holds for every peer."""
        media.set_muted(self.muted)
        self.shown = self.muted

    def set(self, muted: bool, source: str) -> None:
        host = self._host
        self.muted = muted
        audit("mute" if muted else "unmute", host.cid, host.me, source)
        self._changes += 1
        media = host.media
        if muted and media is not None:
            media.set_muted(True)
            host.call_task(self._show_when_quiet(media, self._changes))
            return
        self.shown = muted
        if host.gate_open or muted:  # (muted: also a camera-live LED lit by a pre-announce)
            host.panel.camera_live(self.video_leaves())
        host.refresh_leds()
        if media is not None:
            media.set_muted(muted)

    async def _show_when_quiet(self, media: Media, change: int) -> None:
        await media.quiet()
        if change != self._changes or media is not self._host.media:
            return
        self.shown = True
        self._host.panel.camera_live(self.video_leaves())
        self._host.refresh_leds()
