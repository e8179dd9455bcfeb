"""Checkpoints: what is needed to rebuild a trained trial model, and the rebuild itself.

A checkpoint directory (``checkpoint-epoch-0003/``) holds::

    trainable.safetensors   LoRA / AdaLoRA / prefix / head tensors (the frozen base is not copied)
    trial_config.json       the resolved trial hyperparameters
    spec.json               the study spec (``StudySpec.to_dict()``)
    checkpoint.json         format version, epoch, metrics, method, base model, family,
                            tasks (TaskInfo dicts, in the study's order), total_steps, max_seq_len

The base model is read again from ``spec.model``, so a checkpoint is a few MB even for a
large model. Directories are written under a temporary name and renamed when complete,
so a reader (Ray copying a checkpoint, a crash mid-write) never sees half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from searchsvc.spec import StudySpec, parse_spec
from workers.data import TaskInfo
from workers.model import build_model
from workers.multitask import MultiTaskBase

FORMAT_VERSION = 1
WEIGHTS_FILE = "trainable.safetensors"
CONFIG_FILE = "trial_config.json"
SPEC_FILE = "spec.json"
INFO_FILE = "checkpoint.json"
TRAINING_STATE_FILE = "training_state.pt"  # optimizer, schedule, sampler, RNG: what a resume needs


def checkpoint_name(epoch: int) -> str:
    """The directory name of an epoch's checkpoint (zero-padded so names sort by epoch)."""
    return f"checkpoint-epoch-{epoch:04d}"


def save_checkpoint(
    directory: str | Path,
    *,
    model: MultiTaskBase,
    config: Mapping[str, Any],
    spec: StudySpec,
    info: Mapping[str, Any],
    training_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint to ``directory`` (which must not exist yet); returns it.

    ``training_state`` (optimizer and scheduler states, the batch sampler, RNG states,
    counters) lets a trial continue from this checkpoint exactly where it was; it is
    written with ``torch.save`` and read back only by :func:`load_training_state`.

    Raises:
        FileExistsError: ``directory`` already exists.
    """
    final = Path(directory)
    if final.exists():
        raise FileExistsError(f"checkpoint directory {final} already exists")
    staging = final.with_name(final.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.trainable_state_dict().items()}
    save_file(tensors, str(staging / WEIGHTS_FILE))
    _write_json(staging / CONFIG_FILE, dict(config))
    _write_json(staging / SPEC_FILE, spec.to_dict())
    _write_json(staging / INFO_FILE, {"format_version": FORMAT_VERSION, **info})
    if training_state is not None:
        torch.save(dict(training_state), staging / TRAINING_STATE_FILE)
    os.replace(staging, final)
    return final


@dataclass
class LoadedCheckpoint:
    """A rebuilt trial model with everything it was trained with."""

    model: MultiTaskBase
    spec: StudySpec
    config: dict[str, Any]
    info: dict[str, Any]


def load_checkpoint(directory: str | Path, *, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model of a checkpoint (base model from ``spec.model``) in eval mode.

    Raises:
        ValueError: the directory is not a checkpoint, or its tensors do not fit the model.
    """
    folder = Path(directory)
    info, config, spec_data = _read_metadata(folder)
    spec = parse_spec(spec_data)
    model = build_model(
        spec.model, method=str(info.get("method", spec.method)), config=config, tasks=checkpoint_tasks(info),
        total_steps=int(info["total_steps"]), peml=spec.peml, pair_encoding=str(info.get("pair_encoding", "packed")),
    )
    load_weights(folder, model)
    model.to(device)
    model.eval()
    return LoadedCheckpoint(model=model, spec=spec, config=config, info=info)


def _read_metadata(folder: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A checkpoint's info, trial config and (unparsed) spec, after checking every file is there.

    Raises:
        ValueError: a file is missing or the format is not this version's.
    """
    missing = [n for n in (WEIGHTS_FILE, CONFIG_FILE, SPEC_FILE, INFO_FILE) if not (folder / n).is_file()]
    if missing:
        raise ValueError(f"{folder} is not a checkpoint: missing {', '.join(missing)}")
    info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
    if info.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{folder}: unsupported checkpoint format {info.get('format_version')!r}")
    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    return info, config, json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))


def load_weights(directory: str | Path, model: MultiTaskBase) -> None:
    """Load a checkpoint's trained tensors (LoRA, prefix, heads) into a model built for it.

    Raises:
        ValueError: the tensors do not fit the model.
    """
    model.load_trainable_state_dict(load_file(str(Path(directory) / WEIGHTS_FILE)))


def load_training_state(directory: str | Path) -> dict[str, Any]:
    """The training state a checkpoint was written with.

    Raises:
        ValueError: the checkpoint holds no training state (it cannot be resumed from).
    """
    path = Path(directory) / TRAINING_STATE_FILE
    if not path.is_file():
        raise ValueError(f"{directory} holds no training state to resume from")
    # Our own file, written by save_checkpoint: it pickles the sampler and RNG states.
    return dict(torch.load(path, map_location="cpu", weights_only=False))


def newest_resumable(directories: Iterable[str | Path], *, max_epoch: int | None = None) -> Path | None:
    """The checkpoint with the highest epoch (at most ``max_epoch``, if given) among
    ``directories`` that a trial can resume from, or None.

    ``max_epoch``: the last epoch whose report the service holds. A newer checkpoint can
    exist on disk whose report never arrived (the worker saved it, the control plane died
    before it heard); resuming from it would skip that epoch's report for good.

    A crash of the control plane can leave a trial's folder with a checkpoint copy cut
    short (Ray copies file by file) or without the checkpoint Tune last recorded (deleted
    by retention just before the crash); such folders are skipped, not resumed from. Every
    file is read once to prove it whole, which costs a few MB for LoRA-sized checkpoints.
    """
    best: tuple[int, Path] | None = None
    for directory in directories:
        folder = Path(directory)
        try:
            info, _, _ = _read_metadata(folder)
            load_file(str(folder / WEIGHTS_FILE))
            load_training_state(folder)
            epoch = int(info["epoch"])
        except Exception:  # noqa: BLE001 - any unreadable part makes the folder unusable
            continue
        if max_epoch is not None and epoch > max_epoch:
            continue
        if best is None or epoch > best[0]:
            best = (epoch, folder)
    return None if best is None else best[1]


def resumable_beside(recorded: str | Path, *, max_epoch: int | None = None) -> Path | None:
    """The newest complete checkpoint in the trial folder of ``recorded`` (a checkpoint
    Tune recorded and that may be gone): Ray names a trial's checkpoints ``checkpoint_*``
    side by side. ``max_epoch`` as in :func:`newest_resumable`."""
    return newest_resumable(sorted(Path(recorded).parent.glob("checkpoint_*")), max_epoch=max_epoch)


def checkpoint_tasks(info: Mapping[str, Any]) -> list[TaskInfo]:
    """The tasks of a checkpoint's ``checkpoint.json``, in training order."""
    if "tasks" in info:
        return [TaskInfo.from_dict(task) for task in info["tasks"]]
    # The first format kept only {name: {kind, labels, metrics}} under "heads".
    return [TaskInfo.from_dict(head, name=name) for name, head in info["heads"].items()]


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
