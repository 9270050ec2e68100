"""The call model shared by the server and the client: settings, call types, capabilities,
event names (and member filters, ``appliance.calls.filters``)."""

from appliance.calls.capabilities import ALL_CAPABILITIES, Capability
from appliance.calls.settings import CallSettings, effective_settings
from appliance.calls.types import BUILTIN_CALL_TYPES, CallType

__all__ = [
    "ALL_CAPABILITIES",
    "BUILTIN_CALL_TYPES",
    "CallSettings",
    "CallType",
    "Capability",
    "effective_settings",
]
