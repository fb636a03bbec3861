"""Compares finished runs with the published numbers: a markdown table and per-epoch plots.

    python experiments/report.py --runs=runs/cifar100 --output_dir=runs/cifar100/report

Reads every run directory (a folder holding `metrics.json` and `history.csv`,
as experiments/runner.py writes them) under each `--runs` path and writes to
`--output_dir`:

    report.md          pair, method, measured top-1, published top-1, difference
    accuracy.png       test accuracy per epoch, one line per run
    loss_<term>.png    each loss term per epoch, one line per run that has it

Published numbers are read from docs/reference_results.md.
"""

import csv
import json
import pathlib
import re

from absl import flags

from experiments import errors

REFERENCE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "reference_results.md"
# Column of docs/reference_results.md for a run: its method, or its mode without one.
COLUMNS = {
    "teacher": "teacher", "student": "student alone",
    "kd": "KD", "fitnet": "FitNet", "at": "AT", "crd": "CRD", "dkd": "DKD",
}
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)")


def read_reference(path=REFERENCE):
    """Parses the pair tables of docs/reference_results.md.

    Args:
        path: The markdown file.

    Returns:
        Dict `{(teacher, student): {column: top-1 % or None}}`.
    """
    table = {}
    header = None
    for line in pathlib.Path(path).read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|"):
            header = None
        elif cells[0] == "teacher -> student":
            header = cells
        elif header and "->" in cells[0]:
            teacher, student = (name.strip() for name in cells[0].split("->"))
            table[(teacher, student)] = {
                column: float(m.group(1)) if (m := _NUMBER.match(cell)) else None
                for column, cell in zip(header[1:], cells[1:])
            }
    return table


def find_runs(paths):
    """Run directories (holding metrics.json) at or under `paths`, sorted."""
    found = set()
    for path in map(pathlib.Path, paths):
        found.update(p.parent for p in path.rglob("metrics.json"))
    return sorted(found)


def read_run(run_dir):
    """Reads one run directory.

    Returns:
        Dict with `name`, `config`, `metrics` and `history` (`{column: [values
        per epoch]}`, the last row of each epoch when an epoch was repeated).
    """
    run_dir = pathlib.Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = {}
    history_file = run_dir / "history.csv"
    if history_file.exists():
        with open(history_file, newline="") as file:
            for row in csv.DictReader(file):
                rows[int(row["epoch"])] = row
    columns = sorted({key for row in rows.values() for key in row if key != "epoch"})
    history = {
        column: [float(rows[e][column]) if rows[e].get(column) else None for e in sorted(rows)]
        for column in columns
    }
    return {
        "name": run_dir.name, "config": metrics["config"], "metrics": metrics,
        "history": history,
    }


def describe(run):
    """The `(pair, method)` of a run: `("resnet32x4 -> resnet8x4", "kd")`.

    A teacher of any architecture (`--teacher` empty) is named by its file.
    """
    config = run["config"]
    if config["mode"] == "distill":
        teacher = config["teacher"] or config["teacher_weights"]
        return f"{teacher} -> {config['student']}", config["method"]
    model = config["teacher"] if config["mode"] == "teacher" else config["student"]
    return model, config["mode"]


def published(run, reference):
    """The published top-1 (%) for the run's pair and method, or None."""
    config = run["config"]
    column = COLUMNS.get(config["method"] if config["mode"] == "distill" else config["mode"])
    if config["mode"] == "distill":
        return reference.get((config["teacher"], config["student"]), {}).get(column)
    # A teacher's (or a student alone's) number is the same in every pair that has it.
    position = 0 if config["mode"] == "teacher" else 1
    model, _ = describe(run)
    values = [row.get(column) for pair, row in reference.items() if pair[position] == model]
    return next((v for v in values if v is not None), None)


def markdown_table(runs, reference):
    """The comparison table as markdown text."""
    lines = [
        "| run | pair | method | measured top-1 (%) | published top-1 (%) | difference |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        pair, method = describe(run)
        measured = 100.0 * run["metrics"]["test_accuracy"]
        reference_value = published(run, reference)
        ref_text = "n/a" if reference_value is None else f"{reference_value:.2f}"
        diff = "n/a" if reference_value is None else f"{measured - reference_value:+.2f}"
        cells = (run["name"], pair, method, f"{measured:.2f}", ref_text, diff)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(runs, column, title, path):
    """Writes a PNG of `column` per epoch, one line per run that logged it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    for run in runs:
        values = run["history"].get(column)
        if values:
            label = " ".join(describe(run)[::-1]) + f" ({run['name']})"
            axes.plot(range(1, len(values) + 1), values, label=label)
    axes.set_xlabel("epoch")
    axes.set_ylabel(column)
    axes.set_title(title)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def write_report(run_dirs, output_dir, reference_path=REFERENCE):
    """Writes report.md, accuracy.png and one loss_<term>.png per loss term.

    Args:
        run_dirs: Run directories or folders holding them.
        output_dir: Where the report is written.
        reference_path: The published-results markdown file.

    Returns:
        The list of files written.

    Raises:
        errors.UsageError: When no run directory is found.
    """
    runs = [read_run(d) for d in find_runs(run_dirs)]
    if not runs:
        raise errors.UsageError(
            f"--runs={','.join(map(str, run_dirs))!r} holds no run directory (a folder with "
            "metrics.json); point it at experiments/runner.py output directories."
        )
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = [output_dir / "report.md"]
    written[0].write_text(markdown_table(runs, read_reference(reference_path)))
    plot(runs, "val_accuracy", "test accuracy per epoch", output_dir / "accuracy.png")
    written.append(output_dir / "accuracy.png")
    terms = sorted({c for run in runs for c in run["history"] if c.startswith("loss")})
    for term in terms:
        written.append(output_dir / f"{term}.png")
        plot(runs, term, f"{term} per epoch (training)", written[-1])
    return written


def main(argv):
    del argv
    for path in write_report(FLAGS.runs, FLAGS.output_dir):
        print(path)


if __name__ == "__main__":
    flags.DEFINE_list("runs", ["runs"], "Run directories, or folders holding them.")
    flags.DEFINE_string("output_dir", "runs/report", "Where report.md and the plots go.")
    FLAGS = flags.FLAGS
    errors.run_app(main)
