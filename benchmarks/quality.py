"""The quality protocol: every method found by the same search budget, then retrained with ≥ 5 seeds.

Multi-task, low-data GLUE/SuperGLUE on the pretrained all-MiniLM-L6-v2: every method is
trained as ONE adapter over a suite's tasks, with ``--train`` sampled training rows per
task (the spec's ``subset: random``; the files are often sorted). Per method:

1. a TPE search (the study's own searcher, seeded, one trial at a time, no Ray) of
   ``--trials`` trials over the method's hyperparameters; each trial is scored by its
   ``objective`` (``avg_dev_score`` on the rows held out from training: ``train.selection:
   holdout``), never by the dev split;
2. the best configuration retrained with each of ``--seeds``; each retrain's best epoch is
   chosen on its held-out rows, and its scores on the FULL dev sets are what is reported.

Reference rows need no training: the frozen model's zero-shot cosine on regression pair
tasks (STS-B) and the ``head`` method (frozen encoder, trained heads): the floors.

Suites: ``main`` (sst2, stsb, wic) and ``second`` (rte, mrpc, cola), so no one tunes to
three tasks. Resumable and splittable: every search and every seed is a part on disk
(``<out>/quality_parts/<suite>/<method>/``); a part that ran with the same budget is not
run again, so ``--methods`` and ``--seeds`` split the protocol into runs of any size, and
the tables are rebuilt from all parts after each part (``--merge`` alone rebuilds them).

    python benchmarks/quality.py --suite main --methods head,lora --seeds 1,2,3,4,5
    python benchmarks/quality.py --merge --suite main     # tables from every part there is
    python benchmarks/quality.py --smoke                  # tiny budget, checks the pipeline

Results: ``benchmarks/results/quality.{json,md,png}`` (main) and ``quality_second.*``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from _quality_report import merge, parts_dir, plot, read_json, summarize, write_json
from _trainer_common import DATA, RESULTS, minilm, publish, run_search, setup_info, study_spec, task_specs, train_once

SUITES = {"main": ["sst2", "stsb", "wic"], "second": ["rte", "mrpc", "cola"]}
LR = {"type": "loguniform", "low": 1e-4, "high": 1e-2}
RANK = {"type": "int", "low": 4, "high": 16, "log": True}
PREFIX = {"type": "int", "low": 5, "high": 20}
# label -> (method, coordination, space[, train settings of this row only])
METHODS: dict[str, tuple[Any, ...]] = {
    "head": ("head", None, {"lr": {"type": "loguniform", "low": 1e-4, "high": 3e-2}}),
    "lora": ("lora", None, {"lr": LR, "lora_rank": RANK}),
    "adalora": ("adalora", None, {"lr": LR, "lora_rank": RANK}),
    "prefix": ("prefix", None, {"lr": LR, "prefix_length": PREFIX}),
    "lora+prefix": ("lora+prefix", None, {"lr": LR, "lora_rank": RANK, "prefix_length": PREFIX}),
    # LP-FT: LoRA after 2 epochs of fitting the heads on the starting model's features (train.probe_epochs)
    "lora+lpft": ("lora", None, {"lr": LR, "lora_rank": RANK}, {"probe_epochs": 2}),
    "peml": ("peml", None, {"lr": LR, "lora_rank": RANK, "prefix_length": PREFIX}),
    "peml+lpft": ("peml", None, {"lr": LR, "lora_rank": RANK, "prefix_length": PREFIX}, {"probe_epochs": 2}),
    "peml+coordination": ("peml", {"enabled": True, "every_k": 1}, {"lr": LR, "lora_rank": RANK, "prefix_length": PREFIX}),
    # The method as a search dimension: one study, the same budget, whichever method wins
    # (the spec's own method is then unused; each trial draws only its method's dimensions).
    "auto": ("lora", None, {"method": {"type": "choice", "values": ["lora", "lora+prefix", "peml"]}, "lr": LR,
                            "lora_rank": RANK, "prefix_length": PREFIX}),
}
# ~4 min per MiniLM training of 3 epochs on 2 quiet cores (LoRA; `head` about a third):
# a method's part (3 search trials + 5 seeds) is ~30 min, the whole main suite ~3.5 h.
FULL = {"train": 500, "trials": 3, "epochs": 3, "patience": 2, "seeds": "1,2,3,4,5", "max_seq_len": 128, "search_dev": 200}
SMOKE = {"train": 24, "trials": 1, "epochs": 1, "patience": 1, "seeds": "1,2", "max_seq_len": 48, "search_dev": 16, "dev": 16}
HOLDOUT = 0.2  # the spec's default train.holdout_fraction


def budget(args: argparse.Namespace) -> dict[str, Any]:
    """What makes two parts comparable: a part is reused only when its budget is this one."""
    return {"smoke": args.smoke, "suite": args.suite, "train": args.train, "trials": args.trials, "epochs": args.epochs,
            "patience": args.patience, "max_seq_len": args.max_seq_len, "search_dev": args.search_dev, "dev": args.dev,
            "holdout": HOLDOUT}


def make_spec(label: str, args: argparse.Namespace, *, seed: int, dev: int | None, search: dict[str, Any] | None = None) -> Any:
    method, coordination = METHODS[label][:2]
    overrides = METHODS[label][3] if len(METHODS[label]) > 3 else {}
    train = {"max_epochs": args.epochs, "patience": args.patience, "batch_size": 16, "max_seq_len": args.max_seq_len,
             "seed": seed, "max_train_examples": args.train, "max_dev_examples": dev, "subset": "random",
             "selection": "holdout", "holdout_fraction": HOLDOUT, "dev_scores": "best_epoch", **overrides}
    return study_spec(name=f"quality-{args.suite}-{label}", model=args.model, tasks=args.task_entries, method=method,
                      coordination=coordination, train=train, search=search)


def run_method_search(label: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The method's search part: reused when it ran with this budget, else run and written."""
    path = folder / label / "search.json"
    done = read_json(path)
    if done is not None and done["budget"] == budget(args):
        print(f"{label}: search done before (best {done['best_objective']:.4f}), reused", flush=True)
        return done
    space = METHODS[label][2]
    spec = make_spec(label, args, seed=0, dev=args.search_dev,
                     search={"algorithm": "tpe", "num_trials": args.trials, "seed": 0, "metric": "avg_dev_score",
                             "mode": "max", "space": space})
    started = time.perf_counter()

    def progress(record: dict[str, Any]) -> None:
        value = record["objective"]
        print(f"  {label} trial {record['number']}: {'failed' if value is None else f'{value:.4f}'} "
              f"{json.dumps(record['config'])} ({record['seconds']:.0f} s)", flush=True)

    trials = run_search(spec, lambda config: train_once(spec, config)["objective"], on_trial=progress)
    scored = [t for t in trials if t["objective"] is not None]
    if not scored:
        raise RuntimeError(f"{label}: every search trial failed: {trials[0].get('error')}")
    best = max(scored, key=lambda t: t["objective"])
    part = {"budget": budget(args), "space": space, "trials": trials, "best_config": best["config"],
            "best_objective": best["objective"], "seconds": time.perf_counter() - started}
    write_json(path, part)
    return part


