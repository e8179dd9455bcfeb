"""User-facing operations on studies, with ownership enforced in one place.

The API's routes call these and nothing else; every function takes the acting user and
raises our own errors (``NotFoundError`` for another user's study, never a hint that it
exists), which the API maps to HTTP status codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchsvc.artifacts import artifact_name, pack_once
from searchsvc.datasets import DatasetService
from searchsvc.errors import ConflictError, NotFoundError
from searchsvc.model_registry import ModelRegistry, ModelResolver, RegisteredModel
from searchsvc.paths import PathPolicy, roots_for
from searchsvc.request_limits import check_raw_spec
from searchsvc.spec import check_searchable, parse_spec
from searchsvc.store import Report, Store, Study, Trial, TrialTally, User


@dataclass(frozen=True)
class StudyProgress:
    total: int
    counts: dict[str, int]
    best_objective: float | None


@dataclass(frozen=True)
class StudyView:
    study: Study
    progress: StudyProgress


@dataclass(frozen=True)
class UserLimits:
    """Per-user limits the service enforces at submission (the dispatcher enforces the
    running ones). None: no limit."""

    max_pending_studies: int | None = 20


@dataclass(frozen=True)
class PathRules:
    """The operator's filesystem rules for specs (see :mod:`searchsvc.paths`): allowed
    roots (which may hold ``{user}``), the service's data folder (never allowed, but for
    a user's own artifacts), and whether hub ids are accepted."""

    roots: tuple[Path, ...] = ()
    data_dir: Path | None = None
    allow_hub: bool = False


class StudyService:
    def __init__(self, store: Store, *, paths: PathRules | None = None, limits: UserLimits | None = None,
                 models: ModelRegistry | None = None, datasets: DatasetService | None = None) -> None:
        self.store = store
        self.paths = paths or PathRules()
        self.limits = limits or UserLimits()
        self.models = models or ModelRegistry()
        self.datasets = datasets

    def submit(self, user: User, raw_spec: Any) -> StudyView:
        """Validate the spec (raises SpecError, storing nothing) and store a pending study.

        The raw value is bounded first (a JSON object, no NUL, no huge strings), then its
        paths are confined to the operator's roots before any of them is read. Tasks that
        name a ``dataset`` get the user's stored folder (see
        :meth:`~searchsvc.datasets.DatasetService.resolve_tasks`). A submitted study
        must search something: an empty ``search.space`` is refused here (see
        :func:`~searchsvc.spec.check_searchable`), not in ``parse_spec``."""
        check_raw_spec(raw_spec)
        folders: list[Path] = []
        if self.datasets is not None:
            raw_spec, folders = self.datasets.resolve_tasks(user, raw_spec)
        paths = self.path_policy(user, datasets=folders)
        spec = check_searchable(parse_spec(raw_spec, paths=paths, models=self.model_resolver(user, paths)))
        limit = self.limits.max_pending_studies
        if limit is not None and len(self.store.list_studies(owner_id=user.id, states=["pending"])) >= limit:
            raise ConflictError(f"you have {limit} studies waiting to start, the most this service allows; "
                                "wait for them or stop some")
        return self._view(self.store.create_study(user.id, spec))

    def path_policy(self, user: User, *, datasets: list[Path] | None = None) -> PathPolicy:
        """The rules for ``user``'s spec: their own exported artifacts may be a base model,
        and ``datasets`` (their datasets this spec names, resolved) may be task folders;
        the rest of the data folder and the datasets' root are out of reach."""
        owned = [Path(s.artifact_path) for s in self.store.list_studies(owner_id=user.id) if s.artifact_path]
        private = [self.paths.data_dir] if self.paths.data_dir else []
        if self.datasets is not None:
            private.append(self.datasets.root)
        return PathPolicy(roots=roots_for(self.paths.roots, user.name), private=private, owned=owned,
                          datasets=datasets or (), allow_hub=self.paths.allow_hub)

    def model_resolver(self, user: User, paths: PathPolicy) -> ModelResolver:
        """How ``user``'s ``model`` resolves: the registry, ``study:<id>`` of their own
        exported studies only (another user's reads as missing), else ``paths``."""

        def own_export(study_id: int) -> Path | None:
            try:
                study = self.store.get_study(study_id, owner_id=user.id)
            except NotFoundError:
                return None
            return Path(study.artifact_path) if study.artifact_path else None

        return ModelResolver(self.models, paths, own_export)

    def list_models(self, user: User) -> list[RegisteredModel]:
        """The operator's models; the same for every user (``user`` keeps the route authenticated)."""
        return self.models.entries()

    def get(self, user: User, study_id: int) -> StudyView:
        return self._view(self.store.get_study(study_id, owner_id=user.id))

    def list(self, user: User, *, state: str | None = None) -> list[StudyView]:
        studies = self.store.list_studies(owner_id=user.id, states=[state] if state else None)
        tallies = self.store.tally_trials(study.id for study in studies)
        return [_view(study, tallies[study.id]) for study in studies]

    def trials(self, user: User, study_id: int) -> list[Trial]:
        return self.store.list_trials(study_id, owner_id=user.id)

    def trial(self, user: User, study_id: int, trial_id: int) -> Trial:
        """One trial with its full error texts (the lists show one line of each)."""
        return self.store.get_trial(study_id, trial_id, owner_id=user.id)

    def reports(self, user: User, study_id: int, trial_id: int) -> list[Report]:
        return self.store.list_reports(study_id, trial_id, owner_id=user.id)

    def best(self, user: User, study_id: int) -> tuple[Trial, Report]:
        """Raises NotFoundError until some trial has reported an objective."""
        best = self.store.best_trial(study_id, owner_id=user.id)
        if best is None:
            raise NotFoundError(f"study {study_id} has no reported trial yet")
        return best

    def stop(self, user: User, study_id: int) -> StudyView:
        return self._view(self.store.request_stop(study_id, owner_id=user.id))

    def pause(self, user: User, study_id: int) -> StudyView:
        return self._view(self.store.request_pause(study_id, owner_id=user.id))

    def resume(self, user: User, study_id: int) -> StudyView:
        return self._view(self.store.request_resume(study_id, owner_id=user.id))

    def artifact(self, user: User, study_id: int) -> tuple[Path, str]:
        """A .tar.gz of the study's exported artifact (merged model, discretized prefix,
        heads, PEFT adapter), or of the best trial's best checkpoint until the study has
        been exported. Built once, next to what it packs (the runner packs the exported
        artifact when the study ends, so its download only sends the file). Returns the file and the name to
        download it as. Raises NotFoundError if neither exists."""
        study = self.store.get_study(study_id, owner_id=user.id)
        if study.artifact_path and Path(study.artifact_path).is_dir():
            name = artifact_name(study_id)
            return pack_once(Path(study.artifact_path), name=name), f"{name}.tar.gz"
        trial, report = self.best(user, study_id)
        path = report.checkpoint_path or trial.checkpoint_path
        if not path or not Path(path).is_dir():
            raise NotFoundError(f"study {study_id}: the best trial has no checkpoint on this server")
        name = f"study-{study_id}-trial-{trial.number}-checkpoint"
        return pack_once(Path(path), name=name), f"{name}.tar.gz"

    def _view(self, study: Study) -> StudyView:
        return _view(study, self.store.tally_trials([study.id])[study.id])


def _view(study: Study, tally: TrialTally) -> StudyView:
    total = int((study.spec.get("search") or {}).get("num_trials", 0))
    return StudyView(study, StudyProgress(total=total, counts=tally.counts, best_objective=tally.best_objective))
