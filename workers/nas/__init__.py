"""PrefixNAS: the searched prefix generator of PEML (DARTS-style cells between prefix and K/V).

Modules, one concept each:

- :mod:`~workers.nas.candidates`: the candidate operations and their names;
- :mod:`~workers.nas.rules`: masked softmax, entropy, argmax, the pruning rule and the
  Gumbel / straight-through relaxations (pure math);
- :mod:`~workers.nas.cell`: a mixed cell, one linear map per (activation, LayerNorm)
  candidate, unit-RMS outputs and a shared gain;
- :mod:`~workers.nas.generator`: :class:`SearchedPrefix`, the generator the trainer uses;
- :mod:`~workers.nas.budget`: the parameter-budget check.
"""

from __future__ import annotations

from workers.nas.budget import check_parameter_budget
from workers.nas.candidates import Candidate, candidate_space, candidates_from_spec
from workers.nas.cell import MixedCell
from workers.nas.generator import SearchedPrefix, default_width
from workers.nas.rules import (
    RELAXATIONS,
    PruneDecision,
    discretize_choice,
    gumbel_softmax,
    masked_softmax,
    prune_rule,
    softmax_entropy,
    straight_through,
)

__all__ = [
    "RELAXATIONS",
    "Candidate",
    "MixedCell",
    "PruneDecision",
    "SearchedPrefix",
    "candidate_space",
    "candidates_from_spec",
    "check_parameter_budget",
    "default_width",
    "discretize_choice",
    "gumbel_softmax",
    "masked_softmax",
    "prune_rule",
    "softmax_entropy",
    "straight_through",
]
