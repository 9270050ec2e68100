"""The package's curated public surface: every name in ``__all__`` resolves, nothing else leaks."""

from __future__ import annotations

import subprocess
import sys

import appliance


def test_every_public_name_resolves() -> None:
    assert sorted(appliance.__all__) == sorted(set(appliance.__all__))
    for name in appliance.__all__:
        assert getattr(appliance, name) is not None, name


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        _ = appliance.NoSuchThing  # type: ignore[attr-defined]
    except AttributeError as err:
        assert "NoSuchThing" in str(err)
    else:
        raise AssertionError("appliance.NoSuchThing resolved")


def test_errors_subclass_the_matching_builtins() -> None:
    assert issubclass(appliance.ConfigError, ValueError)
    assert issubclass(appliance.PermissionDenied, PermissionError)
    assert issubclass(appliance.NotFound, LookupError)
    assert issubclass(appliance.ServerUnavailable, ConnectionError)
    for name in appliance.__all__:
        obj = getattr(appliance, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, appliance.ApplianceError), name


def test_importing_the_package_does_not_load_the_heavy_stacks() -> None:
    code = (
        "import sys, appliance; "
        "heavy = [m for m in ('fastapi', 'sqlalchemy', 'aiortc', 'av', 'httpx') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
