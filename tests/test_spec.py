"""Spec validation: every rejection names the field path of the problem."""

from __future__ import annotations

import json

import copy
from pathlib import Path

import pytest

from searchsvc.errors import SpecError
from searchsvc.spec import (
    DEFAULT_HYPERPARAMETERS,
    HYPERPARAMETERS,
    METHOD_HYPERPARAMETERS,
    METHODS,
    check_searchable,
    hyperparameter_rule,
    methods_using,
    parse_spec,
)


def problems_of(data: object) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return dict(info.value.problems)


def with_(spec: dict, path: str, value: object) -> dict:
    out = copy.deepcopy(spec)
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def test_minimal_spec_gets_defaults(minimal_spec: dict) -> None:
    spec = parse_spec(minimal_spec)
    assert spec.method == "lora+prefix"
    assert spec.search.algorithm == "tpe" and spec.search.metric == "avg_dev_score"
    assert [t.name for t in spec.tasks] == ["senti", "pairs"]
    assert parse_spec(spec.to_dict()) == spec
    # what a checkpoint or the database holds is JSON text: every default survives it (strict types)
    assert parse_spec(json.loads(json.dumps(spec.to_dict()))) == spec


def test_design_example_parses(two_tasks: list[dict]) -> None:
    yaml_text = f"""
name: glue-peml
model: path/or/hub-id
tasks:
  - {{name: sst2, path: {two_tasks[0]['path']}}}
  - {{name: rte,  path: {two_tasks[1]['path']}, weight: 0.5}}
method: lora+prefix
search:
  algorithm: tpe
  num_trials: 20
  max_concurrent: 2
  metric: avg_dev_score
  mode: max
  space:
    lr: {{type: loguniform, low: 1.0e-3, high: 2.0e-2}}
    prefix_length: {{type: int, low: 5, high: 50}}
    lora_rank: {{type: choice, values: [4, 8, 16, 32]}}
train: {{max_epochs: 10, patience: 3, batch_size: 16, max_seq_len: 128, seed: 0}}
resources: {{cpu: 1, gpu: 0}}
"""
    spec = parse_spec(yaml_text)
    assert spec.tasks[1].weight == 0.5
    assert spec.search.space["lora_rank"].values == [4, 8, 16, 32]


@pytest.mark.parametrize(
    ("path", "value", "expected_path", "words"),
    [
        ("colour", "red", "colour", "unknown field"),
        ("search.bogus", 1, "search.bogus", "unknown field"),
        ("tasks", [], "tasks", "at least 1"),
        ("search.num_trials", 0, "search.num_trials", "greater than 0"),
        ("search.max_concurrent", -1, "search.max_concurrent", "greater than 0"),
        ("train.max_epochs", 0, "train.max_epochs", "greater than 0"),
        ("train.batch_size", 0, "train.batch_size", "greater than 0"),
        ("train.subset", "last", "train.subset", "unknown subset 'last'"),
        ("train.selection", "test", "train.selection", "unknown selection 'test'; choose one of holdout, dev"),
        ("train.holdout_fraction", 0.9, "train.holdout_fraction", "less than or equal to 0.5"),
        ("train.holdout_fraction", 0, "train.holdout_fraction", "greater than 0"),
        ("train.pair_encoding", "crossed", "train.pair_encoding", "unknown pair_encoding 'crossed'"),
        ("train.loss_balance", "gradnorm", "train.loss_balance", "unknown loss_balance 'gradnorm'; choose one of rms, none"),
        ("train.dev_scores", "never", "train.dev_scores", "unknown dev_scores 'never'"),
        ("peml.retrain_epochs", 10, "peml.retrain_epochs", "must be below train.max_epochs (3)"),
        ("method", "magic", "method", "unknown method 'magic'"),
        ("search.algorithm", "grid", "search.algorithm", "unknown algorithm 'grid'"),
        ("search.mode", "up", "search.mode", "'max' or 'min'"),
        ("search.metric", "nope/acc", "search.metric", "unknown metric"),
        ("search.space", {"lr": {"type": "loguniform", "low": 0.1, "high": 0.01}}, "search.space.lr", "must be below high"),
        ("search.space", {"lr": {"type": "uniform", "low": 0.5, "high": 0.5}}, "search.space.lr", "must be below high"),
        ("search.space", {"lr": {"type": "loguniform", "low": 0.0, "high": 0.01}}, "search.space.lr", "> 0 for a log scale"),
        ("search.space", {"prefix_length": {"type": "int", "low": 50, "high": 5}}, "search.space.prefix_length", "below high"),
        ("search.space", {"lora_rank": {"type": "choice", "values": []}}, "search.space.lora_rank.values", "at least 1"),
        ("search.space", {"lora_rank": {"type": "choice", "values": [4, 0]}}, "search.space.lora_rank", "outside"),
        ("search.space", {"lora_rank": {"type": "uniform", "low": 1, "high": 8}}, "search.space.lora_rank", "integer"),
        ("search.space", {"warp": {"type": "uniform", "low": 0, "high": 1}}, "search.space.warp", "unknown hyperparameter"),
        ("search.space", {"lr": {"type": "gaussian", "low": 0, "high": 1}}, "search.space.lr", "gaussian"),
        ("tasks.0.path", "/definitely/not/here", "tasks.0.path", "no task folder"),
        ("tasks.0.name", "Bad Name!", "tasks.0.name", "lowercase"),
        ("tasks.0.weight", 0, "tasks.0.weight", "greater than 0"),
        ("tasks.1.name", "senti", "tasks.1.name", "duplicate task name"),
        ("tasks.0.extra", 1, "tasks.0.extra", "unknown field"),
        ("resources.gpu", -1, "resources.gpu", "greater than or equal to 0"),
    ],
)
def test_rejections_name_the_field(minimal_spec: dict, path: str, value: object, expected_path: str, words: str) -> None:
    problems = problems_of(with_(minimal_spec, path, value))
    assert expected_path in problems, problems
    assert words in problems[expected_path]


