"""Fixtures for the workers tests: small synthetic tasks on disk and tiny models built from configs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.workers.helpers import all_texts, keyword_rows, pair_rows, write_task


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
