"""The LEDs tell the truth (issue #9): a real bedside daemon in a call, PRIVACY toggled, the network
between it and the far end pulled in between, and every RTP packet the daemon really sent held
against what its LEDs said at that moment.

- camera-live LED off  ⇒ no video packet left the device;
- status LED ``muted`` ⇒ no packet at all left it;
- and the same call demonstrably carries the device's audio and video while the LEDs say so.

The daemon (the full ``appliance run`` assembly: real client, CallMedia, ALSA through a private
config with a 523 Hz tone as its microphone, gpiozero mock pins pressed like a finger) and the call
server live in network namespace a; the far end (a CallMedia session as a nurse's phone would be)
in b. The bedside auto-answers the nurse, so it joins second and offers: its own stall watchdog
restarts ICE after the link drop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.daemon.config import load_config
from appliance.daemon.service import running
from tests.media.rtp_meter import RtpMeter
from tests.media.test_netns import _start_server, _stop_server
from tests.media.video_helpers import Participant, ToneTrack
from tests.support import poll
from tests.support.alsa import AlsaSandbox
from tests.support.netns import VethPair, veth_pair
from tests.support.tone import write_tone_file

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.timeout(240)]

CALL_ID = "room-bed"
BEDSIDE: dict[str, Any] = {
    "device": {"id": "bed", "name": "Bed 7"},
    "call": {"type": "default", "id": "room-{device}", "members": ["nurse:call_member"]},
    "mode": "answer",
    "auto_answer": {"users": ["nurse"], "delay_s": 0.3},
    "buttons": [
        {"name": "answer", "pin": 17, "press": "toggle", "hold": "reject", "cooldown": 0.5},
        {"name": "privacy", "pin": 18, "press": "privacy", "cooldown": 0.3},
    ],
    "leds": {"status": {"pin": 27}, "camera_live": {"pin": 22}},
    "pin_factory": "mock",
    "sounds": {"chime": "none", "ringback": "none", "pre_announce": "none"},
}


@pytest.fixture
def net() -> Any:
    with veth_pair(subnet="10.95.0") as pair:
        yield pair


@dataclass
class Timeline:
    """What the LEDs showed, stamped with the monotonic clock the RTP meter uses."""

    start: float = field(default_factory=time.monotonic)
    status: list[tuple[float, str]] = field(default_factory=list)
    camera: list[tuple[float, bool]] = field(default_factory=list)

    def follow(self, panel: Any) -> None:
        show, camera_live = panel.show, panel.camera_live

        def on_show(state: str) -> None:
            show(state)
            if panel.status_led.state != self.status[-1][1]:
                self.status.append((time.monotonic(), panel.status_led.state))

        def on_camera(on: bool) -> None:
            camera_live(on)
            if panel.camera_led.on != self.camera[-1][1]:
                self.camera.append((time.monotonic(), panel.camera_led.on))

        self.status.append((self.start, panel.status_led.state))
        self.camera.append((self.start, panel.camera_led.on))
        panel.show, panel.camera_live = on_show, on_camera

    @staticmethod
    def spans(
        changes: list[tuple[float, Any]], value: Any, end: float
    ) -> list[tuple[float, float]]:
        """The [from, to) intervals during which the LED showed ``value``."""
        out = []
        for i, (at, shown) in enumerate(changes):
            if shown == value:
                until = changes[i + 1][0] if i + 1 < len(changes) else end
                out.append((at, until))
        return out


def device_packets(meter: RtpMeter, far_end: str, kind: str) -> list[float]:
    return sorted(t for sid in list(meter.ssrcs) if sid != far_end for t in meter.times(sid, kind))


def within(times: list[float], span: tuple[float, float]) -> int:
    return sum(1 for t in times if span[0] <= t < span[1])


async def test_leds_follow_what_leaves_through_privacy_and_a_link_drop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, net: VethPair
) -> None:
    meter = RtpMeter().install(monkeypatch)
    alsa = AlsaSandbox.activate(tmp_path / "alsa", monkeypatch)
    alsa.capture_from("bed_mic", write_tone_file(tmp_path / "bed.raw", 523.0, 300.0))
    alsa.playback_to("bed_speaker", tmp_path / "bed_out.raw")
    timeline = Timeline()
    async with net.a.loop() as side_a, net.b.loop() as side_b:
        manager, srv, forwarder = await side_a.run(
            _start_server(tmp_path / "server", net.a.address, ("bed", "nurse"))
        )
        port = forwarder.sockets[0].getsockname()[1]
        data = {
            **BEDSIDE,
            "server": {"url": srv.base_url, "api_key": srv.api_key, "token": srv.user_token("bed")},
            "state_dir": str(tmp_path / "state"),
            "media": {
                "camera": {"source": "test", "width": 192, "height": 160, "fps": 15},
                "display": False,
                "audio": {"capture_device": "bed_mic", "playback_device": "bed_speaker"},
            },
        }
        path = tmp_path / "bed.yaml"
        path.write_text(yaml.safe_dump(data))
        daemon_cm = running(load_config(path))
        run = await side_a.run(daemon_cm.__aenter__())
        d = run.daemon
        timeline.follow(d.panel)

        async def make_nurse() -> Participant:
            return Participant(
                f"http://{net.a.address}:{port}", srv.api_key, srv.user_token("nurse"),
                "nurse", CALL_ID, audio=ToneTrack(1209.0), receive_video=True, gate_open=True,
            )  # fmt: skip

        nurse = await side_b.run(make_nurse())

        def peer() -> Any:
            media = d.media
            peers = list(media.session.peers.values()) if media is not None else []
            return peers[0] if peers else None

        def heard() -> int:
            audio = d.status()["audio"] or {}
            return int((audio.get("playback") or {}).get("frames_received", 0))

        async def press_privacy() -> float:
            await side_a.run(d.panel.press("privacy"))  # type: ignore[attr-defined]
            return time.monotonic()

        figures: dict[str, Any] = {}
        try:
            await side_a.run(d.wait_online())

            async def ring_and_join() -> None:
                call = nurse.client.call("default", CALL_ID)
                await call.create(member_ids=["bed", "nurse"], ring=True)
                await nurse.media.start()

            await side_b.run(ring_and_join())
            await poll.until(lambda: d.call_state.value == "in_call", within=30)
            await poll.until(
                lambda: peer() is not None and peer().state == "connected", within=20.0
            )
            assert peer().offerer  # the bedside joined second: it owns restarts
            nurse_id = nurse.media.session_id or ""

            def flowing(since: float, audio: int = 50, video: int = 10) -> bool:
                a = [t for t in device_packets(meter, nurse_id, "audio") if t >= since]
                v = [t for t in device_packets(meter, nurse_id, "video") if t >= since]
                return len(a) >= audio and len(v) >= video

            await poll.until(lambda: flowing(0.0), within=30)

            # PRIVACY on: the LEDs say so once nothing leaves any more.
            await press_privacy()
            await poll.until(lambda: d.panel.status_led.state == "muted", within=20.0)
            assert not d.panel.camera_led.on
            before = heard()
            # the nurse is heard meanwhile
            await poll.until(lambda: heard() >= before + 48000, within=20.0)

            # The link drops; the bedside's watchdog restarts ICE once it is back.
            net.link_down()
            await poll.until(
                lambda: peer() is not None and peer().state != "connected", within=20.0
            )
            net.link_up()
            await poll.until(
                lambda: (
                    peer() is not None
                    and peer().state == "connected"
                    and peer().generation >= 1
                    and nurse.media.peers
                    and next(iter(nurse.media.peers.values())).state == "connected"
                ),
                within=60,
            )
            restarts = peer().restarts
            before = heard()
            await poll.until(lambda: heard() >= before + 96000, within=30)  # 2 s on the new link
            assert d.panel.status_led.state == "muted" and not d.panel.camera_led.on

            # PRIVACY off: the LEDs first, then the media.
            await press_privacy()
            await poll.until(lambda: d.panel.status_led.state == "in_call", within=20.0)
            live_at = timeline.status[-1][0]
            await poll.until(lambda: flowing(live_at, audio=100, video=20), within=30)
            for kind in ("audio", "video"):
                first = min(t for t in device_packets(meter, nurse_id, kind) if t >= live_at)
                figures[f"first_{kind}_packet_after_unmute_s"] = round(first - live_at, 3)

            # The nurse hangs up: the bedside ends the call; the camera LED goes off.
            await side_b.run(nurse.media.stop())
            await poll.until(lambda: d.call_state.value == "idle", within=30)
            assert not d.panel.camera_led.on
            end = time.monotonic()
        finally:
            await side_b.run(nurse.close())
            await side_a.run(daemon_cm.__aexit__(None, None, None))
            await side_a.run(_stop_server(manager, forwarder))

    audio = device_packets(meter, nurse_id, "audio")
    video = device_packets(meter, nurse_id, "video")
    camera_off = Timeline.spans(timeline.camera, False, end)
    muted = Timeline.spans(timeline.status, "muted", end)
    live = [s for s in Timeline.spans(timeline.status, "in_call", end) if s[1] - s[0] > 0.5]
    assert len(muted) == 1 and muted[0][1] - muted[0][0] > 5.0, timeline.status
    video_while_camera_off = sum(within(video, s) for s in camera_off)
    sent_while_muted = {
        "audio": sum(within(audio, s) for s in muted),
        "video": sum(within(video, s) for s in muted),
    }
    print(
        "privacy-figure LEDs through a call with PRIVACY and a link drop: "
        f"video_while_camera_led_off={video_while_camera_off}, "
        f"sent_while_status_muted={sent_while_muted}, muted_for_s={muted[0][1] - muted[0][0]:.1f}, "
        f"restarts={restarts}, {figures}"
    )
    assert video_while_camera_off == 0
    assert sent_while_muted == {"audio": 0, "video": 0}
    # The LEDs' "live" is true too: both live stretches of the call carried audio and video.
    assert len(live) == 2, timeline.status
    for span in live:
        assert within(audio, span) > 0 and within(video, span) > 0, span