def run_method_seed(label: str, seed: int, search: dict[str, Any], args: argparse.Namespace, folder: Path) -> None:
    """One retrain part of the best config: skipped when it ran with this budget and config."""
    path = folder / label / f"seed-{seed}.json"
    done = read_json(path)
    if done is not None and done["budget"] == search["budget"] and done["config"] == search["best_config"]:
        print(f"{label} seed {seed}: done before, reused", flush=True)
        return
    started = time.perf_counter()
    metrics = train_once(make_spec(label, args, seed=seed, dev=args.dev), search["best_config"])
    keep = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not k.startswith("nas/cell")}
    write_json(path, {"budget": search["budget"], "config": search["best_config"], "seed": seed,
                      "seconds": time.perf_counter() - started, "metrics": keep})
    print(f"{label} seed {seed}: avg_dev_score {metrics['avg_dev_score']:.4f} (epoch {metrics['epoch']}, "
          f"objective {metrics['objective']:.4f}, {time.perf_counter() - started:.0f} s)", flush=True)


def zero_shot_reference(args: argparse.Namespace, folder: Path) -> None:
    """The frozen model's cosine of the two texts' embeddings, Pearson on each regression pair task's dev set."""
    path = folder / "reference.json"
    done = read_json(path)
    if done is not None and done.pop("_budget", None) == budget(args):
        return
    import numpy as np
    import torch
    from scipy.stats import pearsonr
    from transformers import AutoTokenizer

    from searchsvc.spec import DEFAULT_HYPERPARAMETERS
    from workers.batching import prepare_tokenizer
    from workers.data import load_task
    from workers.model import build_model

    reference: dict[str, Any] = {}
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(args.model))
    spec = make_spec("head", args, seed=0, dev=args.dev)
    for task_spec in spec.tasks:
        task = load_task(task_spec, max_train=2, max_dev=args.dev)
        if task.kind != "regression" or task.shape == "single":
            continue
        model = build_model(str(args.model), method="head", config=DEFAULT_HYPERPARAMETERS, tasks=[task.info], total_steps=1,
                            pair_encoding="separate").eval()
        split = model.encode_split(tokenizer, 0, task.dev, max_seq_len=args.max_seq_len)
        with torch.no_grad():
            batch = model.collate([(0, split, list(range(len(split))))], pad_id=int(tokenizer.pad_token_id))
            pooled = model.encode(batch.input_ids, batch.attention_mask)
            cosine = torch.nn.functional.cosine_similarity(pooled[: len(split)], pooled[len(split):], dim=-1)
        reference[f"{task.name}/zero_shot_cosine"] = float(pearsonr(cosine.numpy(), np.asarray(split.labels))[0])
    write_json(path, {**reference, "_budget": budget(args)})


