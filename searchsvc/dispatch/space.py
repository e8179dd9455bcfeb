"""Convert the spec's search space into what the searchers sample from.

A flat space (the study's method is fixed) becomes Ray Tune domains, which both Optuna
and Hyperopt accept through Ray Tune, so every algorithm sees the same space.

A conditional space (``method`` is a ``choice``) cannot be a flat dict: a method-specific
hyperparameter must only be *sampled* in trials whose method reads it, or the searcher's
history would credit a value that did nothing (a LoRA rank in a ``prefix`` trial). Optuna
samples it define-by-run (:class:`ConditionalSpace`): draw the method, then only that
method's dimensions. The searcher then owns the space and the Tuner gets none
(:func:`param_space`). Hyperopt is refused such a space when the spec is validated.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from searchsvc.spec import METHOD_KEY, Dimension, SearchSpec


def is_conditional(search: SearchSpec) -> bool:
    """Whether the space searches the method, so the searcher must own a define-by-run space."""
    return search.method_choices() is not None


def tune_space(search: SearchSpec) -> dict[str, Any]:
    """Ray Tune domains of a flat space.

    Raises:
        ValueError: the space is conditional (use :class:`ConditionalSpace`).
    """
    if is_conditional(search):
        raise ValueError("search.space.method: a conditional space has no flat Tune form; the searcher samples it")
    return {name: _tune_domain(name, dim) for name, dim in search.space.items()}


def param_space(search: SearchSpec) -> dict[str, Any]:
    """The Tuner's ``param_space``: empty when the searcher owns a conditional space."""
    return {} if is_conditional(search) else tune_space(search)


def _tune_domain(name: str, dim: Dimension) -> Any:
    if dim.type == "uniform":
        return tune.uniform(dim.low, dim.high)
    if dim.type == "loguniform":
        return tune.loguniform(dim.low, dim.high)
    if dim.type == "int":
        # Tune's integer upper bounds are exclusive; the spec's are inclusive.
        return tune.lograndint(dim.low, dim.high + 1) if dim.log else tune.randint(dim.low, dim.high + 1)
    if dim.type == "choice":
        return tune.choice(list(dim.values))
    raise ValueError(f"search.space.{name}: unsupported type {dim.type!r}")  # pragma: no cover - the spec's union


class ConditionalSpace:
    """Optuna's define-by-run space for a study that searches the method.

    Called with an ``optuna.Trial`` (Ray's captor around it): draws ``method`` first, then
    each dimension sampled for that method. Parameters keep their plain names, so a
    hyperparameter several methods read (``lora_rank`` for lora and peml) is one Optuna
    distribution whose history all of them share; a trial's config holds ``method`` and
    only the values it drew. A plain class, not a closure: Tune pickles the searcher, with
    its space, when it saves the experiment.
    """

    def __init__(self, search: SearchSpec) -> None:
        methods = search.method_choices()
        if methods is None:
            raise ValueError("search.space.method: a conditional space needs method as a choice")
        self.methods = methods
        self.dimensions: list[tuple[str, Dimension, frozenset[str]]] = [
            (name, dim, frozenset(search.sampled_for(name))) for name, dim in search.space.items() if name != METHOD_KEY
        ]

    def __call__(self, trial: Any) -> None:
        method = trial.suggest_categorical(METHOD_KEY, self.methods)
        for name, dim, methods in self.dimensions:
            if method in methods:
                _suggest(trial, name, dim)
        return None  # Ray takes the config from the values suggested above


def _suggest(trial: Any, name: str, dim: Dimension) -> Any:
    if dim.type == "uniform":
        return trial.suggest_float(name, dim.low, dim.high)
    if dim.type == "loguniform":
        return trial.suggest_float(name, dim.low, dim.high, log=True)
    if dim.type == "int":
        return trial.suggest_int(name, dim.low, dim.high, log=dim.log)
    if dim.type == "choice":
        return trial.suggest_categorical(name, list(dim.values))
    raise ValueError(f"search.space.{name}: unsupported type {dim.type!r}")  # pragma: no cover - the spec's union
