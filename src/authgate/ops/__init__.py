"""Running authgate as a service: Prometheus metrics, /healthz and /readyz, decision logs."""
