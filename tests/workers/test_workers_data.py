"""Loading every task shape from small JSONL files, and the errors for malformed data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from searchsvc.spec import TaskSpec
from tests.workers.helpers import STRICT_WARNINGS, write_task
from workers.data import Example, TaskData, check_task_folder, load_task

pytestmark = STRICT_WARNINGS

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # ../shared beside the checkout


def _load(folder: Path, **limits: Any) -> TaskData:
    return load_task(TaskSpec(name=folder.name, path=str(folder)), **limits)


def test_single_sentence_with_int_labels(tmp_path: Path) -> None:
    folder = write_task(
        tmp_path / "sst",
        train=[{"text": "good film", "label": 1, "idx": 0}, {"text": "bad film", "label": 0, "idx": 1}],
        dev=[{"text": "fine", "label": 1}],
        meta={"metric": "accuracy", "labels": [0, 1], "label_type": "int"},
    )
    task = _load(folder)
    assert task.shape == "single"
    assert task.kind == "classification"
    assert task.train == (Example("good film", None, 1), Example("bad film", None, 0))
    assert task.metrics == ("accuracy",)
    assert task.primary_metric == "accuracy"
    assert task.num_outputs == 2


def test_pairs_map_string_labels_in_meta_order(tmp_path: Path) -> None:
    folder = write_task(
        tmp_path / "cb",
        train=[
            {"text_a": "p1", "text_b": "h1", "label": "neutral"},
            {"text_a": "p2", "text_b": "h2", "label": "entailment"},
        ],
        dev=[{"text_a": "p3", "text_b": "h3", "label": "contradiction"}],
        meta={"metric": ["accuracy", "macro_f1"], "labels": ["entailment", "contradiction", "neutral"], "label_type": "str"},
    )
    task = _load(folder)
    assert task.shape == "pair"
    assert [e.label for e in task.train] == [2, 0]
    assert task.dev == (Example("p3", "h3", 1),)
    assert task.metrics == ("accuracy", "macro_f1")
    assert task.num_outputs == 3


def test_boolq_keeps_bool_labels_apart_from_ints(tmp_path: Path) -> None:
    folder = write_task(
        tmp_path / "boolq",
        train=[{"question": "is it?", "passage": "It is.", "label": True, "title": "T"}],
        dev=[{"question": "is it not?", "passage": "It is.", "label": False}],
        meta={"metric": "accuracy", "labels": [False, True], "label_type": "bool"},
    )
    task = _load(folder)
    assert task.shape == "boolq"
    assert task.train == (Example("is it?", "It is.", 1),)
    assert task.dev[0].label == 0
    bad = write_task(
        tmp_path / "boolq-int",
        train=[{"question": "q", "passage": "p", "label": 1}],
        dev=[{"question": "q", "passage": "p", "label": True}],
        meta={"metric": "accuracy", "labels": [False, True], "label_type": "bool"},
    )
    with pytest.raises(ValueError, match=r"train\.jsonl, line 1: label 1 is not of label_type 'bool'"):
        _load(bad)


def test_copa_and_wic_encodings(tmp_path: Path) -> None:
    copa = write_task(
        tmp_path / "copa",
        train=[{"premise": "The man fell.", "choice1": "He slipped.", "choice2": "He sang.", "question": "cause", "label": 0}],
        dev=[{"premise": "It rained.", "choice1": "Wet.", "choice2": "Dry.", "question": "effect", "label": 1}],
        meta={"metric": "accuracy", "labels": [0, 1], "label_type": "int"},
    )
    task = _load(copa)
    assert task.shape == "copa"
    assert task.train == (Example("The man fell. What was the cause?", "He slipped. / He sang.", 0),)
    assert task.dev == (Example("It rained. What was the effect?", "Wet. / Dry.", 1),)
    wic = write_task(
        tmp_path / "wic",
        train=[{"word": "carry", "sentence1": "You carry gear .", "sentence2": "Sound carries .", "label": "F", "pos": "V"}],
        dev=[{"word": "go", "sentence1": "Go home .", "sentence2": "Go away .", "label": "T"}],
        meta={"metric": "accuracy", "labels": ["F", "T"], "label_type": "str"},
    )
    task = _load(wic)
    assert task.shape == "wic"
    assert task.train == (Example("carry: You carry gear .", "carry: Sound carries .", 0),)
    assert task.dev[0].label == 1


def test_regression_task_and_its_range(tmp_path: Path) -> None:
    folder = write_task(
        tmp_path / "stsb",
        train=[{"text_a": "a", "text_b": "b", "label": 3.8}, {"text_a": "c", "text_b": "d", "label": 0}],
        dev=[{"text_a": "e", "text_b": "f", "label": 5.0}],
        meta={"metric": ["pearson", "spearman"], "labels": [0.0, 5.0], "label_type": "float"},
    )
    task = _load(folder)
    assert task.kind == "regression"
    assert task.num_outputs == 1
    assert task.label_range == (0.0, 5.0)
    assert [e.label for e in task.train] == [3.8, 0.0]
    assert task.primary_metric == "pearson"
    out_of_range = write_task(
        tmp_path / "stsb-bad",
        train=[{"text_a": "a", "text_b": "b", "label": 3.8}],
        dev=[{"text_a": "a", "text_b": "b", "label": 1.0}, {"text_a": "a", "text_b": "b", "label": 6.0}],
        meta={"metric": "pearson", "labels": [0.0, 5.0], "label_type": "float"},
    )
    with pytest.raises(ValueError, match=r"dev\.jsonl, line 2: label 6\.0 is outside the range"):
        _load(out_of_range)


def test_row_limits_take_the_first_rows(tmp_path: Path) -> None:
    rows = [{"text": f"row {i}", "label": i % 2} for i in range(10)]
    folder = write_task(tmp_path / "t", train=rows, dev=rows, meta={"metric": "accuracy", "labels": [0, 1]})
    task = _load(folder, max_train=3, max_dev=2, subset="first")
    assert [e.text_a for e in task.train] == ["row 0", "row 1", "row 2"]
    assert [e.text_a for e in task.dev] == ["row 0", "row 1"]


def test_random_row_limits_are_a_fixed_uniform_sample_in_file_order(tmp_path: Path) -> None:
    rows = [{"text": f"row {i}", "label": i % 2} for i in range(40)]
    folder = write_task(tmp_path / "t", train=rows, dev=rows, meta={"metric": "accuracy", "labels": [0, 1]})

    def picked(split: str, **options: Any) -> list[int]:
        task = _load(folder, max_train=5, max_dev=5, **options)
        return [int(e.text_a.split()[1]) for e in getattr(task, split)]

    train = picked("train")
    assert len(train) == 5 and train == sorted(train) and len(set(train)) == 5
    assert train != [0, 1, 2, 3, 4]
    assert picked("train") == train  # the same rows every time: every trial of a study sees them
    assert picked("dev") != train  # each split (and task) has its own draw
    assert picked("train", subset_seed=1) != train
    assert len(_load(folder, max_train=100).train) == 40  # a limit above the file keeps all rows, in order
    assert [e.text_a for e in _load(folder, max_train=100).train] == [r["text"] for r in rows]
    # Uniform: over many seeds each row is kept about 5/40 of the time (within 4 sd; deterministic seeds).
    counts = [0] * 40
    for seed in range(400):
        for i in picked("train", subset_seed=seed):
            counts[i] += 1
    expected, sd = 400 * 5 / 40, (400 * 5 / 40 * (1 - 5 / 40)) ** 0.5
    assert all(abs(c - expected) < 4 * sd for c in counts), counts
    with pytest.raises(ValueError, match="subset must be 'random' or 'first'"):
        _load(folder, max_train=5, subset="last")


@pytest.mark.parametrize(
    ("train_lines", "message"),
    [
        (['{"text": "a", "label": 0}', "{not json"], r"train\.jsonl, line 2: not valid JSON"),
        (['{"text": "a", "label": 0}', '{"text": "b"}'], r"train\.jsonl, line 2: record has no 'label'"),
        (['{"text": "a", "label": 0}', '{"text": "b", "label": 7}'], r"line 2: label 7 is not among the meta labels"),
        (['{"text": "a", "label": 0}', '{"sentence": "b", "label": 1}'], r"line 2: record keys .* do not match"),
        (['{"words": "a", "label": 0}'], r"line 1: record keys \['label', 'words'\] match no known task shape"),
        (['{"text": 3, "label": 0}'], r"line 1: field 'text' must be a string"),
        (["[1, 2]"], r"line 1: expected a JSON object"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path: Path, train_lines: list[str], message: str) -> None:
    folder = write_task(tmp_path / "t", train=[], dev=[{"text": "x", "label": 0}], meta={"metric": "accuracy", "labels": [0, 1]})
    (folder / "train.jsonl").write_text("\n".join(train_lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        _load(folder)


def test_bad_meta_is_refused(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": 0}]
    folder = write_task(tmp_path / "t", train=rows, dev=rows, meta={"metric": "bleu", "labels": [0, 1]})
    with pytest.raises(ValueError, match=r"meta\.json: unknown metric"):
        _load(folder)
    (folder / "meta.json").write_text(json.dumps({"metric": "accuracy", "labels": [0]}))
    with pytest.raises(ValueError, match="at least 2 labels"):
        _load(folder)
    (folder / "meta.json").write_text(json.dumps({"metric": "accuracy", "labels": [0.0, 1.0], "label_type": "float"}))
    with pytest.raises(ValueError, match="regression task takes pearson/spearman"):
        _load(folder)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared benchmark data not present")
@pytest.mark.parametrize("name", ["sst2", "cola", "mrpc", "rte", "stsb", "qnli", "wnli", "boolq", "cb", "copa", "wic"])
def test_real_task_folders_load(name: str) -> None:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    task = _load(folder, max_train=50, max_dev=20)
    assert len(task.train) == 50
    assert len(task.dev) == 20
    assert task.metrics


def test_rows_past_the_limit_are_not_read(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": 0}, {"text": "b", "label": 1}]
    folder = write_task(tmp_path / "t", train=rows, dev=rows, meta={"metric": "accuracy", "labels": [0, 1]})
    with open(folder / "train.jsonl", "a", encoding="utf-8") as handle:
        handle.write("{broken\n")
    assert len(_load(folder, max_train=2, subset="first").train) == 2
    with pytest.raises(ValueError, match="line 3"):
        _load(folder)
    with pytest.raises(ValueError, match="line 3"):  # a random sample reads (and checks) every row
        _load(folder, max_train=2)


def test_check_task_folder_counts_every_row_and_makes_the_same_checks(tmp_path: Path) -> None:
    """What an upload is checked with: every row read (blank lines skipped), none kept."""
    rows = [{"text_a": "a", "text_b": "b", "label": "yes"}, {"text_a": "c", "text_b": "d", "label": "no"}]
    folder = write_task(tmp_path / "t", train=rows * 3, dev=rows[:1], meta={"metric": "f1", "labels": ["no", "yes"]})
    with open(folder / "train.jsonl", "a", encoding="utf-8") as handle:
        handle.write("\n")
    check = check_task_folder(folder)
    assert (check.train_rows, check.dev_rows, check.shape, check.kind) == (6, 1, "pair", "classification")
    (folder / "dev.jsonl").write_text('{"text": "x", "label": "no"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="train rows look like 'pair' but dev rows like 'single'"):
        check_task_folder(folder)
    (folder / "dev.jsonl").write_text('{"text_a": "x", "text_b": "y", "label": "maybe"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"dev\.jsonl, line 1: label 'maybe' is not among the meta labels"):
        check_task_folder(folder)
