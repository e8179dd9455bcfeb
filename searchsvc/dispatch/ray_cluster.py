"""Connect the control plane to Ray: an existing cluster, or a local one it owns."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("searchsvc.ray")


@dataclass(frozen=True)
class RayConnection:
    address: str  # GCS address the study runners connect to
    dashboard_url: str | None
    owned: bool  # True when we started it (and so must shut it down)


def connect_ray(address: str | None, *, num_cpus: int | None = None, dashboard_port: int = 8265) -> RayConnection:
    """Join the cluster at ``address``, or start a local Ray bound to loopback.

    The serve process stays a Ray driver for its whole life, which keeps a local
    cluster alive; each study runner then joins it by its GCS address.
    """
    import ray

    if address:
        context = ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        context = ray.init(
            # "local": always a new Ray, never one that `ray start` left recorded on this machine
            address="local",
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=dashboard_port,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
    gcs = ray.get_runtime_context().gcs_address
    dashboard = context.dashboard_url or None
    if dashboard and not dashboard.startswith("http"):
        dashboard = f"http://{dashboard}"
    log.info("Ray at %s (dashboard %s, %s)", gcs, dashboard, "local" if not address else "existing cluster")
    return RayConnection(address=gcs, dashboard_url=dashboard, owned=not address)


def disconnect_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
