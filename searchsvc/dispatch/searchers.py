"""Search algorithms, registered under the lowercase names the spec's ``algorithm`` uses."""

from __future__ import annotations

from collections.abc import Callable

from ray.tune.search import ConcurrencyLimiter, Searcher

from searchsvc.spec import SearchSpec

SearcherFactory = Callable[[SearchSpec], Searcher]
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
def _tpe(search: SearchSpec) -> Searcher:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    sampler = optuna.samplers.TPESampler(
        seed=search.seed, n_startup_trials=_startup_trials(search), multivariate=True, constant_liar=True
    )
    return OptunaSearch(sampler=sampler)


@register("hyperopt")
def _hyperopt(search: SearchSpec) -> Searcher:
    from ray.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(random_state_seed=search.seed, n_initial_points=_startup_trials(search))


@register("random")
def _random(search: SearchSpec) -> Searcher:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(sampler=optuna.samplers.RandomSampler(seed=search.seed))


def make_searcher(search: SearchSpec) -> Searcher:
    """The study's searcher, limited to ``max_concurrent`` trials in flight."""
    try:
        factory = _REGISTRY[search.algorithm]
    except KeyError:
        raise ValueError(f"search.algorithm: unknown {search.algorithm!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return ConcurrencyLimiter(factory(search), max_concurrent=search.max_concurrent)


def registered() -> list[str]:
    return sorted(_REGISTRY)
