"""Whether any node of the Ray cluster can ever run one trial of a study.

Ray queues a trial whose resource request no node can satisfy, and waits for ever (the
study sits "running" with nothing happening). The runner asks this first and fails the
study at once, with a message that says what was asked and what the largest node has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from searchsvc.spec import ResourcesSpec

_EPS = 1e-9


def trial_request(resources: ResourcesSpec) -> dict[str, float]:
    """One trial's request in Ray's resource names (``CPU``, ``GPU``, custom names as given)."""
    request = {"CPU": resources.cpu, "GPU": resources.gpu, **resources.custom}
    return {name: amount for name, amount in request.items() if amount > 0}


def unsatisfiable(resources: ResourcesSpec, nodes: Sequence[Mapping[str, float]]) -> str | None:
    """None if some node offers everything one trial asks for; otherwise why not.

    ``nodes``: each alive node's total resources (``ray.nodes()[i]["Resources"]``)."""
    request = trial_request(resources)
    if any(all(node.get(name, 0.0) + _EPS >= amount for name, amount in request.items()) for node in nodes):
        return None
    asked = ", ".join(f"{name}={amount:g}" for name, amount in request.items())
    if not nodes:
        return f"resources: the Ray cluster has no node to run a trial ({asked})"
    largest = max(nodes, key=lambda node: (node.get("GPU", 0.0), node.get("CPU", 0.0)))
    offers = ", ".join(f"{name}={largest.get(name, 0.0):g}" for name in request)
    return (f"resources: no node of the Ray cluster can run a trial that needs {asked} "
            f"(the largest node has {offers}); lower resources in the spec")


def cluster_nodes() -> list[dict[str, float]]:
    """The total resources of every alive node of the connected Ray cluster."""
    import ray

    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]
