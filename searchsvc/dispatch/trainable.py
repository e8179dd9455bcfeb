"""The door from dispatch into ``workers``: the Ray Tune trial function and the export task.

Both run on Ray workers. The trial function calls :func:`workers.run_trial` and turns
each epoch's report into ``tune.report`` (with the checkpoint directory, which Tune
copies to the study's storage); the export task turns the best checkpoint into the
study's artifact. Nothing else in ``searchsvc`` imports ``workers``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray import tune
from ray.tune.trainable import Trainable, wrap_function

from searchsvc.spec import StudySpec

log = logging.getLogger(__name__)


def make_trainable(spec: StudySpec) -> type[Trainable]:
    spec_data = spec.to_dict()

    def searchsvc_trial(config: dict[str, Any]) -> None:
        import ray

        from searchsvc.spec import parse_spec
        from workers import run_trial

        trial_spec = parse_spec(spec_data)  # re-checked on the worker: its task folders must exist there too
        node_id = ray.get_runtime_context().get_node_id()

        def report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
            checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
            tune.report({**metrics, "node_id": node_id}, checkpoint=checkpoint)

        with tempfile.TemporaryDirectory(prefix="searchsvc-trial-") as workdir:
            # A retried trial, or one restored after a pause or a control-plane restart,
            # continues from its latest checkpoint instead of starting over.
            run_trial(dict(config), spec=trial_spec, report=report, workdir=f"{workdir}/run",
                      resume_from=resume_source(tune.get_checkpoint(), f"{workdir}/resume"))

    resources: dict[str, float] = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu, **spec.resources.custom}
    return tune.with_resources(named_actor_trainable(searchsvc_trial), resources)


def named_actor_trainable(trial_fn: Callable[[dict[str, Any]], None]) -> type[Trainable]:
    """Tune's class for a function trainable, whose actors show their trial's name.

    Ray's dashboard shows an actor's ``repr`` beside its class; Tune's function actors
    all answer the function's name. This one answers the Tune trial's name, which the
    study runner makes ``study-7/trial-3`` (see ``naming``). The trainable's registered
    name stays the function's, so an experiment saved before still restores.
    """

    class SearchsvcTrial(wrap_function(trial_fn)):  # type: ignore[misc]
        def __repr__(self) -> str:
            return str(self.trial_name)

    return SearchsvcTrial


def resume_source(saved: tune.Checkpoint | None, workdir: str) -> str | None:
    """The checkpoint folder a restored trial continues from, or None to start afresh.

    Tune's own record is used while its folder exists. A control plane killed between
    Ray's retention deleting the trial's previous checkpoint and Tune saving its state
    leaves that record pointing at a deleted folder; then the newest complete checkpoint
    beside it is used (on storage this machine can read), so the trial still loses at
    most an epoch instead of failing every retry on a missing path.
    """
    from workers import resumable_beside

    if saved is None:
        return None
    if not isinstance(saved.filesystem, pyarrow.fs.LocalFileSystem):
        return saved.to_directory(workdir)  # remote storage: Ray's record is all we can see
    recorded = Path(saved.path)
    if recorded.is_dir():
        return str(recorded)
    found = resumable_beside(recorded)
    if found is None:
        log.warning("checkpoint %s is gone and no other survives beside it: the trial starts afresh", recorded)
        return None
    log.warning("checkpoint %s is gone: the trial continues from %s", recorded, found)
    return str(found)


def export_on_ray(checkpoint_dir: str, out_dir: str, *, task_name: str) -> str:
    """Build the artifact from a checkpoint in a Ray task (on a worker, like training:
    the control plane itself never loads a model), named ``task_name`` in Ray's
    dashboard. Returns the artifact directory."""
    import ray

    @ray.remote(num_cpus=1)
    def searchsvc_export(checkpoint: str, out: str) -> str:
        from workers.export import export_artifact

        return str(export_artifact(checkpoint, out))

    return str(ray.get(searchsvc_export.options(name=task_name).remote(checkpoint_dir, out_dir)))
