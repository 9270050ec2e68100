"""A console user, from the host, in the container's network: waits for ``call.ring``, then
(``--answer``) accepts, joins with real media and counts what the device sends.

``python -m tests.field.probe --url U --api-key K --token T`` prints ``CONNECTED`` once its
WebSocket is up, then one JSON line per step (``ring``, then ``media``), and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time

from appliance.client import Client
from appliance.daemon.callsignaling import CallSignaling
from appliance.media.session import CallMedia
from tests.media.video_helpers import AudioReader, VideoReader


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(args: argparse.Namespace) -> int:
    async with Client(args.url, args.api_key, args.token) as client:
        events = client.events({"call.ring"})
        await client.connect()
        print("CONNECTED", flush=True)
        async with asyncio.timeout(args.timeout):
            event = await anext(aiter(events))
        caller = event.user.id if event.user else None
        say(step="ring", cid=event.call_cid, caller=caller)
        if not args.answer or event.call_cid is None:
            return 0
        call_type, call_id = event.call_cid.split(":", 1)
        call = client.call(call_type, call_id)
        await call.accept()
        video: list[VideoReader] = []
        audio: list[AudioReader] = []
        media = CallMedia(
            CallSignaling(call),
            on_video=lambda t: video.append(VideoReader(t)),
            on_audio=lambda t: audio.append(AudioReader(t)),
            receive_video=True,
            gate_open=True,
            name="probe",
        )
        started = time.monotonic()
        await media.start()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.timeout):
                    # the readers fill from their own tasks and expose no event to wait on
                    while not (  # noqa: ASYNC110
                        video
                        and len(video[0].codes) >= args.frames
                        and audio
                        and audio[0].seconds >= 1.0
                    ):
                        await asyncio.sleep(0.1)
            say(
                step="media",
                video_frames=sum(r.frames for r in video),
                block_codes=sum(len(r.codes) for r in video),
                audio_seconds=round(sum(r.seconds for r in audio), 2),
                seconds=round(time.monotonic() - started, 2),
            )
        finally:
            for reader in [*video, *audio]:
                await reader.close()
            await media.stop()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--answer", action="store_true")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=60)
    sys.exit(asyncio.run(main(parser.parse_args())))