def publish_suite(args: argparse.Namespace) -> int:
    """Rebuild the suite's tables from every part on disk (every method, whichever run wrote it)."""
    settings = {**budget(args), "tasks": [e["name"] for e in args.task_entries],
                "methods": list(METHODS), "seeds": args.seed_list, "holdout": HOLDOUT, "model": "all-MiniLM-L6-v2"}
    results = {"setup": setup_info(), **merge(Path(args.out), args.suite, settings)}
    name = "quality" if args.suite == "main" else f"quality_{args.suite}"
    return publish(args.out, name, results, summarize, plot)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny budget, pipeline check")
    parser.add_argument("--suite", default="main", choices=sorted(SUITES))
    parser.add_argument("--tasks", help="override the suite's tasks (comma-separated folders under --data)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {', '.join(METHODS)}")
    parser.add_argument("--seeds", help="retrain seeds, comma-separated (default 1,2,3,4,5)")
    parser.add_argument("--merge", action="store_true", help="only rebuild the tables from the parts on disk")
    for option in ("train", "trials", "epochs", "patience", "max-seq-len", "search-dev", "dev"):
        parser.add_argument(f"--{option}", type=int)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    for key, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    labels = [m for m in args.methods.split(",") if m]
    unknown = [m for m in labels if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    args.seed_list = [int(s) for s in str(args.seeds).split(",") if s]
    args.task_entries = task_specs(args.tasks.split(",") if args.tasks else SUITES[args.suite], args.data)
    args.model = minilm()
    folder = parts_dir(Path(args.out), args.suite)
    if not args.merge:
        zero_shot_reference(args, folder)
        print(f"plan: {len(labels)} methods x ({args.trials} search trials + {len(args.seed_list)} retrains) of up to "
              f"{args.epochs} epochs on {', '.join(e['name'] for e in args.task_entries)}; parts already run are reused",
              flush=True)
        for label in labels:
            search = run_method_search(label, args, folder)
            for seed in args.seed_list:
                run_method_seed(label, seed, search, args, folder)
            publish_suite(args)  # after each method: a stopped run leaves its tables current
    return publish_suite(args)


if __name__ == "__main__":
    sys.exit(main())
