"""Small task folders and tiny models for tests (no downloads)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

WORDS_POS = ["good", "great", "fine", "nice", "happy", "bright"]
WORDS_NEG = ["bad", "poor", "sad", "dark", "awful", "grim"]
FILLER = ["the", "a", "movie", "day", "food", "song", "was", "very", "quite", "today"]


def _single(rng: random.Random) -> dict[str, Any]:
    label = rng.randint(0, 1)
    words = rng.sample(FILLER, 4) + [rng.choice(WORDS_POS if label else WORDS_NEG)]
    rng.shuffle(words)
    return {"text": " ".join(words), "label": label}


def _pair(rng: random.Random) -> dict[str, Any]:
    same = rng.randint(0, 1)
    a = rng.sample(FILLER, 3)
    b = list(a) if same else rng.sample(FILLER, 3)
    return {"text_a": " ".join(a), "text_b": " ".join(b), "label": "entailment" if same else "not_entailment"}


def write_task(root: Path, name: str, kind: str, *, n_train: int = 48, n_dev: int = 24, seed: int = 0) -> dict[str, Any]:
    """A task folder in the ../shared/data format; returns its spec entry."""
    rng = random.Random(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    make = _single if kind == "single" else _pair
    for split, n in (("train", n_train), ("dev", n_dev)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for _ in range(n):
                f.write(json.dumps(make(rng)) + "\n")
    meta = (
        {"name": name, "metric": "accuracy", "labels": [0, 1], "label_type": "int"}
        if kind == "single"
        else {"name": name, "metric": ["f1", "accuracy"], "labels": ["entailment", "not_entailment"], "label_type": "str"}
    )
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return {"name": name, "path": str(folder)}


def all_words() -> list[str]:
    return WORDS_POS + WORDS_NEG + FILLER
