"""picamera2's API as far as our adapter uses it: the parameter lists of the methods that
``appliance/media/sources/picamera2.py`` calls and that its stand-in in
``tests/media/test_sources.py`` imitates, copied from picamera2's source (BSD-2-Clause,
Raspberry Pi Ltd) with the defaults left out.

picamera2 cannot be installed off a Pi (it needs libcamera), so the test that our calls fit
picamera2 checks them against this copy, without network. Whether the copy still matches the
newest release on the package index is a separate check that downloads it:
``make check-picamera2`` (``APPLIANCE_NETWORK_CHECKS=1``). When it fails, regenerate the copy
from the new release and look at what changed::

    pip download picamera2 --no-deps -d /tmp/p && cd /tmp/p && unzip -q picamera2-*.whl
    python -m tests.media.picamera2_api /tmp/p/picamera2
"""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

VERSION = "0.3.38"

# The class, the file of the picamera2 package that defines it, the methods we use.
USED: dict[str, tuple[str, tuple[str, ...]]] = {
    "Picamera2": (
        "picamera2.py",
        (
            "__init__",
            "create_video_configuration",
            "configure",
            "start_encoder",
            "start",
            "stop_encoder",
            "stop",
            "close",
        ),
    ),
    "H264Encoder": ("encoders/h264_encoder.py", ("__init__", "force_key_frame")),
    "LibavH264Encoder": ("encoders/libav_h264_encoder.py", ("__init__", "force_key_frame")),
    "Output": ("outputs/output.py", ("__init__", "outputframe")),
}

# class -> method -> its parameters as written in picamera2 0.3.38 (defaults shown as ...).
PARAMETERS: dict[str, dict[str, str]] = {
    "Picamera2": {
        "__init__": "self, camera_num=..., verbose_console=..., tuning=..., allocator=...",
        "create_video_configuration": (
            "self, main=..., lores=..., raw=..., transform=..., colour_space=..., "
            "buffer_count=..., controls=..., display=..., encode=..., queue=..., sensor=..., "
            "use_case=..."
        ),
        "configure": "self, camera_config=...",
        "start_encoder": "self, encoder=..., output=..., pts=..., quality=..., name=...",
        "start": "self, config=..., show_preview=...",
        "stop_encoder": "self, encoders=...",
        "stop": "self",
        "close": "self",
    },
    "H264Encoder": {
        "__init__": (
            "self, bitrate=..., repeat=..., iperiod=..., framerate=..., "
            "enable_sps_framerate=..., qp=..., profile=..."
        ),
        "force_key_frame": "self",
    },
    "LibavH264Encoder": {
        "__init__": "self, bitrate=..., repeat=..., iperiod=..., framerate=..., qp=..., profile=...",
        "force_key_frame": "self",
    },
    "Output": {
        "__init__": "self, pts=...",
        "outputframe": "self, frame, keyframe=..., timestamp=..., packet=..., audio=...",
    },
}


def _without_defaults(args: ast.arguments) -> str:
    ellipsis = ast.Constant(value=...)
    args.defaults = [ellipsis for _ in args.defaults]
    args.kw_defaults = [None if d is None else ellipsis for d in args.kw_defaults]
    return ast.unparse(args)


def read_parameters(root: Path) -> dict[str, dict[str, str]]:
    """``PARAMETERS`` read from a picamera2 source tree (nothing of it is imported)."""
    out: dict[str, dict[str, str]] = {}
    for cls, (file, methods) in USED.items():
        tree = ast.parse((root / file).read_text(encoding="utf-8"))
        node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls)
        defined = {
            fn.name: fn
            for fn in node.body
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        out[cls] = {m: _without_defaults(defined[m].args) for m in methods if m in defined}
    return out


def signature(parameters: str) -> inspect.Signature:
    """The signature of a method with these parameters, ``self`` left out (so that a recorded
    call's ``args``/``kwargs`` bind to it)."""
    fn = ast.parse(f"def f({parameters}): pass").body[0]
    assert isinstance(fn, ast.FunctionDef)
    a = fn.args
    kinds = inspect.Parameter
    params: list[inspect.Parameter] = []
    positional = [*a.posonlyargs, *a.args]
    first_default = len(positional) - len(a.defaults)
    for i, arg in enumerate(positional):
        kind = kinds.POSITIONAL_ONLY if i < len(a.posonlyargs) else kinds.POSITIONAL_OR_KEYWORD
        default = ... if i >= first_default else kinds.empty
        params.append(kinds(arg.arg, kind, default=default))
    if a.vararg:
        params.append(kinds(a.vararg.arg, kinds.VAR_POSITIONAL))
    for arg, kw_default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        default = kinds.empty if kw_default is None else ...
        params.append(kinds(arg.arg, kinds.KEYWORD_ONLY, default=default))
    if a.kwarg:
        params.append(kinds(a.kwarg.arg, kinds.VAR_KEYWORD))
    return inspect.Signature(params[1:] if params and params[0].name == "self" else params)


if __name__ == "__main__":
    import pprint

    pprint.pprint(read_parameters(Path(sys.argv[1])), width=100, sort_dicts=False)
