"""A decoder-only model built from a config (random weights, no download), for the trainer benchmark on a GPU.

``1b``: a Llama of TinyLlama-1.1B's shape (hidden 2048, 22 layers, 32 query and 4 key/value heads,
MLP 5632): 1.0 B parameters (0.97 B in its 22 layers) with this module's word-piece vocabulary (8,000 pieces learnt from
the tasks' own rows, so the step's cost is the transformer's, not a 32k-row embedding's). ``tiny``: the
same code path at a size a CPU test runs in seconds. Weights are random: the benchmark times steps and
counts FLOPs, it does not score the model.

The folder holds what ``workers.build_model`` reads for any causal model: ``config.json``, the weights
(saved in bf16: half the disk) and the tokenizer (``workers.tiny``'s, whose templates the causal family
is tested with).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

SHAPES: dict[str, dict[str, int]] = {
    "1b": {"hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
           "intermediate_size": 5632},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128},
}
VOCAB = 8000
TEXT_ROWS = 4000  # rows per task read to learn the vocabulary


def task_texts(task_folders: Sequence[str | Path], *, rows: int = TEXT_ROWS) -> list[str]:
    """Every string field of the first ``rows`` training rows of each task: what the tokenizer learns from."""
    texts: list[str] = []
    for folder in task_folders:
        with open(Path(folder) / "train.jsonl") as lines:
            for number, line in enumerate(lines):
                if number >= rows:
                    break
                texts += [v for v in json.loads(line).values() if isinstance(v, str)]
    return texts


def build_decoder(folder: str | Path, *, size: str, task_folders: Sequence[str | Path], seed: int = 0) -> Path:
    """Write a ``size`` decoder (see :data:`SHAPES`) and its tokenizer to ``folder``; returns the folder.

    Raises:
        KeyError: unknown size.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from workers.tiny import build_tiny_model

    shape = SHAPES[size]
    out = Path(folder)
    # The tokenizer and special-token ids of workers.tiny's causal model; its tiny weights are replaced below.
    build_tiny_model(out, family="llama", texts=task_texts(task_folders), vocab_size=VOCAB, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(out)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, **shape)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    for stale in out.glob("*.safetensors*"):
        stale.unlink()
    model.save_pretrained(out)
    return out

