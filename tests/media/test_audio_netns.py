"""The namespace helper, and call audio between two namespaces surviving a pulled link."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from appliance.media.audio import AudioCapture, AudioPlayback, open_capture, open_playback
from tests.support import poll
from tests.support.alsa import AlsaSandbox
from tests.support.netns import NamespaceLoop, VethPair, veth_pair
from tests.support.tone import dominant_frequency, read_pcm, write_tone_file

pytestmark = pytest.mark.netns


@pytest.fixture
def net() -> Iterator[VethPair]:
    with veth_pair() as pair:
        yield pair


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


async def _serve_echo(address: str) -> int:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(address, 0))
    return int(transport.get_extra_info("sockname")[1])


async def _ask(address: str, port: int, wait: float) -> bytes | None:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if not answer.done():
                answer.set_result(data)

    try:
        transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(address, port))
    except OSError:  # no route at all (the link is down, or not our namespace)
        return None
    try:
        transport.sendto(b"ping")
        return await asyncio.wait_for(answer, wait)
    except TimeoutError:
        return None
    finally:
        transport.close()


async def test_namespaces_are_joined_and_the_link_can_be_pulled(net: VethPair) -> None:
    async with net.a.loop() as side_a, net.b.loop() as side_b:
        port = await side_b.run(_serve_echo(net.b.address))
        assert await side_a.run(_ask(net.b.address, port, 5.0)) == b"ping"
        # The root namespace cannot reach the private addresses at all.
        assert await _ask(net.b.address, port, 0.3) is None

        net.link_down()
        assert not net.link_is_up()
        assert await side_a.run(_ask(net.b.address, port, 0.5)) is None
        net.link_up()
        await poll.until(net.link_is_up, every=0.02)
        assert await side_a.run(_ask(net.b.address, port, 5.0)) == b"ping"


def test_a_process_runs_inside_a_namespace(net: VethPair) -> None:
    code = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
        f"s.bind(('{net.b.address}', 0)); print(s.getsockname()[0])"
    )
    assert net.b.run([sys.executable, "-c", code]).stdout.strip() == net.b.address
    with pytest.raises(OSError):  # the address exists only inside b
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((net.b.address, 0))


@pytest.mark.e2e
async def test_call_audio_between_namespaces_survives_a_link_drop(
    net: VethPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alsa = AlsaSandbox.activate(tmp_path / "alsa", monkeypatch)
    mic = alsa.capture_from("mic", write_tone_file(tmp_path / "in.raw", 852.0, 30.0))
    speaker = alsa.playback_to("speaker", tmp_path / "out.raw")
    config = RTCConfiguration(iceServers=[])

    async def make_sender() -> tuple[RTCPeerConnection, AudioCapture, RTCSessionDescription]:
        pc = RTCPeerConnection(config)
        capture = AudioCapture(open_capture(mic))
        pc.addTrack(capture)
        await pc.setLocalDescription(await pc.createOffer())
        return pc, capture, pc.localDescription

    async def make_receiver(
        offer: RTCSessionDescription,
    ) -> tuple[RTCPeerConnection, AudioPlayback, RTCSessionDescription]:
        pc = RTCPeerConnection(config)
        playback = AudioPlayback(open_playback(speaker))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            playback.attach(track)

        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
        return pc, playback, pc.localDescription

    async def finish(pc: RTCPeerConnection, answer: RTCSessionDescription) -> None:
        await pc.setRemoteDescription(answer)

    async def close(
        pc: RTCPeerConnection, capture: AudioCapture | None, playback: AudioPlayback | None
    ) -> None:
        await pc.close()
        if capture is not None:
            capture.stop()
        if playback is not None:
            await playback.stop()

    async with net.a.loop() as side_a, net.b.loop() as side_b:
        sender, capture, offer = await side_a.run(make_sender())
        receiver, playback, answer = await side_b.run(make_receiver(offer))
        try:
            assert net.a.address in offer.sdp and net.b.address in answer.sdp
            await side_a.run(finish(sender, answer))
            await poll.until(
                lambda: playback.stats.frames_received >= 48000, within=20.0, every=0.02
            )

            net.link_down()
            await asyncio.sleep(0.5)  # in-flight packets drain
            stalled = playback.stats.frames_received
            await asyncio.sleep(1.5)
            assert playback.stats.frames_received - stalled < 960 * 3
            net.link_up()
            await poll.until(
                lambda: playback.stats.frames_received >= stalled + 48000, within=20.0, every=0.02
            )
        finally:
            await _close_both(side_a, side_b, close, sender, capture, receiver, playback)

    out = read_pcm(tmp_path / "out.raw")
    assert dominant_frequency(out[-48000:]) == pytest.approx(852.0, abs=3.0)
    assert capture.stats.frames_captured > 2 * 48000


async def _close_both(
    side_a: NamespaceLoop,
    side_b: NamespaceLoop,
    close: Callable[..., object],
    sender: RTCPeerConnection,
    capture: AudioCapture,
    receiver: RTCPeerConnection,
    playback: AudioPlayback,
) -> None:
    await side_a.run(close(sender, capture, None))  # type: ignore[arg-type]
    await side_b.run(close(receiver, None, playback))  # type: ignore[arg-type]


def test_everything_is_removed_even_when_the_test_fails() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with veth_pair() as pair:
            names = (pair.a.name, pair.b.name)
            sleeper = pair.a.popen(["sleep", "60"])
            loop = pair.b.start_loop()
            raise RuntimeError("boom")
    listed = Path("/var/run/netns")
    assert not any((listed / name).exists() for name in names)
    assert sleeper.poll() is not None
    assert "alive=False" in repr(loop)
