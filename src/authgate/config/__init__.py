"""Configuration: Pomerium-compatible schema, loading and the runtime view."""

from authgate.config.load import load_settings, settings_from_mapping
from authgate.config.runtime import (
    RouteRuntime,
    RuntimeConfig,
    build_runtime,
)
from authgate.config.schema import Route, Settings, Upstream
from authgate.contract import AUTHENTICATE_ROUTE_ID

__all__ = [
    "AUTHENTICATE_ROUTE_ID",
    "Route",
    "RouteRuntime",
    "RuntimeConfig",
    "Settings",
    "Upstream",
    "build_runtime",
    "load_settings",
    "settings_from_mapping",
]
