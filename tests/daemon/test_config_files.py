"""Any file content gives one line ``file[:line]: problem`` and exit 78, in bounded time and memory:
bytes that are not UTF-8, control characters, NaN/Infinity, nesting and YAML alias bombs."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.errors import ConfigError
from appliance.server.settings import load_settings
from appliance.yamlload import MAX_VALUES, load_yaml, parse_yaml_text
from tests.daemon.test_config import GOOD


def _bomb(levels: int, width: int) -> str:
    """The "billion laughs": each level lists the previous one ``width`` times."""
    lines = ["a0: &a0 [x]"]
    for n in range(1, levels + 1):
        refs = ", ".join([f"*a{n - 1}"] * width)
        lines.append(f"a{n}: &a{n} [{refs}]")
    return "\n".join(lines) + "\n"


def _run(*args: str, memory_mb: int | None = None) -> subprocess.CompletedProcess[bytes]:
    def limit() -> None:
        if memory_mb is not None:
            size = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        timeout=60,
        preexec_fn=limit,
    )


def _one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert result.returncode == 78, err
    assert "Traceback" not in err, err
    assert err.strip().count("\n") == 0, err
    return err


@pytest.mark.parametrize("command", ["check", "run"])
def test_bytes_that_are_not_utf8_name_the_line(tmp_path: Path, command: str) -> None:
    path = tmp_path / "device.yaml"
    path.write_bytes(GOOD.encode().replace(b"call:\n", b"call: # caf\xe9\n", 1))
    err = _one_line(_run(command, "--config", str(path)))
    assert f"{path}:3: not UTF-8: byte 0xe9 at column 12" in err


@pytest.mark.parametrize("command", ["check", "run"])
def test_control_characters_name_the_line(tmp_path: Path, command: str) -> None:
    path = tmp_path / "device.yaml"
    path.write_text(GOOD.replace("name: call", "name: ca\x01ll"), encoding="utf-8")
    err = _one_line(_run(command, "--config", str(path)))
    assert f"{path}:6: control character U+0001 at column 13 is not allowed" in err


def test_the_server_config_is_read_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "server.yaml"
    path.write_text("host: 127.0.0.1\nport: 3040\napi_key: k\x07\n", encoding="utf-8")
    err = _one_line(_run("serve", "--config", str(path)))
    assert f"{path}:3: control character U+0007" in err


def test_an_alias_bomb_is_refused_quickly_in_little_memory(tmp_path: Path) -> None:
    """9 levels of 9 aliases: 387 million values if expanded (it took > 60 s and 3.5 GB)."""
    path = tmp_path / "device.yaml"
    path.write_text(GOOD + _bomb(9, 9), encoding="utf-8")
    assert path.stat().st_size < 700
    # The whole check under a 1 GiB address-space limit and the 60 s timeout of _run.
    err = _one_line(_run("check", "--config", str(path), memory_mb=1024))
    assert f"more than {MAX_VALUES} values after expanding aliases" in err
    assert f"{path}:" in err


def test_alias_expansion_is_counted_in_process() -> None:
    # 10**6 values: small enough to expand without the budget, large enough to exceed it.
    with pytest.raises(ConfigError, match="values after expanding aliases") as caught:
        parse_yaml_text(_bomb(6, 10), "bomb.yaml")
    assert caught.value.file == "bomb.yaml" and caught.value.line is not None
    # A few aliases, as people use them, still work.
    doc = parse_yaml_text("base: &b {x: 1}\nusers: [*b, *b]\n", "ok.yaml")
    assert doc.data["users"] == [{"x": 1}, {"x": 1}]


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf", ".Inf"])
def test_nan_and_infinity_are_refused_with_their_line(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml_text(f"limits:\n  max_custom_bytes: {value}\n", "server.yaml")
    assert str(caught.value).startswith("server.yaml:2: limits.max_custom_bytes: ")
    assert "NaN and infinities are refused" in str(caught.value)


def test_a_seed_user_with_nan_custom_data_stops_the_server_config(tmp_path: Path) -> None:
    path = tmp_path / "server.yaml"
    path.write_text("users:\n  - {id: alice, custom: {score: .nan}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"server.yaml:2: users\[0\].custom.score: "):
        load_settings(path, env={})


def test_deep_nesting_is_one_line() -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_yaml_text("a: " + "[" * 5000 + "]" * 5000, "deep.yaml")


def test_a_huge_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 200_000, encoding="utf-8")
    with pytest.raises(ConfigError, match="larger than"):
        load_yaml(path)
