"""Daemon benchmark (issue #5): cold start → READY, and the daemon's memory in a call.

    .venv/bin/python bench/daemon.py [--runs 3] [--seconds 10] [--size 1280x720 --fps 30]

* cold start: ``appliance run`` of the intercom example (embedded server, mock pins, test camera,
  ALSA null) from exec to ``READY=1`` on a NOTIFY_SOCKET, ``--runs`` times, a fresh state dir each;
* call RSS: the intercom daemon against a separate ``appliance serve``, in a call with a bedside
  daemon (audio only, receives video), the intercom sending 720p30 — by default from the ``file``
  source (ready H.264, like a board's hardware encoder: no encoder in the daemon), or with
  ``--source test`` from the synthetic source that runs libx264 inside the daemon; VmRSS sampled
  for ``--seconds`` (max reported);
* embedded call RSS: the same with the server embedded in the intercom daemon.

Prints a table, then one JSON line: cold_start_ready_s, call_rss_mb, embedded_call_rss_mb.
Figures depend on the machine; nothing here gates CI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cli(state: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [PY, "-m", "appliance", *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"appliance {' '.join(args)}: {done.stderr.strip()}")
    return json.loads(done.stdout) if "--json" in args else {}


def wait_status(state: Path, key: str, value: str, seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(RuntimeError, json.JSONDecodeError):
            status = cli(state, "status", "--json")
            if status.get(key) == value:
                return status
        time.sleep(0.2)
    raise RuntimeError(f"{state}: {key} never became {value}; last {status}")


@contextlib.contextmanager
def process(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[Any]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_h264(path: Path, size: tuple[int, int], fps: int, seconds: float = 4.0) -> Path:
    """An H.264 elementary stream (constrained baseline, an IDR a second) for the file source."""
    import av
    import numpy as np

    width, height = size
    ramp = np.tile(np.arange(width, dtype=np.uint8), (height, 1))
    with av.open(str(path), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"profile": "baseline", "tune": "zerolatency", "g": str(fps)}
        stream.bit_rate = 2_000_000
        for i in range(int(seconds * fps)):
            rgb = np.dstack([np.roll(ramp, i * 8, axis=1), ramp, ramp[:, ::-1]])
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def intercom_config(
    tmp: Path, name: str, server: dict[str, Any], size: tuple[int, int], fps: int, source: str
) -> Path:
    data = yaml.safe_load((ROOT / "config" / "intercom.yaml").read_text())
    data["server"] = server
    data["device"].pop("team", None)
    data["state_dir"] = str(tmp / name / "state")
    data["call"]["members"] = ["bed:admin"]
    camera: dict[str, Any] = {"width": size[0], "height": size[1], "fps": fps, "bitrate": 2_000_000}
    if source == "file":
        camera.update(source="file", file=str(write_h264(tmp / f"{name}.h264", size, fps)))
    data["media"]["camera"].update(camera)
    data["sounds"] = {"chime": "none", "ringback": "none", "pre_announce": "none"}
    path = tmp / name / "device.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def bedside_config(tmp: Path, server: dict[str, Any]) -> Path:
    data = {
        "device": {"id": "bed"},
        "server": server,
        "call": {"type": "default", "id": "room-bed"},
        "mode": "answer",
        "buttons": [{"name": "answer", "pin": 17, "press": "toggle", "hold": "reject"}],
        "pin_factory": "mock",
        "state_dir": str(tmp / "bed" / "state"),
        "media": {
            "camera": {"source": "none"},
            "display": True,
            "audio": {"capture_device": "null", "playback_device": "null"},
        },
        "sounds": {"chime": "none", "ringback": "none", "pre_announce": "none"},
    }
    path = tmp / "bed" / "device.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def cold_start(tmp: Path, run: int) -> float:
    folder = tmp / f"cold{run}"
    folder.mkdir()
    data = yaml.safe_load((ROOT / "config" / "intercom.yaml").read_text())
    data["server"]["embedded"]["port"] = 0
    data["server"]["embedded"]["call_types"] = str(ROOT / "config" / "call-types.yaml")
    data["state_dir"] = str(folder / "state")
    cfg = folder / "device.yaml"
    cfg.write_text(yaml.safe_dump(data))
    notify_path = folder / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(60)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
    start = time.monotonic()
    with process([PY, "-m", "appliance", "run", "--config", str(cfg)], folder / "log", env):
        while True:
            if notify.recv(4096).startswith(b"READY=1"):
                elapsed = time.monotonic() - start
                break
    notify.close()
    return elapsed


def call_rss(
    tmp: Path, embedded: bool, seconds: float, size: tuple[int, int], fps: int, source: str
) -> float:
    secret = secrets.token_urlsafe(32)
    port = free_port()
    from appliance.server.auth import create_token

    def remote(user: str) -> dict[str, Any]:
        return {
            "url": f"http://127.0.0.1:{port}",
            "api_key": "bench",
            "token": create_token(secret, user),
        }

    with contextlib.ExitStack() as stack:
        if embedded:
            secret_file = tmp / "secret"
            secret_file.write_text(secret)
            door_server: dict[str, Any] = {
                "embedded": {
                    "port": port,
                    "api_key": "bench",
                    "secret_file": str(secret_file),
                    "users": [{"id": "bed"}],
                }
            }
        else:
            server_yaml = tmp / "server.yaml"
            server_yaml.write_text(
                yaml.safe_dump(
                    {
                        "api_key": "bench",
                        "api_secret": secret,
                        "port": port,
                        "state_dir": str(tmp / "server-state"),
                        "users": [{"id": "entrance"}, {"id": "bed"}],
                    }
                )
            )
            stack.enter_context(
                process(
                    [PY, "-m", "appliance", "serve", "--config", str(server_yaml)],
                    tmp / "server.log",
                )
            )
            door_server = remote("entrance")
        door_cfg = intercom_config(tmp, "door", door_server, size, fps, source)
        door = stack.enter_context(
            process(
                [PY, "-m", "appliance", "run", "--config", str(door_cfg), "--no-banner"],
                tmp / "door.log",
            )
        )
        door_state = tmp / "door" / "state"
        wait_status(door_state, "server_link", "online")
        bed_state = tmp / "bed" / "state"
        stack.enter_context(
            process(
                [PY, "-m", "appliance", "run", "--config", str(bedside_config(tmp, remote("bed")))],
                tmp / "bed.log",
            )
        )
        wait_status(bed_state, "server_link", "online")
        cli(door_state, "press", "call")
        wait_status(bed_state, "call_state", "ringing")
        cli(bed_state, "press", "answer")
        wait_status(door_state, "call_state", "in_call")
        samples = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            samples.append(rss_mb(door.pid))
            time.sleep(0.5)
        status = cli(door_state, "status", "--json")
        if status["call_state"] != "in_call":
            raise RuntimeError(f"call did not last: {status}")
        if status.get("first_packet_at") is None:
            raise RuntimeError(f"no video left the intercom: {status}")
        return max(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    parser.add_argument("--source", choices=["file", "test"], default="file")
    args = parser.parse_args()
    size = tuple(int(x) for x in args.size.split("x"))
    assert len(size) == 2
    tmpdir = tempfile.mkdtemp(prefix="bench-daemon-")
    try:
        tmp = Path(tmpdir)
        starts = [cold_start(tmp, i) for i in range(args.runs)]
        (tmp / "sep").mkdir()
        call = call_rss(tmp / "sep", False, args.seconds, size, args.fps, args.source)  # type: ignore[arg-type]
        (tmp / "emb").mkdir()
        embedded = call_rss(tmp / "emb", True, args.seconds, size, args.fps, args.source)  # type: ignore[arg-type]
    except Exception:
        print(f"failed; logs in {tmpdir}", file=sys.stderr)
        raise
    else:
        if not args.keep:
            shutil.rmtree(tmpdir, ignore_errors=True)
    starts.sort()
    p95 = starts[min(len(starts) - 1, round(0.95 * (len(starts) - 1)))]
    median = statistics.median(starts)
    print(f"{'figure':<42} {'value':>10}  target")
    print(f"{'cold start -> READY=1, median (s)':<42} {median:>10.2f}  <= 3")
    print(f"{'cold start -> READY=1, p95 (s)':<42} {p95:>10.2f}")
    print(f"{'RSS in a call, separate server (MB)':<42} {call:>10.1f}  <= 150")
    print(f"{'RSS in a call, embedded server (MB)':<42} {embedded:>10.1f}  <= 200")
    print(
        f"(runs {args.runs}, call {args.size}@{args.fps} from the {args.source} source, "
        f"{args.seconds:g} s)"
    )
    print(
        json.dumps(
            {
                "cold_start_ready_s": round(median, 3),
                "cold_start_ready_p95_s": round(p95, 3),
                "call_rss_mb": round(call, 1),
                "embedded_call_rss_mb": round(embedded, 1),
                "video_source": args.source,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
