"""Spec validation: every rejection names the field path of the problem."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from searchsvc.errors import SpecError
from searchsvc.spec import DEFAULT_HYPERPARAMETERS, HYPERPARAMETERS, parse_spec


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
