"""authgate: an identity-aware proxy built as an Envoy ext_authz gRPC sidecar."""

__version__ = "0.1.0"
