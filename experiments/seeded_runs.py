"""Tables of seeded `experiments/cifar100.py` runs: running them, resuming, comparing means.

Shared by `ablation.py` and `defaults_study.py`. A run is one process writing its
outputs to its own directory; a directory whose `metrics.json` exists is a finished
run and is not run again, so an interrupted table resumes. `run_all` runs
`parallel` of them at a time, each on its share of the CPU threads, in the order
given. A table row's test top-1 is summarized as the mean and sample standard
deviation over its seeds, and two rows differ "beyond noise" when their means
differ by more than twice the larger of the two standard deviations.

The flags both tables take are defined here, once.
"""

import concurrent.futures
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "cifar100.py"
# What `run` writes next to a run's metrics: its wall time and threads (for cost estimates).
TIMING_FILE = "run_seconds.json"
# The transformer recipe of a ViT / Mixer student (AdamW, warm-up + cosine, label smoothing
# 0.1), scaled to a short budget; the CNN rows use the SGD reference recipe.
TRANSFORMER_RECIPE = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05,
                      "lr_schedule": "cosine", "lr_warmup_epochs": 0.1, "label_smoothing": 0.1}
flags.DEFINE_integer("steps_per_epoch", 0, "Steps per epoch of every run (0: one full pass).")
flags.DEFINE_integer("batch_size", 64, "Batch size of every run.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; every row runs once per seed.")
flags.DEFINE_integer("parallel", 2, "Runs at the same time, each on cores/parallel threads.")
flags.DEFINE_integer("threads", None, "Threads of each run (default: cores / runs at a time); "
                     "1 with --parallel=1 leaves a core free.", lower_bound=1)
flags.DEFINE_string("output_dir", "", "Where the runs and the table go (default: runs/<script>).")
flags.DEFINE_bool("report_only", False, "Report the finished runs without running any.")
flags.DEFINE_string("report", "", "Markdown file for the table (default: <output_dir>/table.md).")
FLAGS = flags.FLAGS
_PHRASES = {"better": "better than", "worse": "worse than", "within noise": "within noise of",
            "n/a": "too few seeds to compare with"}


def output_dir():
    """`--output_dir`, or `runs/<script name>` when it is empty."""
    return pathlib.Path(FLAGS.output_dir or pathlib.Path("runs") / pathlib.Path(sys.argv[0]).stem)


def write_report(table):
    """Writes `table` to `--report` (default `<output dir>/table.md`) and prints it."""
    path = pathlib.Path(FLAGS.report or output_dir() / "table.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table)
    print(table)


def command(args):
    """The `experiments/cifar100.py` command line of the flags `{name: value}`."""
    return [sys.executable, str(SCRIPT)] + [f"--{key}={value}" for key, value in args.items()]


def run(argv, out, threads):
    """Runs the command `argv` writing to `out` unless `out/metrics.json` exists.

    The process's output goes to `out/log.txt`; its wall time and thread count
    to `out/run_seconds.json`.

    Args:
        argv: The command line.
        out: The run's directory (a `pathlib.Path`).
        threads: TensorFlow intra- and inter-op threads of the process.

    Returns:
        The run's metrics dict.

    Raises:
        subprocess.CalledProcessError: When the process fails.
    """
    metrics_path = out / "metrics.json"
    if not metrics_path.exists():
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads),
               "TF_NUM_INTEROP_THREADS": str(threads)}
        start = time.monotonic()
        with open(out / "log.txt", "a") as log:
            subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
        timing = {"wall_seconds": time.monotonic() - start, "threads": threads}
        (out / TIMING_FILE).write_text(json.dumps(timing))
    return json.loads(metrics_path.read_text())


def run_all(jobs, parallel, threads=None):
    """Runs `jobs` `{key: (argv, out)}`, `parallel` at a time, in order; returns their metrics.

    A failed run is reported on stderr (naming its log) and left out of the result.

    Args:
        jobs: `{key: (argv, out)}`; a job whose `out/metrics.json` exists is not run.
        parallel: Jobs at a time.
        threads: TensorFlow threads of each job (default: cores / `parallel`).

    Returns:
        `{key: metrics dict}` of the runs that finished.
    """
    threads = threads or max(1, (os.cpu_count() or 1) // parallel)
    results = {}
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        futures = {key: pool.submit(run, argv, out, threads) for key, (argv, out) in jobs.items()}
        for key, future in futures.items():
            try:
                results[key] = future.result()
            except subprocess.CalledProcessError as error:
                print(f"run {key} failed ({error}); see {jobs[key][1] / 'log.txt'}",
                      file=sys.stderr)
    return results


def finished(out):
    """The metrics dict of the run in directory `out`, or None when it has not finished."""
    path = pathlib.Path(out) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def summarize(accuracies):
    """(mean, sample std or 0 for one value, count) of a list of accuracies in %."""
    mean = statistics.fmean(accuracies)
    std = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    return mean, std, len(accuracies)


def top1_stats(runs):
    """`summarize` of the test top-1 (in %) of a list of metrics dicts."""
    return summarize([100 * metrics["test_accuracy"] for metrics in runs])


def verdict(row, base):
    """"better" / "worse" when `row` differs from `base` beyond twice the larger std.

    Returns:
        "better", "worse", "within noise", or "n/a" when either has fewer than 2 seeds.
    """
    (mean, std, n), (base_mean, base_std, base_n) = row, base
    if n < 2 or base_n < 2:
        return "n/a"
    margin = 2 * max(std, base_std)
    if mean - base_mean > margin:
        return "better"
    if base_mean - mean > margin:
        return "worse"
    return "within noise"


def compared(row, base, base_name):
    """`row` against `base` in words: "better than kd", "within noise of kd", ..."""
    return f"{_PHRASES[verdict(row, base)]} {base_name}"


def formatted(stats):
    """`mean ± std | seeds` cells of a `summarize` tuple."""
    mean, std, n = stats
    return f"{mean:.2f} ± {std:.2f} | {n}"
