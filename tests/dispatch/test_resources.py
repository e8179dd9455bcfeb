"""A study whose trials no node can run is refused by the runner at once (issue 10:
``resources.cpu: 1000`` left a study "running" for ever)."""

from __future__ import annotations

from searchsvc.dispatch.resources import trial_request, unsatisfiable
from searchsvc.spec import ResourcesSpec

HEAD = {"CPU": 1.0, "memory": 1e9, "head": 1.0}
WORKER = {"CPU": 2.0, "GPU": 1.0, "gpu_worker": 1.0}


def test_request_uses_rays_names_and_drops_zeros() -> None:
    assert trial_request(ResourcesSpec(cpu=1, gpu=0, custom={"head": 0.5})) == {"CPU": 1.0, "head": 0.5}


def test_one_node_with_everything_is_enough() -> None:
    assert unsatisfiable(ResourcesSpec(cpu=2, gpu=1), [HEAD, WORKER]) is None
    assert unsatisfiable(ResourcesSpec(cpu=1, custom={"head": 1}), [HEAD, WORKER]) is None


def test_resources_split_over_nodes_are_not_enough() -> None:
    # 3 CPUs in all, but no node has 3; a GPU and the head label are on different nodes
    assert "CPU=3" in (unsatisfiable(ResourcesSpec(cpu=3), [HEAD, WORKER]) or "")
    message = unsatisfiable(ResourcesSpec(cpu=1, gpu=1, custom={"head": 1}), [HEAD, WORKER])
    assert message == ("resources: no node of the Ray cluster can run a trial that needs CPU=1, GPU=1, head=1 "
                       "(the largest node has CPU=2, GPU=1, head=0); lower resources in the spec")


def test_no_nodes() -> None:
    assert unsatisfiable(ResourcesSpec(), []) == "resources: the Ray cluster has no node to run a trial (CPU=1)"