def test_missing_required_fields_are_all_reported() -> None:
    problems = problems_of({"search": {}})
    assert {"name", "model", "tasks"} <= set(problems)
    assert all("required" in problems[k].lower() for k in ("name", "model", "tasks"))


def test_task_folder_missing_files(tmp_path: Path, minimal_spec: dict) -> None:
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "train.jsonl").write_text("{}\n")
    problems = problems_of(with_(minimal_spec, "tasks.0.path", str(folder)))
    assert "lacks dev.jsonl, meta.json" in problems["tasks.0.path"]


def test_malformed_meta_json(tmp_path: Path, minimal_spec: dict) -> None:
    folder = Path(minimal_spec["tasks"][0]["path"])
    (folder / "meta.json").write_text("{not json")
    problems = problems_of(minimal_spec)
    assert "meta.json" in problems["tasks.0.path"] and "not valid JSON" in problems["tasks.0.path"]


def test_not_a_mapping_and_bad_yaml() -> None:
    assert "<root>" in problems_of([1, 2])
    assert "not valid YAML" in problems_of("name: [unclosed")["<root>"]


def test_every_hyperparameter_has_a_default() -> None:
    assert set(DEFAULT_HYPERPARAMETERS) == set(HYPERPARAMETERS)


# ---- method as a search dimension ----------------------------------------------------------

CHOICE = {"type": "choice", "values": ["lora", "prefix", "peml"]}
RANK = {"type": "choice", "values": [4, 8]}
PREFIX = {"type": "int", "low": 2, "high": 20}


def with_space(spec: dict, space: dict, **search: object) -> dict:
    return {**spec, "search": {**search, "space": space}}


def test_method_hyperparameters_is_the_one_table_of_who_reads_what() -> None:
    assert set(METHOD_HYPERPARAMETERS) == set(METHODS)
    specific = set().union(*METHOD_HYPERPARAMETERS.values())
    assert specific <= set(HYPERPARAMETERS)
    assert methods_using("lora_rank") == ("peml", "lora", "lora+prefix", "adalora")  # in METHODS' order
    assert methods_using("prefix_length") == ("peml", "prefix", "lora+prefix")
    assert methods_using("nas_cells") == ("peml",)
    assert methods_using("lr") == METHODS and methods_using("grad_alpha") == METHODS
    assert METHOD_HYPERPARAMETERS["head"] == frozenset()


def test_method_as_a_choice_samples_each_dimension_for_the_methods_that_read_it(minimal_spec: dict) -> None:
    spec = parse_spec(with_space(minimal_spec, {
        "method": CHOICE, "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
        "lora_rank": RANK, "prefix_length": {**PREFIX, "when": {"method": ["peml"]}}}))
    search = spec.search
    assert search.method_choices() == ["lora", "prefix", "peml"]
    assert search.sampled_for("lr") == ("lora", "prefix", "peml")
    assert search.sampled_for("lora_rank") == ("lora", "peml")   # inferred: prefix has no LoRA
    assert search.sampled_for("prefix_length") == ("peml",)      # narrowed by `when`
    assert parse_spec(spec.to_dict()) == spec
    assert parse_spec(minimal_spec).search.method_choices() is None


