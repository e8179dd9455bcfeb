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
def _tpe(search: SearchSpec, *, storage: Any = None, study_name: str | None = None, annotate: Any = None) -> Searcher:
    import optuna

    from searchsvc.dispatch.optuna_attrs import AnnotatedOptunaSearch

    sampler = optuna.samplers.TPESampler(
        seed=search.seed, n_startup_trials=_startup_trials(search), multivariate=True, constant_liar=True
    )
    return AnnotatedOptunaSearch(sampler=sampler, storage=storage, study_name=study_name, annotate=annotate)


@register("hyperopt")
def _hyperopt(search: SearchSpec, *, storage: Any = None, study_name: str | None = None, annotate: Any = None) -> Searcher:
    from ray.tune.search.hyperopt import HyperOptSearch

    del storage, study_name, annotate  # Hyperopt has no external storage
    return HyperOptSearch(random_state_seed=search.seed, n_initial_points=_startup_trials(search))


@register("random")
def _random(search: SearchSpec, *, storage: Any = None, study_name: str | None = None, annotate: Any = None) -> Searcher:
    import optuna

    from searchsvc.dispatch.optuna_attrs import AnnotatedOptunaSearch

    return AnnotatedOptunaSearch(sampler=optuna.samplers.RandomSampler(seed=search.seed), storage=storage,
                                 study_name=study_name, annotate=annotate)


def make_searcher(
    search: SearchSpec, *, max_concurrent: int | None = None, storage: Any = None, study_name: str | None = None,
    annotate: Any = None,
) -> Searcher:
    """The study's searcher, limited to ``max_concurrent`` trials in flight (default: the spec's).

    ``storage``/``study_name``: an Optuna storage for the Optuna-based searchers, so the
    sampler's history lives in SQL (Hyperopt keeps its history in Tune's saved state only).
    ``annotate``: a ``TrialAnnotator`` (``optuna_attrs``) whose attributes the Optuna
    searchers write on each Optuna trial (our trial ids, per-task scores).
    """
    try:
        factory = _REGISTRY[search.algorithm]
    except KeyError:
        raise ValueError(f"search.algorithm: unknown {search.algorithm!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    limit = max_concurrent or search.max_concurrent
    return ConcurrencyLimiter(factory(search, storage=storage, study_name=study_name, annotate=annotate), max_concurrent=limit)


def registered() -> list[str]:
    return sorted(_REGISTRY)
