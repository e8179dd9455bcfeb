"""Export: turn a trial checkpoint into one self-contained artifact directory.

::

    searchsvc_artifact.json   format version, family, method, base model, tasks (kind, labels,
                              metrics, verbalizer, prompt template), trial config, dev scores,
                              prefix architecture, library versions
    merged/                   the base model with LoRA merged into its weights + the tokenizer
                              (``save_pretrained``; loads with the family's ``AutoModel*`` class)
    prefix.json               the prefix generator: registry name, module, config (if any)
    prefix.safetensors        its state dict (after ``discretize()``, if the generator has it)
    heads.safetensors         task heads of the encoder family (their info is in the JSON)
    adapter/                  the UNMERGED LoRA as a standard PEFT adapter directory
                              (``adapter_config.json``, ``adapter_model.safetensors``)

:func:`workers.load` reads ``merged/``, the prefix and the heads (never ``adapter/``, which
is for people who want the adapter on its own) and needs nothing else: not the task
folders, not the checkpoint, not the base model path. Like checkpoints, the directory is
written under a temporary name and renamed when complete.

``dev_scores`` are the checkpoint's (the epoch that was best); when the generator has a
``discretize()`` it runs before saving, so the artifact's prefix is the discrete one and
``dev_scores_source`` says the scores predate it (PEML reports the gap itself).

AdaLoRA: ``adapter/`` is what PEFT saves, its tensors cut to the ranks the budget kept
(``rank_pattern`` in the config). Stock ``PeftModel.from_pretrained`` loads it and computes
the trained function (checked in the tests), but PEFT 0.21 warns on load that the
``rank_pattern`` keys match no module, and on save about modules pruned to rank 0;
``merged/`` carries the same function without either.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel

from workers.batching import prepare_tokenizer
from workers.checkpoint import LoadedCheckpoint, checkpoint_tasks, load_checkpoint
from workers.encoder import MultiTaskModel
from workers.multitask import MultiTaskBase
from workers.prefix import generator_spec
from workers.text2text.prompt import TEMPLATE_ID
from workers.text2text.verbalize import Verbalizer

ARTIFACT_FORMAT = 1
ARTIFACT_FILE = "searchsvc_artifact.json"
MERGED_DIR = "merged"
ADAPTER_DIR = "adapter"
PREFIX_CONFIG = "prefix.json"
PREFIX_WEIGHTS = "prefix.safetensors"
HEADS_WEIGHTS = "heads.safetensors"


def export_artifact(checkpoint_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the artifact of a trial checkpoint to ``out_dir`` (absent or empty); returns it.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty.
        ValueError: ``checkpoint_dir`` is not a checkpoint.
    """
    final = Path(out_dir)
    if final.exists() and any(final.iterdir()):
        raise FileExistsError(f"artifact directory {final} exists and is not empty")
    loaded = load_checkpoint(checkpoint_dir)
    staging = final.with_name(final.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        _write(loaded, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():
        final.rmdir()
    os.replace(staging, final)
    return final


def _write(loaded: LoadedCheckpoint, staging: Path) -> None:
    model, spec, info = loaded.model, loaded.spec, loaded.info
    prefix_entry = _save_prefix(model, staging)
    heads_entry = _save_heads(model, staging)
    peft = model.peft_module()
    adapter_entry: dict[str, Any] | None = None
    base: nn.Module = model.backbone
    if peft is not None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"peft\.")  # AdaLoRA's pruned ranks (module docstring)
            peft.save_pretrained(str(staging / ADAPTER_DIR))
        config = peft.peft_config["default"]
        targets = getattr(config, "target_modules", None)
        adapter_entry = {
            "path": ADAPTER_DIR,
            "peft_type": str(getattr(config.peft_type, "value", config.peft_type)),
            "target_modules": sorted(targets) if targets else None,
        }
        base = peft.merge_and_unload()
    assert isinstance(base, PreTrainedModel)
    base.set_attn_implementation("sdpa")  # the prefix-aware function is registered at load time, not stored
    base.save_pretrained(str(staging / MERGED_DIR))
    prepare_tokenizer(AutoTokenizer.from_pretrained(spec.model)).save_pretrained(str(staging / MERGED_DIR))

    tasks = checkpoint_tasks(info)
    metrics = info.get("metrics", {})
    manifest = {
        "format_version": ARTIFACT_FORMAT,
        "family": model.family,
        "method": info.get("method", spec.method),
        "base_model": spec.model,
        "pair_encoding": getattr(model, "pair_encoding", "packed"),
        "merged": MERGED_DIR,
        "max_seq_len": int(info.get("max_seq_len", spec.train.max_seq_len)),
        "tasks": [
            {
                **task.to_dict(),
                "label_texts": _label_texts(model, task.name),
                "prompt_template": TEMPLATE_ID if model.family != "encoder" else None,
            }
            for task in tasks
        ],
        "trial_config": loaded.config,
        "epoch": info.get("epoch"),
        "dev_scores": {
            "avg_dev_score": metrics.get("avg_dev_score"),
            **{t.name: {m: metrics.get(f"{t.name}/{m}") for m in t.metrics} for t in tasks},
        },
        # Scores are the checkpoint's; a discretized prefix may score differently (the gap).
        "dev_scores_source": f"checkpoint epoch {info.get('epoch')}"
        + (" (before discretization)" if prefix_entry and prefix_entry["discretized"] else ""),
        "prefix": prefix_entry,
        "heads": heads_entry,
        "adapter": adapter_entry,
        "study": spec.name,
        "versions": _versions(),
    }
    (staging / ARTIFACT_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _save_prefix(model: MultiTaskBase, folder: Path) -> dict[str, Any] | None:
    generator = model.prefix
    if generator is None:
        return None
    discretize = getattr(generator, "discretize", None)
    if callable(discretize):
        discretize()
    spec = generator_spec(generator)
    state = {k: v.detach().to("cpu").contiguous() for k, v in generator.state_dict().items()}
    save_file(state, str(folder / PREFIX_WEIGHTS))
    entry = {**spec, "weights": PREFIX_WEIGHTS, "discretized": callable(discretize)}
    (folder / PREFIX_CONFIG).write_text(json.dumps(entry, indent=2) + "\n", encoding="utf-8")
    return entry


def _save_heads(model: MultiTaskBase, folder: Path) -> dict[str, Any] | None:
    if not isinstance(model, MultiTaskModel):
        return None
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.heads.state_dict().items()}
    save_file(state, str(folder / HEADS_WEIGHTS))
    return {"weights": HEADS_WEIGHTS, "pooling": "mean", "tasks": list(model.task_names)}


def _label_texts(model: MultiTaskBase, task: str) -> dict[str, Any] | None:
    formats = getattr(model, "formats", None)
    if formats is None:
        return None
    verbalizer: Verbalizer = next(f.verbalizer for f in formats if f.name == task)
    return verbalizer.to_dict()


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
