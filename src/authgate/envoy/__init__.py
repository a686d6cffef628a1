"""Envoy bootstrap generation (envoy-data-plane typed messages) and Envoy process control."""

import warnings

with warnings.catch_warnings():
    # envoy-data-plane 2.2's generated modules trip pydantic 2.12 deprecation warnings at import
    # (classmethod `@model_validator(mode="after")`); nothing we can act on, so keep them quiet.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"envoy_data_plane\.")
    from authgate.envoy.bootstrap import build_bootstrap, render_yaml

from authgate.envoy.process import EnvoyProcess, validate_config

__all__ = ["EnvoyProcess", "build_bootstrap", "render_yaml", "validate_config"]
