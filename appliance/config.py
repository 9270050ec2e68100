"""Compatibility import: the device config moved to :mod:`appliance.daemon.config` (issue 15).

Kept only because tests/media/test_audio_processing.py, which another change owns, still imports
``appliance.config``; new code imports :mod:`appliance.daemon.config` or ``appliance.load_config``.
"""

from appliance.daemon.config import DeviceConfig, load_config

__all__ = ["DeviceConfig", "load_config"]
