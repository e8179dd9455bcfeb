"""Search algorithms, registered under the lowercase names the spec's ``algorithm`` uses."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

from ray.tune.search import ConcurrencyLimiter, Searcher

from searchsvc.dispatch.space import ConditionalSpace, is_conditional
from searchsvc.spec import OBJECTIVE_KEY, SearchSpec

SearcherFactory = Callable[..., Searcher]
_REGISTRY: dict[str, SearcherFactory] = {}


def register(name: str) -> Callable[[SearcherFactory], SearcherFactory]:
    def decorate(factory: SearcherFactory) -> SearcherFactory:
        if name in _REGISTRY:
            raise ValueError(f"searcher {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorate


# TPE's random start-up: a fifth of the budget (rounded up), so a 12-trial study is 3
# random trials and 9 guided ones, and a 100-trial study explores 20 before modelling.
# (The old cap of 10 made large studies commit early; Optuna's fixed default of 10 made a
# 12-trial study mostly random.) Floor of 2: TPE needs a "good" and a "bad" trial to split.
STARTUP_FRACTION = 0.2
MIN_STARTUP_TRIALS = 2


def _startup_trials(search: SearchSpec) -> int:
    """Random trials before TPE models the space, never more than the budget.

    With ``method`` as a choice, at least one per method: each method's dimensions only
    enter the model once some trial of that method has run (a random draw does not
    promise every method a trial, but it makes a never-seen method unlikely).
    """
    floor = max(MIN_STARTUP_TRIALS, len(search.method_choices() or ()))
    return min(search.num_trials, max(floor, math.ceil(STARTUP_FRACTION * search.num_trials)))


def _optuna_search(search: SearchSpec, sampler: Any, *, storage: Any, study_name: str | None, annotate: Any) -> Searcher:
    """Ray's OptunaSearch (annotating each Optuna trial, ``optuna_attrs``); for a conditional
    space it owns the define-by-run space, and then needs the metric and mode now (it
    creates its Optuna study here, with the direction of ``mode``; Tune's later
    ``set_search_properties`` is a no-op for it)."""
    from searchsvc.dispatch.optuna_attrs import AnnotatedOptunaSearch

    if not is_conditional(search):
        return AnnotatedOptunaSearch(sampler=sampler, storage=storage, study_name=study_name, annotate=annotate)
    return AnnotatedOptunaSearch(space=ConditionalSpace(search), metric=OBJECTIVE_KEY, mode=search.mode,
                                 sampler=sampler, storage=storage, study_name=study_name, annotate=annotate)


@register("tpe")
def _tpe(search: SearchSpec, *, storage: Any = None, study_name: str | None = None, annotate: Any = None) -> Searcher:
    import optuna

    # group=True: with method as a choice, TPE models each set of parameters that were
    # sampled together (one per method) jointly, instead of falling back to independent
    # sampling for the parameters not every trial has.
    with warnings.catch_warnings():  # group is "experimental" since Optuna 2.8; we rely on it knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=search.seed, n_startup_trials=_startup_trials(search), multivariate=True, constant_liar=True,
            group=is_conditional(search),
        )
    return _optuna_search(search, sampler, storage=storage, study_name=study_name, annotate=annotate)


@register("hyperopt")
def _hyperopt(search: SearchSpec, *, storage: Any = None, study_name: str | None = None, annotate: Any = None) -> Searcher:
    from ray.tune.search.hyperopt import HyperOptSearch

    del storage, study_name, annotate  # Hyperopt has no external storage
    if is_conditional(search):  # the spec refuses this; kept for callers that build a SearchSpec by hand
        raise ValueError("search.space.method: hyperopt cannot sample a conditional space; use 'tpe' or 'random'")
    return HyperOptSearch(random_state_seed=search.seed, n_initial_points=_startup_trials(search))


@register("random")
def _random(search: SearchSpec, *, storage: Any = None, study_name: str | None = None, annotate: Any = None) -> Searcher:
    import optuna

    return _optuna_search(search, optuna.samplers.RandomSampler(seed=search.seed), storage=storage, study_name=study_name,
                          annotate=annotate)


def make_searcher(
    search: SearchSpec, *, max_concurrent: int | None = None, storage: Any = None, study_name: str | None = None,
    annotate: Any = None,
) -> Searcher:
    """The study's searcher, limited to ``max_concurrent`` trials in flight (default: the spec's).

    ``storage``/``study_name``: an Optuna storage for the Optuna-based searchers, so the
    sampler's history lives in SQL (Hyperopt keeps its history in Tune's saved state only).
    With ``method`` as a choice the searcher holds the space itself: give the Tuner
    :func:`~searchsvc.dispatch.space.param_space` (empty then), not the flat space.
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
