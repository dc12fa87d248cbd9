"""The strategy benchmark in a small configuration (the full one is a benchmark, see bench/README.md)."""

import doctest
import json

import numpy as np
import pytest

import loop.benchmark
from loop.__main__ import main
from loop.benchmark import (
    censored_median,
    curve_metrics,
    labels_to_reach,
    ratio_text,
    smoothed,
)
from tests.conftest import SHARED_DATA


def test_docstring_examples():
    result = doctest.testmod(loop.benchmark)
    assert result.failed == 0 and result.attempted > 0


def test_curve_metrics_known_answers():
    labels = np.array([10, 20, 30, 40, 100])
    accuracy = np.array([0.5, 0.7, 0.8, 0.9, 0.95])
    m = curve_metrics(labels, accuracy, n_classes=10, full=1.0)
    assert m["acc_at_1pc"] == 0.5 and m["acc_at_3pc"] == 0.8 and m["acc_at_10pc"] == 0.95
    assert m["labels_to_90"] == 40 and m["labels_to_95"] == 100
    assert curve_metrics(labels, accuracy, 10, full=1.2)["labels_to_95"] is None
    assert 0.5 < m["aulc"] < 0.95


def test_a_lucky_spike_is_not_a_crossing():
    """One retrain that touches the target and falls back does not count: the smoothed curve
    must stay at or above it (a spike of random at 22 labels made the default look 2.35x worse)."""
    labels = np.arange(10, 110, 10)
    spiky = np.array([0.5, 0.96, 0.6, 0.62, 0.7, 0.8, 0.9, 0.95, 0.96, 0.97])
    assert labels_to_reach(labels, spiky, 0.9) == 70          # not 20, the spike
    assert labels_to_reach(labels[:-4], spiky[:-4], 0.9) is None     # never stays there


def test_smoothed_is_the_isotonic_fit_of_a_brute_force_search():
    """Against the min-max formula (fit at i = max over j <= i of min over k >= i of the mean of
    accuracy[j..k]), on random curves: exact, as pool-adjacent-violators is."""
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 17, 40):
        accuracy = rng.random(n)
        brute = [max(min(accuracy[j:k + 1].mean() for k in range(i, n)) for j in range(i + 1)) for i in range(n)]
        assert smoothed(accuracy) == pytest.approx(brute, abs=1e-12)
    assert smoothed(np.array([0.1, 0.2, 0.3])).tolist() == [0.1, 0.2, 0.3]


def test_runs_that_never_reach_are_censored_not_dropped():
    """'279' for one set was the mean of the 1 run of 3 that reached: a run that did not reach
    counts as more than the budget, and the median says so when most did not."""
    assert censored_median([279, None, None]) is None
    assert censored_median([279, 100, None]) == 279
    assert ratio_text(None, 200, 300) == "> 1.50x" and ratio_text(240, None, 300) == "< 0.80x"


def test_benchmark_command_small(tmp_path, demo_project, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)          # --json writes bench/results/ under the working folder
    code = main(["--data", str(SHARED_DATA), "benchmark-strategies", "--dataset", "demo",
                 "--strategies", "auto", "--repeats", "1", "--budget", "20", "--batch", "10",
                 "--labelers", "perfect", "--out", str(tmp_path / "out"), "--json"])
    assert code == 0
    out = capsys.readouterr().out
    assert "full-data accuracy" in out and "random" in out and "auto" in out
    figures = json.loads((tmp_path / "bench" / "results" / "strategies.json").read_text())
    assert set(figures["demo"]) == {"random", "auto", "default"}
    assert set(figures["demo"]["default"]) == {"acc_at_1pc", "acc_at_3pc", "acc_at_10pc", "aulc",
                                               "labels_to_90", "labels_to_95", "runs_reaching_90",
                                               "runs_reaching_95", "runs"}
    assert figures["demo"]["default"]["runs"] == 1
    assert "reached" in out and "1/1" in out or "0/1" in out
    assert (tmp_path / "out" / "strategies-demo.png").stat().st_size > 10_000


def test_output_files_are_named_from_the_dataset_not_its_path(tmp_path, capsys, monkeypatch):
    """`--dataset /data/sets/icons` wrote OUT/strategies-/data/sets/icons.png into nested folders."""
    from PIL import Image

    folder = tmp_path / "sets" / "icons"
    rng = np.random.default_rng(0)
    for k, name in enumerate(["dark", "light"]):
        (folder / name).mkdir(parents=True)
        for i in range(24):
            pixels = rng.integers(0, 90, (32, 32, 3)) + 150 * k
            Image.fromarray(pixels.astype("uint8")).save(folder / name / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    code = main(["--data", str(SHARED_DATA), "benchmark-strategies", "--dataset", str(folder),
                 "--strategies", "margin", "--repeats", "1", "--budget", "10", "--batch", "5",
                 "--labelers", "perfect", "--metric", "balanced", "--out", str(tmp_path / "out"),
                 "--json"])
    assert code == 0
    assert (tmp_path / "out" / "strategies-icons-balanced.png").is_file()
    figures = json.loads((tmp_path / "bench" / "results" / "strategies.json").read_text())
    assert set(figures) == {"icons/balanced", "_commands"}
    assert "balanced accuracy" in capsys.readouterr().out
