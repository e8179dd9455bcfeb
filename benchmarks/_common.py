"""What every benchmark shares: the machine it ran on, the files it leaves, summary statistics, plots.

- :func:`cpu_model`, :func:`package_versions`: what a timing means little without;
- :func:`write_json` / :func:`write_results` / :func:`save_outputs`: ``<name>.json``, ``.md`` and ``.png`` in
  the output folder; :func:`publish` ends a run with them and the printed summary;
- :func:`add_output_options` / :func:`replot`: ``--out`` and ``--replot`` (rewrite the report from the JSON);
- :func:`percentile`, :func:`mean_std`; :func:`pyplot` / :func:`save_figure`: matplotlib on Agg;
- :func:`refuse_unknown_keys`: a summary refuses a results file carrying what its script never writes.

Not a benchmark itself; ``_control_plane`` and ``_trainer_common`` add what is particular to theirs.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what ``platform`` knows: timings mean little without it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions(packages: Sequence[str]) -> dict[str, str]:
    """Installed version of each package ("absent" where missing), so a result says what it measured."""
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


def write_json(out: str | Path, name: str, results: dict[str, Any]) -> Path:
    """Write ``<out>/<name>.json`` (anything not JSON as its ``str``); returns the folder. On its own for a
    caller that saves the numbers before building a report from them, so a failing report loses no run."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return folder


def write_results(out: str | Path, name: str, results: dict[str, Any], markdown: str) -> Path:
    """Write ``<out>/<name>.json`` (see :func:`write_json`) and ``<out>/<name>.md``; returns the folder."""
    folder = write_json(out, name, results)
    (folder / f"{name}.md").write_text(markdown)
    return folder


Summarize = Callable[[dict[str, Any]], str]
Plot = Callable[[dict[str, Any], Path], None]


def save_outputs(
    out: str | Path, name: str, results: dict[str, Any], summarize: Summarize, plot: Plot
) -> tuple[Path, str]:
    """``<name>.json``, ``.md`` (from ``summarize``) and ``.png`` (from ``plot``) into ``out``: the three files
    every benchmark leaves, written in one place. Returns the folder and the Markdown."""
    markdown = summarize(results)
    folder = write_results(out, name, results, markdown)
    plot(results, folder / f"{name}.png")
    return folder, markdown


def publish(out: str | Path, name: str, results: dict[str, Any], summarize: Summarize, plot: Plot) -> int:
    """The end of a run: write the files, print the report and where it went (and the run's ``wall_seconds``,
    where it has one); exit status 0."""
    folder, markdown = save_outputs(out, name, results, summarize, plot)
    print(markdown)
    took = f" in {results['wall_seconds']:.0f} s" if "wall_seconds" in results else ""
    print(f"wrote {folder / name}.json, .md, .png{took}")
    return 0


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--out`` and ``--replot``, which the benchmarks take alike."""
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--replot", action="store_true", help="only rewrite the .md and .png from the .json in --out")


def replot(out: str | Path, name: str, summarize: Summarize, plot: Plot) -> int:
    """``--replot``: rewrite ``<name>.md`` and ``.png`` from the ``.json`` already in ``out`` (a report's
    wording or a plot's layout changes without running the benchmark again); exit status 0."""
    results = json.loads((Path(out) / f"{name}.json").read_text())
    save_outputs(out, name, results, summarize, plot)
    return 0


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, *, dpi: int) -> None:
    """Lay out, save and close a figure (closed, so figures of a long run do not pile up in memory)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def refuse_unknown_keys(results: dict[str, Any], known: Sequence[str], *, script: str) -> None:
    """Raise ``ValueError`` naming the top-level keys of ``results`` that ``script`` does not write.

    Why: every figure in ``benchmarks/results`` must come from its script; a key the script never writes (a
    hand-added ``notes``, say) is text nobody measured, so the summary refuses it instead of printing it."""
    unknown = sorted(set(results) - set(known))
    if unknown:
        raise ValueError(f"{script}: results carry keys this script does not write: {', '.join(unknown)} "
                         f"(it writes {', '.join(known)}); rerun the benchmark instead of editing its results")


# ---- statistics ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100, linear interpolation); NaN for no values."""
    data = sorted(float(v) for v in values)
    if not data:
        return math.nan
    position = (len(data) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value, NaN for none)."""
    data = [float(v) for v in values]
    if not data:
        return math.nan, math.nan
    return statistics.fmean(data), (statistics.stdev(data) if len(data) > 1 else 0.0)
