"""Helpers shared by the trainer, search-efficiency, quality and MiniLM-methods benchmarks (not a benchmark itself).

- :func:`setup_info`: the machine and library versions every result file records;
- :func:`write_results`: ``<name>.json`` + ``<name>.md`` into the output folder; :func:`publish`: those
  and the PNG at the end of a run, with the printed summary; :func:`save_figure`: a plot saved and closed;
- :func:`apply_defaults`: the ``--smoke`` or full budget for every option not given;
- :func:`task_specs` / :func:`study_spec`: specs over the shared GLUE/SuperGLUE folders;
- :func:`train_once`: one real :func:`workers.run_trial` in a throw-away work folder;
- :class:`FixedBatchTrainer`: one trial's model and optimizer built as :func:`workers.run_trial`
  builds them, stepping on one fixed batch (for step time and memory);
- :func:`run_search`: a searcher from :func:`make_searcher` driven sequentially with
  ``suggest`` / ``on_trial_complete`` (no Ray cluster, no API), one objective call per trial.

What is not particular to training (CPU model, package versions, writing the files, statistics,
matplotlib) comes from ``_common``, so that it exists once for all the benchmarks.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# ``x as x``: re-exported for the trainer benchmarks, which import all they use from this module.
from _common import RESULTS as RESULTS
from _common import ROOT, cpu_model, package_versions
from _common import mean_std as mean_std
from _common import publish as publish
from _common import pyplot as pyplot
from _common import refuse_unknown_keys as refuse_unknown_keys
from _common import save_figure as save_figure
from _common import write_json as write_json
from _common import write_results as write_results

DATA = ROOT.parent / "shared" / "data"
MODEL_CACHE = Path(tempfile.gettempdir()) / "searchsvc-bench-models"
PACKAGES = ("torch", "transformers", "peft", "ray", "optuna", "numpy")


# ---- setup and output ------------------------------------------------------------------


def setup_info() -> dict[str, Any]:
    """Machine, CPU count, torch threads and the versions of the libraries that matter."""
    import torch

    return {
        "machine": f"{platform.system()} {platform.machine()}, {cpu_model()}",
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": "cpu (no GPU on this machine)" if not torch.cuda.is_available() else torch.cuda.get_device_name(0),
        "python": platform.python_version(),
        "versions": package_versions(PACKAGES),
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def setup_markdown(setup: dict[str, Any]) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in setup["versions"].items())
    return [
        f"- machine: {setup['machine']}; {setup['cpus']} CPUs, {setup['torch_threads']} torch threads; {setup['device']}",
        f"- python {setup['python']}; {versions}",
        f"- started {setup['started_utc']} UTC",
    ]


def apply_defaults(args: argparse.Namespace, defaults: Mapping[str, Any]) -> None:
    """Fill every option left unset (None) from ``defaults`` (the script's ``SMOKE`` or ``FULL`` budget), so an
    option given on the command line wins over either budget."""
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


def minilm() -> Path:
    """The pretrained all-MiniLM-L6-v2, fetched once into a cache shared by every benchmark run."""
    from searchsvc.demo import minilm_path

    return minilm_path(MODEL_CACHE)


# ---- specs -------------------------------------------------------------------------------


def task_specs(names: Sequence[str], data: str | Path = DATA) -> list[dict[str, str]]:
    """Task entries of a spec for folders under ``data``, by absolute path (the trial may run elsewhere)."""
    root = Path(data).resolve()
    return [{"name": name, "path": str(root / name)} for name in names]


def study_spec(
    *,
    name: str,
    model: str | Path,
    tasks: list[dict[str, str]],
    method: str,
    train: dict[str, Any],
    search: dict[str, Any] | None = None,
    coordination: dict[str, Any] | None = None,
) -> Any:
    """A validated :class:`StudySpec` (through :func:`parse_spec`, as every spec is)."""
    from searchsvc.spec import parse_spec

    raw: dict[str, Any] = {"name": name, "model": str(model), "tasks": tasks, "method": method, "train": train}
    if search is not None:
        raw["search"] = search
    if coordination is not None:
        raw["coordination"] = coordination
    return parse_spec(raw)


def train_once(
    spec: Any, config: Mapping[str, Any], *, report: Callable[[dict[str, Any], str | None], None] | None = None
) -> dict[str, Any]:
    """One real trial (:func:`workers.run_trial`) of ``config`` in a work folder deleted afterwards, as a study's
    trial runs; ``report(metrics, checkpoint_dir)`` sees each epoch (ignored by default). Returns the best epoch's
    metrics. The config is copied, so the trial cannot change the caller's."""
    from workers import run_trial

    with tempfile.TemporaryDirectory() as work:
        return run_trial(dict(config), spec=spec, report=report or (lambda _m, _c: None), workdir=work)


# ---- one trial's training step on a fixed batch ------------------------------------------


class FixedBatchTrainer:
    """A trial's model, optimizer, schedule, backward and PEML hook, as ``run_trial`` builds
    them, and :meth:`step`: one training step (forward, backward, clip, optimizer, schedule,
    α step, zero_grad) on a batch fixed up front, the same batch for every method.

    The batch: ``rows_per_task`` rows of each task (for pair tasks the longest ones, so the
    batch is as wide as ``max_seq_len``), right-padded to exactly ``max_seq_len`` tokens.
    ``device`` and ``dtype`` (a torch dtype's name): where the whole model, trained parameters
    included, lives and in what precision (``bfloat16`` for a GPU run of a large decoder).
    """

    def __init__(self, spec: Any, config: dict[str, Any], *, rows_per_task: int, total_steps: int = 100_000,
                 device: str = "cpu", dtype: str = "float32") -> None:
        import torch
        from transformers import AutoTokenizer

        from workers.batching import Batch, prepare_tokenizer
        from workers.data import load_spec_tasks
        from workers.model import build_model
        from workers.peml import PemlTraining, searched_prefix
        from workers.step import StepBackward
        from workers.trainer import MAX_GRAD_NORM, build_optimizer, linear_warmup_decay
        from workers.trial import resolve_config, seed_everything

        tasks = load_spec_tasks(spec)
        names = [t.name for t in tasks]
        params = resolve_config(config, names)
        seed_everything(spec.train.seed)
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(spec.model))
        model = build_model(spec.model, method=spec.method, config=params, tasks=[t.info for t in tasks],
                            total_steps=total_steps, tokenizer=tokenizer, peml=spec.peml)
        model.remember_trainable()
        # On the device and in the dtype before any optimizer holds its parameters (as run_trial moves it).
        model.to(device=torch.device(device), dtype=getattr(torch, dtype))
        self.device = torch.device(device)
        max_len = spec.train.max_seq_len
        pad_id = int(tokenizer.pad_token_id)
        parts = []
        for i, task in enumerate(tasks):
            split = model.encode_split(tokenizer, i, task.train, max_seq_len=max_len)
            lengths = [len(ids) for ids in split.input_ids]
            order = sorted(range(len(lengths)), key=lambda r: -lengths[r]) if task.info.shape != "single" else range(len(lengths))
            parts.append((i, split, list(order)[:rows_per_task]))
        batch = model.collate(parts, pad_id=pad_id)
        width = batch.input_ids.shape[1]
        if width < max_len:  # pad to exactly max_seq_len, so the batch's shape is the same whatever rows were picked
            extra = max_len - width
            pad = lambda t, value: torch.nn.functional.pad(t, (0, extra), value=value)  # noqa: E731
            batch = Batch(input_ids=pad(batch.input_ids, pad_id), attention_mask=pad(batch.attention_mask, 0),
                          token_type_ids=None if batch.token_type_ids is None else pad(batch.token_type_ids, 0),
                          labels=batch.labels, segments=batch.segments)
        self.batch = batch.to(self.device)
        self.tokens = int(batch.input_ids.numel())  # tokens per step, padding included
        self.real_token_share = float(batch.attention_mask.float().mean())
        self.model = model
        self.peml = None
        if searched_prefix(model) is not None:
            self.peml = PemlTraining(model, spec.peml, arch_lr=float(params["arch_lr"]), max_epochs=1, pad_id=pad_id,
                                     device=self.device, entropy_lambda=float(params["entropy_lambda"]))
            self.peml.begin_epoch(1)
        arch = set(map(id, self.peml.prefix.arch_parameters())) if self.peml else set()
        self.optimizer = build_optimizer(model, lr=params["lr"], weight_decay=params["weight_decay"],
                                         head_lr_scale=params["head_lr_scale"], skip=arch)
        self.scheduler = linear_warmup_decay(self.optimizer, total_steps=total_steps, warmup_ratio=params["warmup_ratio"])
        self.backward = StepBackward(model, task_names=names, coordination=spec.coordination,
                                     grad_alpha=float(params["grad_alpha"]))
        self.trainable_params, self.total_params = model.parameter_counts()
        self._trainable = [p for p in model.parameters() if p.requires_grad]
        self._max_grad_norm = MAX_GRAD_NORM
        self.steps = 0
        model.train()

    def step(self) -> float:
        """One training step on the fixed batch; returns its wall time in seconds."""
        import torch

        started = time.perf_counter()
        losses = self.model.task_losses(self.batch)
        self.backward(losses, self.model.regularization())
        torch.nn.utils.clip_grad_norm_(self._trainable, self._max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.model.after_optimizer_step(self.steps)
        values = [float(x.detach()) for x in losses]  # the loop reads the losses every step too
        if self.peml is not None:
            self.peml.step_hook(step=self.steps, model=self.model, batch=self.batch, losses=values, optimizer=self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the step has ended when its kernels have
        return time.perf_counter() - started


# ---- sequential ask/tell search --------------------------------------------------------------


def run_search(
    spec: Any,
    objective: Callable[[dict[str, Any]], float],
    *,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``spec.search.num_trials`` trials one after the other through the study's searcher.

    The searcher is the one a study gets (:func:`make_searcher` over :func:`tune_space`),
    asked with ``suggest(trial_id)`` and told with ``on_trial_complete(trial_id, result)``.
    ``objective(config)`` returns the metric (maximised or minimised as the spec says); an
    exception marks the trial failed (the searcher is told ``error=True``). Returns one
    record per trial: ``config``, ``objective`` (None if failed), ``seconds`` and the
    cumulative ``elapsed`` seconds since the search started (the searcher's own time included).
    """
    import optuna

    from searchsvc.dispatch.searchers import make_searcher
    from searchsvc.dispatch.space import param_space
    from searchsvc.spec import OBJECTIVE_KEY

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one "study created" line per search is noise here
    search = spec.search
    searcher = make_searcher(search, max_concurrent=1)
    searcher.set_search_properties(OBJECTIVE_KEY, search.mode, param_space(search))
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    for number in range(search.num_trials):
        trial_id = f"trial_{number:04d}"
        config = searcher.suggest(trial_id)
        if not isinstance(config, dict):
            raise RuntimeError(f"searcher gave no configuration for trial {number} ({config!r})")
        trial_started = time.perf_counter()
        try:
            value: float | None = float(objective(dict(config)))
        except Exception as exc:  # noqa: BLE001 - a failed trial is a result, not the end of the search
            value = None
            searcher.on_trial_complete(trial_id, error=True)
            error = f"{type(exc).__name__}: {exc}"
        else:
            searcher.on_trial_complete(trial_id, result={OBJECTIVE_KEY: value})
            error = None
        record = {"number": number, "config": {k: _plain(v) for k, v in config.items()}, "objective": value,
                  "seconds": time.perf_counter() - trial_started, "elapsed": time.perf_counter() - started}
        if error:
            record["error"] = error
        records.append(record)
        if on_trial is not None:
            on_trial(record)
    return records


def best_so_far(values: Sequence[float | None], *, mode: str = "max") -> list[float]:
    """Running best of the trials' objectives (failed trials, None, keep the previous best; NaN before any)."""
    best = math.nan
    out = []
    for value in values:
        if value is not None and not math.isnan(value):
            if math.isnan(best) or (value > best if mode == "max" else value < best):
                best = value
        out.append(best)
    return out


def _plain(value: Any) -> Any:
    """numpy scalars to Python numbers, for JSON."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value
