"""`authgate run` as a service: supervise Envoy and the authz workers, reload, stop."""
