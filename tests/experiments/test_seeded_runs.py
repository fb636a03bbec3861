"""The seeded-run tables' machinery: resuming finished runs, mean and std, the 2-std rule."""

import json
import sys

import pytest

from experiments import seeded_runs


def test_verdict_counts_a_difference_only_beyond_twice_the_larger_std():
    base = (65.0, 0.3, 3)
    assert seeded_runs.verdict((65.7, 0.2, 3), base) == "better"  # 0.7 > 2 * 0.3
    assert seeded_runs.verdict((65.5, 0.2, 3), base) == "within noise"
    assert seeded_runs.verdict((64.0, 0.45, 3), base) == "worse"  # 1.0 > 2 * 0.45
    assert seeded_runs.verdict((64.0, 0.55, 3), base) == "within noise"
    assert seeded_runs.verdict((70.0, 0.0, 1), base) == "n/a"


def test_summarize_uses_the_sample_standard_deviation():
    mean, std, n = seeded_runs.summarize([64.0, 65.0, 66.0])
    assert (mean, n) == (65.0, 3) and std == pytest.approx(1.0)
    assert seeded_runs.summarize([61.5]) == (61.5, 0.0, 1)


def test_a_run_whose_metrics_exist_is_not_run_again(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5}))
    failing = [sys.executable, "-c", "raise SystemExit(1)"]
    assert seeded_runs.run(failing, tmp_path, threads=1) == {"test_accuracy": 0.5}
    assert seeded_runs.run_all({"done": (failing, tmp_path)}, parallel=2) == {
        "done": {"test_accuracy": 0.5}
    }
    assert not (tmp_path / "log.txt").exists()
    assert seeded_runs.finished(tmp_path / "missing") is None


def test_cells_and_comparison_words():
    assert seeded_runs.formatted((65.2, 0.2, 3)) == "65.20 ± 0.20 | 3"
    assert seeded_runs.compared((66.0, 0.1, 3), (65.0, 0.2, 3), "kd") == "better than kd"
    assert seeded_runs.compared((66.0, 0.0, 1), (65.0, 0.2, 3), "kd") == (
        "too few seeds to compare with kd"
    )


def test_threads_sets_each_runs_tensorflow_threads(tmp_path):
    write = ("import json, os, sys; json.dump({'threads': os.environ['TF_NUM_INTRAOP_THREADS']},"
             " open(sys.argv[1], 'w'))")
    jobs = {seed: ([sys.executable, "-c", write, str(tmp_path / str(seed) / "metrics.json")],
                   tmp_path / str(seed)) for seed in (0, 1)}
    done = seeded_runs.run_all(jobs, parallel=1, threads=1)
    assert done == {0: {"threads": "1"}, 1: {"threads": "1"}}
    assert json.loads((tmp_path / "0" / seeded_runs.TIMING_FILE).read_text())["threads"] == 1
