"""How Envoy keeps Checks away from a dead or restarting authz worker.

Three layers, cheapest first: a Check that meets a refused or reset connection is retried on
another worker (`previous_hosts`); a worker whose socket refuses a connection is ejected at once
(outlier detection on local-origin failures); active gRPC health checks (grpc.health.v1, served by
every worker) mark a worker down within a second and bring its replacement back in. Panic
routing is off: a Check never goes to a host known to be down, it answers 503 instead.
"""

from datetime import timedelta

from envoy_data_plane.envoy.config.cluster.v3 import ClusterCommonLbConfig, OutlierDetection
from envoy_data_plane.envoy.config.core.v3 import (
    BackoffStrategy,
    HealthCheck,
    HealthCheckGrpcHealthCheck,
    RetryPolicy,
    RetryPolicyRetryHostPredicate,
)
from envoy_data_plane.envoy.extensions.retry.host.previous_hosts.v3 import (
    PreviousHostsPredicate,
)
from envoy_data_plane.envoy.type.v3 import Percent
from envoy_data_plane.google.protobuf import Any as AnyProto

HEALTH_INTERVAL = timedelta(milliseconds=500)


def authz_health_checks() -> list[HealthCheck]:
    return [
        HealthCheck(
            # Two failed checks, not one: a busy worker whose answer is late (a loaded machine)
            # must stay in; a dead one refuses at once, and outlier detection has ejected it
            # already if it had traffic.
            timeout=timedelta(seconds=2),
            interval=HEALTH_INTERVAL,
            # Without traffic Envoy would check only once a minute: a restarted worker must
            # come back in within a second whatever the load.
            no_traffic_interval=HEALTH_INTERVAL,
            unhealthy_interval=HEALTH_INTERVAL,
            unhealthy_threshold=2,
            healthy_threshold=1,
            grpc_health_check=HealthCheckGrpcHealthCheck(),
        )
    ]


def authz_outlier_detection() -> OutlierDetection:
    """Eject on the first refused connection (a dead worker's socket), never on Check answers:
    an authz error is a decision to fail closed, not a sign of a dead worker."""
    return OutlierDetection(
        split_external_local_origin_errors=True,
        consecutive_local_origin_failure=1,
        enforcing_consecutive_local_origin_failure=100,
        enforcing_consecutive_5xx=0,
        enforcing_consecutive_gateway_failure=0,
        enforcing_success_rate=0,
        enforcing_local_origin_success_rate=0,
        interval=timedelta(milliseconds=500),
        base_ejection_time=timedelta(seconds=1),
        max_ejection_time=timedelta(seconds=2),
        # Never all of them: one refused connection must not leave no worker at all.
        max_ejection_percent=50,
        successful_active_health_check_uneject_host=True,
    )


def authz_lb_config() -> ClusterCommonLbConfig:
    return ClusterCommonLbConfig(healthy_panic_threshold=Percent(value=0.0))


def authz_retry_policy(authz_timeout_s: float) -> RetryPolicy:
    """For the ext_authz gRPC call: a Check that could not reach a worker, or whose worker died
    under it, goes to another one (a Check has no side effect a retry could repeat harmfully:
    the code exchange of a callback fails closed if it ran twice).

    Envoy turns `max_interval` into the per-try timeout as well (and a per-try timeout always
    retries): it must be the whole authz timeout, or a slow Check (a callback's code exchange)
    would be sent to a second worker while the first still works on it."""
    return RetryPolicy(
        retry_on="connect-failure,refused-stream,reset,unavailable",
        num_retries=2,
        retry_back_off=BackoffStrategy(
            base_interval=timedelta(milliseconds=5),
            max_interval=timedelta(seconds=authz_timeout_s),
        ),
        retry_host_predicate=[
            RetryPolicyRetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=AnyProto.pack(PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=5,
    )

