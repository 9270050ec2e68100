"""Real alsa-lib in tests: an ALSA config in a temp dir with ``file`` and ``null`` PCMs.

``ALSA_CONFIG_PATH`` *replaces* alsa-lib's global config, so the file we write first includes
``/usr/share/alsa/alsa.conf`` (which still brings ``default``, ``null``, ``plug`` and friends) and
then defines our PCMs. alsa-lib reads the variable on every ``snd_pcm_open`` and reloads when the
file list or a file changes, so one test process can switch sandboxes per test. Subprocesses get
the variable from :meth:`AlsaSandbox.env`.

- ``capture_from(name, infile)``: a capture PCM that returns ``infile``'s bytes as raw S16_LE
  samples (a WAV header would come back as samples). Past its end the ``file`` plugin hands back
  garbage, so make the input longer than the test reads.
- ``playback_to(name, outfile)``: a playback PCM whose samples land raw in ``outfile`` (written
  as periods complete, flushed on close).
- ``null(name)``: a PCM that swallows playback and captures silence.

None of these has a clock: they read and write as fast as asked; pacing is the code's job.

Use it in a test::

    sandbox = AlsaSandbox.activate(tmp_path / "alsa", monkeypatch)
    mic = sandbox.capture_from("mic", write_tone_file(tmp_path / "in.raw", 697.0, 5.0))
    speaker = sandbox.playback_to("speaker", tmp_path / "out.raw")
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["ALSA_GLOBAL_CONFIG", "AlsaSandbox"]

ALSA_GLOBAL_CONFIG = Path("/usr/share/alsa/alsa.conf")


def _quote(value: str | Path) -> str:
    text = str(value)
    if '"' in text or "\n" in text:
        raise ValueError(f"ALSA config value cannot contain quotes or newlines: {text!r}")
    return f'"{text}"'


class AlsaSandbox:
    """A private ALSA config file; define PCMs on it, then point alsa-lib at it."""

    def __init__(self, directory: Path) -> None:
        if not ALSA_GLOBAL_CONFIG.exists():
            pytest.skip(f"alsa-lib's {ALSA_GLOBAL_CONFIG} is missing (install libasound2)")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "asound.conf"
        self._pcms: dict[str, str] = {}
        self._write()

    @classmethod
    def activate(cls, directory: Path, monkeypatch: pytest.MonkeyPatch) -> AlsaSandbox:
        """Create a sandbox and set ``ALSA_CONFIG_PATH`` for this test (undone afterwards)."""
        sandbox = cls(directory)
        monkeypatch.setenv("ALSA_CONFIG_PATH", str(sandbox.config_path))
        return sandbox

    def capture_from(self, name: str, infile: Path) -> str:
        self._pcms[name] = (
            f"pcm.{name} {{\n"
            "  type file\n"
            "  slave.pcm null\n"
            '  file "/dev/null"\n'
            f"  infile {_quote(infile)}\n"
            '  format "raw"\n'
            "}\n"
        )
        self._write()
        return name

    def playback_to(self, name: str, outfile: Path) -> str:
        self._pcms[name] = (
            f"pcm.{name} {{\n"
            "  type file\n"
            "  slave.pcm null\n"
            f"  file {_quote(outfile)}\n"
            '  format "raw"\n'
            "}\n"
        )
        self._write()
        return name

    def null(self, name: str) -> str:
        self._pcms[name] = f"pcm.{name} {{\n  type null\n}}\n"
        self._write()
        return name

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment for a subprocess that should see this sandbox."""
        env = dict(os.environ if base is None else base)
        env["ALSA_CONFIG_PATH"] = str(self.config_path)
        return env

    def _write(self) -> None:
        text = f"<{ALSA_GLOBAL_CONFIG}>\n\n" + "\n".join(self._pcms.values())
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    def __repr__(self) -> str:
        return f"AlsaSandbox({self.config_path}, pcms={sorted(self._pcms)})"
