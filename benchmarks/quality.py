"""Quality against the paper's baselines: low-data multi-task GLUE/SuperGLUE with MiniLM.

Methods: ``lora``, ``prefix``, ``lora+prefix``, ``peml`` and ``peml`` with gradient
coordination, each trained as ONE multi-task adapter on the pretrained all-MiniLM-L6-v2
over the same tasks (default sst2 and stsb from GLUE, wic from SuperGLUE), with
``--train`` training rows per task (low data; cb has 250 in all), a fixed random sample
(the spec's ``subset: random``: the files are often sorted, STS-B's captions first).

For each method: a TPE search (the study's own searcher, :func:`make_searcher` with
``algorithm: tpe``, seeded, asked and told one trial at a time, no Ray) of ``--trials``
trials over the method's hyperparameters (``lr``; ``lora_rank`` where it has LoRA;
``prefix_length`` where it has a prefix), each trial a real :func:`workers.run_trial`
scored by ``avg_dev_score`` on ``--search-dev`` sampled dev rows per task; then the
best configuration is retrained with ``--seeds`` fresh training seeds (1, 2, ...; the search
used seed 0) and scored on the FULL dev sets. Per task: the primary metric of the
retrain's best epoch (PEML: its discrete model); table of mean ± std over seeds.

Every method gets the same budget (trials, epochs, data). Results are written after each
method, so a run stopped half-way keeps what it finished.

    python benchmarks/quality.py            # full: fits ~60 min on 2 CPU cores (see the printed plan)
    python benchmarks/quality.py --smoke    # tiny budget, < 90 s: checks the pipeline, not the quality

Results: benchmarks/results/quality.{json,md,png}. Data: ../shared/data (never copied).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from _trainer_common import (
    DATA,
    RESULTS,
    apply_defaults,
    mean_std,
    minilm,
    publish,
    pyplot,
    run_search,
    save_figure,
    setup_info,
    setup_markdown,
    study_spec,
    task_specs,
    train_once,
    write_results,
)

NAME = "quality"
# label -> (method, coordination)
METHODS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "lora": ("lora", None),
    "prefix": ("prefix", None),
    "lora+prefix": ("lora+prefix", None),
    "peml": ("peml", None),
    "peml+coordination": ("peml", {"enabled": True, "every_k": 1}),
}
LR = {"type": "loguniform", "low": 1e-4, "high": 1e-2}
RANK = {"type": "int", "low": 4, "high": 16, "log": True}
PREFIX = {"type": "int", "low": 5, "high": 20}
# Short-sequence tasks, so that 5 methods x (3 trials + 3 retrains) x 2 epochs fit an hour on 2 CPU cores: one
# batch holds rows of every task and is as wide as its longest row, so one long-text task (rte, cb, boolq:
# ~126 tokens) would make every step ~3x dearer than these (~36 tokens).
SUBSET = "random"  # how the row limits pick rows (the spec's train.subset)
FULL = {"tasks": "sst2,stsb,wic", "train": 500, "search_dev": 200, "trials": 3, "epochs": 2, "seeds": 3, "max_seq_len": 128}
SMOKE = {"tasks": "sst2,stsb,wic", "train": 16, "search_dev": 16, "trials": 1, "epochs": 1, "seeds": 1, "max_seq_len": 64,
         "dev": 16}


def space_of(method: str) -> dict[str, Any]:
    space: dict[str, Any] = {"lr": LR}
    if method in ("lora", "lora+prefix", "peml"):
        space["lora_rank"] = RANK
    if method in ("prefix", "lora+prefix", "peml"):
        space["prefix_length"] = PREFIX
    return space


def train_settings(args: argparse.Namespace, *, seed: int, dev: int | None) -> dict[str, Any]:
    return {"max_epochs": args.epochs, "patience": args.epochs, "batch_size": 16, "max_seq_len": args.max_seq_len,
            "seed": seed, "max_train_examples": args.train, "max_dev_examples": dev, "subset": SUBSET}


def one_method(label: str, args: argparse.Namespace, model: Path, tasks: list[dict[str, str]], bar: Any) -> dict[str, Any]:
    from tqdm import tqdm

    method, coordination = METHODS[label]
    started = time.perf_counter()
    search_spec = study_spec(name=f"quality-{label}", model=model, tasks=tasks, method=method, coordination=coordination,
                             train=train_settings(args, seed=0, dev=args.search_dev),
                             search={"algorithm": "tpe", "num_trials": args.trials, "seed": 0, "metric": "avg_dev_score",
                                     "mode": "max", "space": space_of(method)})

    def progress(record: dict[str, Any]) -> None:
        bar.update(1)
        value = record["objective"]
        tqdm.write(f"  {label} trial {record['number']}: {'failed' if value is None else f'{value:.4f}'} "
                   f"{json.dumps(record['config'])} ({record['seconds']:.0f} s)")

    trials = run_search(search_spec, lambda config: train_once(search_spec, config)["avg_dev_score"], on_trial=progress)
    scored = [t for t in trials if t["objective"] is not None]
    if not scored:
        raise RuntimeError(f"{label}: every search trial failed: {trials[0].get('error')}")
    best = max(scored, key=lambda t: t["objective"])
    retrains = []
    for seed in range(1, args.seeds + 1):
        spec = study_spec(name=f"quality-{label}-seed{seed}", model=model, tasks=tasks, method=method,
                          coordination=coordination, train=train_settings(args, seed=seed, dev=args.dev))
        run_started = time.perf_counter()
        metrics = train_once(spec, best["config"])
        bar.update(1)
        keep = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not k.startswith("nas/cell")}
        retrains.append({"seed": seed, "seconds": time.perf_counter() - run_started, "metrics": keep})
        tqdm.write(f"  {label} seed {seed}: avg_dev_score {metrics['avg_dev_score']:.4f} (epoch {metrics['epoch']})")
    names = [t["name"] for t in tasks]
    scores = {name: mean_std([r["metrics"][f"{name}/score"] for r in retrains]) for name in names}
    average = mean_std([r["metrics"]["avg_dev_score"] for r in retrains])
    return {
        "method": method, "coordination": coordination, "space": space_of(method), "search": trials,
        "best_config": best["config"], "best_search_objective": best["objective"], "retrains": retrains,
        "scores": {name: {"mean": m, "std": s} for name, (m, s) in scores.items()},
        "average": {"mean": average[0], "std": average[1]}, "wall_seconds": time.perf_counter() - started,
    }


def summarize(results: dict[str, Any]) -> str:
    s = results["settings"]
    tasks = s["tasks"]
    picked = "a fixed random sample of" if s.get("subset") == "random" else "the first"
    dev = "full sets" if s["dev"] is None else f"{picked} {s['dev']} rows per task"
    lines = [
        "# Quality: multi-task low-data GLUE/SuperGLUE, all-MiniLM-L6-v2" + (" (SMOKE: a pipeline check)" if s["smoke"] else ""),
        "",
        *setup_markdown(results["setup"]),
        f"- tasks: {', '.join(tasks)} (metrics: {', '.join(f'{t} {m}' for t, m in s['primary_metrics'].items())}); "
        f"{picked} {s['train']} training rows per task; dev: {dev} for the final scores, "
        f"{picked} {s['search_dev']} rows per task during the search",
        f"- budget per method: TPE {s['trials']} trials (seed 0) x {s['epochs']} epochs, then the best config retrained "
        f"with seeds {list(range(1, s['seeds'] + 1))}; batch 16, {s['max_seq_len']} tokens",
        "- score: best epoch of each retrain (selected on the same dev set), mean ± std over seeds",
        "",
        "| method | " + " | ".join(tasks) + " | average | best config | wall s |",
        "|---" * (len(tasks) + 4) + "|",
    ]
    for label, r in results["methods"].items():
        cells = [f"{r['scores'][t]['mean']:.4f} ± {r['scores'][t]['std']:.4f}" for t in tasks]
        config = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["best_config"].items())
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {r['average']['mean']:.4f} ± {r['average']['std']:.4f} | "
                     f"{config} | {r['wall_seconds']:.0f} |")
    if results.get("runs"):
        lines += ["", "Rows from more than one run (same budget; a method rerun after a change to it alone):"]
    for run in results.get("runs", []):
        lines.append(f"- {', '.join(run['methods'])}: run started {run['setup']['started_utc']} UTC (`{run['command']}`)")
    missing = [m for m in s["methods"] if m not in results["methods"]]
    if missing:
        lines += ["", f"Not finished: {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    tasks = results["settings"]["tasks"] + ["average"]
    labels = list(results["methods"])
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks) * len(labels) / 3), 4))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        r = results["methods"][label]
        entries = [r["scores"][t] for t in tasks[:-1]] + [r["average"]]
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(tasks))]
        ax.bar(xs, [e["mean"] for e in entries], width, yerr=[e["std"] for e in entries], capsize=2, label=label)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("dev score (mean ± std over seeds)")
    ax.set_title("Quality per task, MiniLM, low-data multi-task")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)


def main() -> int:
    from tqdm import tqdm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny budget, pipeline check (< 90 s)")
    parser.add_argument("--tasks", help="comma-separated task folders under --data")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {', '.join(METHODS)}")
    parser.add_argument("--train", type=int, help="training rows per task (a fixed random sample)")
    parser.add_argument("--dev", type=int, help="dev rows per task for the final scores (default: all)")
    parser.add_argument("--search-dev", type=int, help="dev rows per task during the search")
    parser.add_argument("--trials", type=int, help="TPE trials per method")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seeds", type=int, help="retrains of the best config (seeds 1..N)")
    parser.add_argument("--max-seq-len", type=int)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--keep-others", action="store_true",
                        help="keep the methods already in --out's quality.json that this run does not redo (same "
                             "budget required): rerun one method after a change to it alone")
    args = parser.parse_args()
    apply_defaults(args, SMOKE if args.smoke else FULL)
    labels = [m for m in args.methods.split(",") if m]
    unknown = [m for m in labels if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    names = [t for t in args.tasks.split(",") if t]
    tasks = task_specs(names, args.data)
    metas = {t["name"]: json.loads((Path(t["path"]) / "meta.json").read_text()) for t in tasks}
    primary = {n: (m["metric"][0] if isinstance(m["metric"], list) else m["metric"]) for n, m in metas.items()}
    model = minilm()
    out = Path(args.out)
    results: dict[str, Any] = {
        "setup": setup_info(),
        "settings": {"smoke": args.smoke, "model": "all-MiniLM-L6-v2", "tasks": names, "primary_metrics": primary,
                     "methods": labels, "train": args.train, "subset": SUBSET, "dev": args.dev, "search_dev": args.search_dev,
                     "trials": args.trials, "epochs": args.epochs, "seeds": args.seeds, "max_seq_len": args.max_seq_len,
                     "command": " ".join(["python", "benchmarks/quality.py", *sys.argv[1:]])},
        "methods": {},
    }
    if args.keep_others:
        keep_other_methods(results, out / f"{NAME}.json", redo=labels, parser=parser)
    runs = len(labels) * (args.trials + args.seeds)
    print(f"plan: {len(labels)} methods x ({args.trials} TPE trials + {args.seeds} retrains) = {runs} trainings of "
          f"{args.epochs} epoch(s) on {', '.join(names)} ({args.train} train rows per task), MiniLM, {args.max_seq_len} tokens")
    started = time.perf_counter()
    bar = tqdm(total=runs, desc="trainings", unit="run")
    for label in labels:
        tqdm.write(f"{label}: TPE search, then retrains")
        results["methods"][label] = one_method(label, args, model, tasks, bar)
        results["wall_seconds"] = time.perf_counter() - started
        write_results(out, NAME, results, summarize(results))  # after every method: a stopped run keeps its results
    bar.close()
    results["methods"] = {m: results["methods"][m] for m in METHODS if m in results["methods"]}  # the table's order
    return publish(out, NAME, results, summarize, plot)


BUDGET_KEYS = ("smoke", "model", "tasks", "train", "subset", "dev", "search_dev", "trials", "epochs", "seeds", "max_seq_len")


def keep_other_methods(results: dict[str, Any], previous_file: Path, *, redo: list[str], parser: argparse.ArgumentParser) -> None:
    """Carry over from an earlier run the methods this one does not redo, so their rows stay comparable.

    Refused (a parser error naming the field) when the earlier run had another budget: rows
    from different budgets in one table would compare nothing. Each run is listed under
    ``runs`` with the methods it produced.
    """
    if not previous_file.is_file():
        parser.error(f"--keep-others: no earlier results at {previous_file}")
    previous = json.loads(previous_file.read_text())
    for key in BUDGET_KEYS:
        if previous["settings"].get(key) != results["settings"][key]:
            parser.error(f"--keep-others: settings.{key} differs from the earlier run "
                         f"({previous['settings'].get(key)!r} there, {results['settings'][key]!r} now)")
    kept = {m: r for m, r in previous["methods"].items() if m not in redo}
    earlier = previous.get("runs") or [{"methods": list(previous["methods"]), "setup": previous["setup"],
                                        "command": previous["settings"].get("command")}]
    results["runs"] = [{**run, "methods": [m for m in run["methods"] if m in kept]} for run in earlier]
    results["runs"] = [run for run in results["runs"] if run["methods"]]
    results["runs"].append({"methods": list(redo), "setup": results["setup"], "command": results["settings"]["command"]})
    results["methods"] = kept
    results["settings"]["methods"] = [m for m in METHODS if m in kept or m in redo]


if __name__ == "__main__":
    sys.exit(main())
