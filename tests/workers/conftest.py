"""Fixtures for the workers tests: small synthetic tasks on disk and tiny models built from configs."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

WORDS = "alpha beta gamma delta river stone cloud green small quick lazy bright".split()
KEYWORD = "magic"


def write_task(folder: Path, *, train: Iterable[dict[str, Any]], dev: Iterable[dict[str, Any]], meta: dict[str, Any]) -> Path:
    """Write a task folder in the shared-data format."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("dev", dev)):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9)))


def keyword_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Single sentences; the label says whether the keyword occurs."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = int(rng.random() < 0.5)
        words = _sentence(rng).split()
        if label:
            words.insert(rng.randrange(len(words) + 1), KEYWORD)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def pair_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Sentence pairs; the label says whether the two sentences are identical."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        first = _sentence(rng)
        same = rng.random() < 0.5
        rows.append({"text_a": first, "text_b": first if same else _sentence(rng), "label": "same" if same else "different"})
    return rows


@pytest.fixture(scope="session")
def synthetic_tasks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tasks, 64 train / 32 dev rows each: keyword classification and pair identity."""
    root = tmp_path_factory.mktemp("tasks")
    keyword = write_task(
        root / "keyword",
        train=keyword_rows(64, seed=1),
        dev=keyword_rows(32, seed=2),
        meta={"metric": "accuracy", "labels": [0, 1], "label_type": "int"},
    )
    pairs = write_task(
        root / "pairs",
        train=pair_rows(64, seed=3),
        dev=pair_rows(32, seed=4),
        meta={"metric": ["f1", "accuracy"], "labels": ["different", "same"], "label_type": "str"},
    )
    return {"keyword": keyword, "pairs": pairs}


def all_texts() -> list[str]:
    return [*WORDS, KEYWORD, " ".join(WORDS)]


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Build (once per family) a tiny model whose tokenizer covers the synthetic tasks' words."""
    from workers.tiny import build_tiny_model

    built: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_model(tmp_path_factory.mktemp(f"tiny-{family}"), family=family, texts=all_texts())
        return built[family]

    return make


@pytest.fixture(scope="session")
def tiny_bert(tiny_model_factory: Callable[[str], Path]) -> Path:
    return tiny_model_factory("bert")
