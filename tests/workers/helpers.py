"""Helpers for the workers tests: task folders in the shared-data format and synthetic rows."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
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


def all_texts() -> list[str]:
    """Every word the synthetic tasks use (to train a tiny tokenizer on)."""
    return [*WORDS, KEYWORD, " ".join(WORDS)]


def count_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Sentence pairs with a float label in [0, 5]: how often the keyword occurs, capped at 5."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        count = rng.randint(0, 5)
        words = _sentence(rng).split() + [KEYWORD] * count
        rng.shuffle(words)
        rows.append({"text_a": " ".join(words), "text_b": _sentence(rng), "label": float(count)})
    return rows


# Warnings are errors in these tests (applied with ``pytestmark = STRICT_WARNINGS``).
STRICT_WARNINGS = [pytest.mark.filterwarnings("error")]