@pytest.mark.parametrize(
    ("space", "algorithm", "expected_path", "words"),
    [
        ({"method": {"type": "uniform", "low": 0, "high": 1}}, "tpe", "search.space.method", "'choice'"),
        ({"method": {"type": "choice", "values": ["lora", "magic"]}}, "tpe", "search.space.method.values", "unknown method(s) ['magic']"),
        ({"method": {"type": "choice", "values": ["lora", "lora"]}}, "tpe", "search.space.method.values", "repeat"),
        ({"method": {**CHOICE, "when": {"method": ["lora"]}}}, "tpe", "search.space.method.when", "cannot be conditional"),
        ({"method": CHOICE, "lora_rank": RANK}, "hyperopt", "search.space.method", "use algorithm 'tpe' or 'random'"),
        ({"method": CHOICE, "lora_rank": {**RANK, "when": {"method": ["head"]}}}, "tpe",
         "search.space.lora_rank.when.method", "'head' is not one of search.space.method's values"),
        ({"method": CHOICE, "lora_rank": {**RANK, "when": {"method": ["wizard"]}}}, "tpe",
         "search.space.lora_rank.when.method", "unknown method 'wizard'"),
        ({"method": CHOICE, "prefix_length": {**PREFIX, "when": {"method": ["lora", "peml"]}}}, "tpe",
         "search.space.prefix_length.when.method", "'lora' does not use prefix_length"),
        ({"method": {"type": "choice", "values": ["lora", "prefix"]}, "nas_cells": {"type": "int", "low": 1, "high": 3}}, "tpe",
         "search.space.nas_cells", "no method of search.space.method ['lora', 'prefix'] uses nas_cells"),
        ({"method": CHOICE, "lr": {"type": "uniform", "low": 0.1, "high": 0.2, "when": {"method": []}}}, "tpe",
         "search.space.lr.when.method", "at least 1"),
        ({"lr": {"type": "uniform", "low": 0.1, "high": 0.2, "when": {"method": ["lora"]}}}, "tpe",
         "search.space.lr.when", "needs 'method' as a choice"),
        # A fixed method refuses a dimension it would silently ignore (the default method is lora+prefix).
        ({"nas_cells": {"type": "int", "low": 1, "high": 3}}, "tpe", "search.space.nas_cells", "method 'lora+prefix' does not use nas_cells"),
        # ...and one a setting of the spec leaves unread (coordination is off, sampling proportional by default).
        ({"grad_alpha": {"type": "uniform", "low": 0, "high": 5}}, "tpe", "search.space.grad_alpha", "coordination.enabled: true"),
        ({"sampling_temperature": {"type": "uniform", "low": 1, "high": 5}}, "tpe", "search.space.sampling_temperature",
         "train.sampling: temperature (not 'proportional')"),
    ],
)
def test_bad_method_combinations_are_refused_naming_the_field(
    minimal_spec: dict, space: dict, algorithm: str, expected_path: str, words: str
) -> None:
    problems = problems_of(with_space(minimal_spec, space, algorithm=algorithm))
    assert expected_path in problems, problems
    assert words in problems[expected_path], problems[expected_path]


def test_settings_that_read_a_shared_hyperparameter_make_it_searchable(minimal_spec: dict) -> None:
    spec = parse_spec({**minimal_spec, "coordination": {"enabled": True}, "train": {"sampling": "temperature"}, "search": {
        "space": {"grad_alpha": {"type": "uniform", "low": 0, "high": 5}, "sampling_temperature": {"type": "uniform", "low": 1, "high": 5}}}})
    assert set(spec.search.space) == {"grad_alpha", "sampling_temperature"}


def test_method_is_a_config_key_only_as_a_method_name() -> None:
    """run_trial's resolve_config asks hyperparameter_rule for every key of a trial config."""
    assert hyperparameter_rule("method", []) == {"kind": "method", "values": METHODS}
    assert "method" not in HYPERPARAMETERS and "method" not in DEFAULT_HYPERPARAMETERS  # its default is spec.method


# ---- submission -----------------------------------------------------------------------------

def test_an_empty_space_parses_but_is_not_searchable(minimal_spec: dict) -> None:
    """`searchsvc train` runs a spec without a space; a submitted study must search something."""
    spec = parse_spec({**minimal_spec, "search": {"num_trials": 4}})
    with pytest.raises(SpecError) as info:
        check_searchable(spec)
    (path, message), = info.value.problems
    assert path == "search.space" and "empty" in message and "searchsvc train" in message
    assert check_searchable(parse_spec(minimal_spec)).search.space
