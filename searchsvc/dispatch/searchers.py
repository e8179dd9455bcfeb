"""Search algorithms, registered under the lowercase names the spec's ``algorithm`` uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.tune.search import ConcurrencyLimiter, Searcher

from searchsvc.spec import SearchSpec

SearcherFactory = Callable[..., Searcher]
_REGISTRY: dict[str, SearcherFactory] = {}


def register(name: str) -> Callable[[SearcherFactory], SearcherFactory]:
    def decorate(factory: SearcherFactory) -> SearcherFactory:
        if name in _REGISTRY:
            raise ValueError(f"searcher {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorate


def _startup_trials(search: SearchSpec) -> int:
    """Random trials before TPE models the space: enough to fit, few enough to matter
    on small budgets (Optuna's default of 10 would make a 12-trial study mostly random)."""
    return max(2, min(10, search.num_trials // 4))


@register("tpe")
def _tpe(search: SearchSpec, *, storage: Any = None, study_name: str | None = None) -> Searcher:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    sampler = optuna.samplers.TPESampler(
        seed=search.seed, n_startup_trials=_startup_trials(search), multivariate=True, constant_liar=True
    )
    return OptunaSearch(sampler=sampler, storage=storage, study_name=study_name)


@register("hyperopt")
def _hyperopt(search: SearchSpec, *, storage: Any = None, study_name: str | None = None) -> Searcher:
    from ray.tune.search.hyperopt import HyperOptSearch

    del storage, study_name  # Hyperopt has no external storage
    return HyperOptSearch(random_state_seed=search.seed, n_initial_points=_startup_trials(search))


@register("random")
def _random(search: SearchSpec, *, storage: Any = None, study_name: str | None = None) -> Searcher:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(sampler=optuna.samplers.RandomSampler(seed=search.seed), storage=storage, study_name=study_name)


def make_searcher(
    search: SearchSpec, *, max_concurrent: int | None = None, storage: Any = None, study_name: str | None = None
) -> Searcher:
    """The study's searcher, limited to ``max_concurrent`` trials in flight (default: the spec's).

    ``storage``/``study_name``: an Optuna storage for the Optuna-based searchers, so the
    sampler's history lives in SQL (Hyperopt keeps its history in Tune's saved state only).
    """
    try:
        factory = _REGISTRY[search.algorithm]
    except KeyError:
        raise ValueError(f"search.algorithm: unknown {search.algorithm!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    limit = max_concurrent or search.max_concurrent
    return ConcurrencyLimiter(factory(search, storage=storage, study_name=study_name), max_concurrent=limit)


def registered() -> list[str]:
    return sorted(_REGISTRY)


def fail_forgotten_optuna_trials(search_alg: Any) -> list[int]:
    """Mark failed the Optuna trials a restored searcher never heard of; returns their numbers.

    Tune asks the searcher for a trial (Optuna writes it to its storage as running) and
    saves its own state a little later; a control plane killed in between leaves an
    Optuna trial no Tune trial will ever finish. Left running it would stay in the TPE
    history for ever (with ``constant_liar``, as a pessimistic guess), so the history
    would hold a trial that never ran. Failed trials are ignored by the samplers.

    Reads Ray's ``OptunaSearch`` internals (``_ot_study``, ``_ot_trials``: the Tune trial
    id -> Optuna trial map, restored with the searcher); a searcher without them (Hyperopt,
    whose history lives only in Tune's saved state) has nothing to settle.
    """
    from optuna.trial import TrialState

    searcher = search_alg
    while searcher is not None and not (hasattr(searcher, "_ot_study") and hasattr(searcher, "_ot_trials")):
        searcher = getattr(searcher, "searcher", None)  # SearchGenerator -> ConcurrencyLimiter -> OptunaSearch
    if searcher is None or searcher._ot_study is None:
        return []
    study = searcher._ot_study
    known = {trial.number for trial in searcher._ot_trials.values()}
    lost = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number not in known]
    for number in lost:
        study.tell(number, state=TrialState.FAIL)
    return lost
