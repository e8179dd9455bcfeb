"""Loading an exported artifact (:mod:`workers.export`) as a :class:`Predictor`.

``workers.load(path)`` builds the same model class the trial trained (so predictions go
through the same code), around the *merged* weights: no PEFT, no adapter switching, one
model for every task. The prefix generator is rebuilt from its registry name and config,
and heads (encoder family) from ``heads.safetensors``. Everything comes from the artifact
directory; the task folders and the original base model are not needed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from workers.batching import prepare_tokenizer
from workers.data import SHAPES, Example, TaskInfo, to_texts
from workers.export import ARTIFACT_FILE, ARTIFACT_FORMAT, HEADS_WEIGHTS
from workers.family import load_base
from workers.injection import PrefixAttention
from workers.model import assemble_model
from workers.multitask import MultiTaskBase
from workers.prefix import generator_from_spec
from workers.text2text.prompt import TEMPLATE_ID
from workers.text2text.verbalize import Verbalizer


class Predictor:
    """Predicts any of a study's tasks with one merged model; build it with :func:`load`.

    ``predict(task, rows)`` takes rows shaped like the task's data files (their label, if
    present, is ignored) and returns labels as the task's meta file writes them: the
    original label values for classification, floats for regression.
    """

    def __init__(
        self,
        model: MultiTaskBase,
        *,
        tokenizer: Any,
        tasks: Sequence[TaskInfo],
        manifest: Mapping[str, Any],
        device: torch.device,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.manifest = dict(manifest)
        self.device = device
        self._tasks = {task.name: task for task in tasks}
        self.max_seq_len = int(manifest["max_seq_len"])

    @property
    def tasks(self) -> list[str]:
        """The task names, in training order."""
        return list(self._tasks)

    @property
    def family(self) -> str:
        return str(self.manifest["family"])

    def task(self, name: str) -> TaskInfo:
        """A task's description (kind, labels, metrics, shape).

        Raises:
            KeyError: not a task of this artifact.
        """
        try:
            return self._tasks[name]
        except KeyError:
            raise KeyError(f"unknown task {name!r}; this artifact knows {', '.join(self._tasks)}") from None

    @torch.no_grad()
    def predict(self, task_name: str, rows: Sequence[Mapping[str, Any]], *, batch_size: int = 32) -> list[Any]:
        """One label per row, in order.

        Raises:
            KeyError: unknown task.
            ValueError: a row lacks the fields of the task's shape.
        """
        task = self.task(task_name)
        if not rows:
            return []
        placeholder = task.labels[0] if task.kind == "regression" else 0
        examples = []
        for i, row in enumerate(rows):
            try:
                text_a, text_b = to_texts(task.shape, dict(row))
            except ValueError as exc:
                fields = sorted(dict(SHAPES).get(task.shape, ()))
                raise ValueError(f"row {i} for task {task_name!r} (shape {task.shape!r}, fields {fields}): {exc}") from None
            examples.append(Example(text_a=text_a, text_b=text_b, label=placeholder))
        index = self.model.task_names.index(task_name)
        split = self.model.encode_split(self.tokenizer, index, examples, max_seq_len=self.max_seq_len)
        predictions = self.model.predict_split(
            index, split, batch_size=batch_size, pad_id=int(self.tokenizer.pad_token_id), device=self.device
        )
        if task.kind == "regression":
            return [float(p) for p in predictions]
        return [task.labels[int(p)] for p in predictions]


def load(path: str | Path, *, device: str | torch.device = "cpu") -> Predictor:
    """Load an artifact directory written by :func:`workers.export.export_artifact`.

    Raises:
        ValueError: not an artifact, an unsupported format, or parts that do not fit together.
    """
    folder = Path(path)
    manifest_path = folder / ARTIFACT_FILE
    if not manifest_path.is_file():
        raise ValueError(f"{folder} is not a searchsvc artifact: no {ARTIFACT_FILE}")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != ARTIFACT_FORMAT:
        raise ValueError(
            f"{folder}: unsupported artifact format {manifest.get('format_version')!r} (this version reads {ARTIFACT_FORMAT})"
        )
    family = str(manifest["family"])
    tasks = [TaskInfo.from_dict(task) for task in manifest["tasks"]]
    verbalizers: dict[str, Verbalizer] = {}
    for entry in manifest["tasks"]:
        template = entry.get("prompt_template")
        if template not in (None, TEMPLATE_ID):
            raise ValueError(
                f"{folder}: task {entry['name']!r} uses prompt template {template!r}; this version writes {TEMPLATE_ID!r}"
            )
        if entry.get("label_texts"):
            verbalizers[entry["name"]] = Verbalizer.from_dict(entry["label_texts"])

    merged = str(folder / manifest.get("merged", "merged"))
    base = load_base(merged, family)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(merged))
    prefix = prefix_attention = None
    if manifest.get("prefix"):
        prefix_attention = PrefixAttention(base)
        prefix = generator_from_spec(manifest["prefix"])
        if list(prefix.slots) != list(prefix_attention.slots):
            raise ValueError(
                f"{folder}: the prefix was built for attention slots {prefix.slots}, the model has {prefix_attention.slots}"
            )
        prefix.load_state_dict(load_file(str(folder / manifest["prefix"]["weights"])))
    model = assemble_model(
        base,
        base=base,
        family=family,
        tasks=tasks,
        tokenizer=tokenizer,
        prefix=prefix,
        prefix_attention=prefix_attention,
        verbalizers=verbalizers,
        pair_encoding=str(manifest.get("pair_encoding", "packed")),
    )
    if manifest.get("heads"):
        heads = getattr(model, "heads", None)
        if heads is None:
            raise ValueError(f"{folder}: heads given for a {family} model, which has none")
        heads.load_state_dict(load_file(str(folder / manifest["heads"].get("weights", HEADS_WEIGHTS))))
    for p in model.parameters():
        p.requires_grad_(False)
    target = torch.device(device)
    model.to(target)
    model.eval()
    return Predictor(model, tokenizer=tokenizer, tasks=tasks, manifest=manifest, device=target)
