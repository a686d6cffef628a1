"""`authgate run`: start N authz workers and Envoy, supervise them, reload, stop them together
(the work is in authgate.supervise)."""

import sys
from pathlib import Path

from authgate.supervise.supervisor import Supervisor


def run(
    config: Path,
    *,
    workers: int = 1,
    runtime_dir: str | None = None,
    envoy_log_level: str | None = None,
    metrics_address: str | None = None,
    watch: bool = True,
) -> int:
    if workers < 1:
        print("authgate: --workers must be at least 1", file=sys.stderr)
        return 2
    return Supervisor(
        config,
        workers=workers,
        runtime_dir=Path(runtime_dir) if runtime_dir else None,
        envoy_log_level=envoy_log_level,
        metrics_address=metrics_address,
        watch=watch,
    ).run()
