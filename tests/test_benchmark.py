"""The strategy benchmark in a small configuration (the full one is a benchmark, see bench/README.md)."""

import json

import numpy as np

from loop.__main__ import main
from loop.benchmark import curve_metrics
from tests.conftest import SHARED_DATA


def test_curve_metrics_known_answers():
    labels = np.array([10, 20, 30, 40, 100])
    accuracy = np.array([0.5, 0.7, 0.8, 0.9, 0.95])
    m = curve_metrics(labels, accuracy, n_classes=10, full=1.0)
    assert m["acc_at_1pc"] == 0.5 and m["acc_at_3pc"] == 0.8 and m["acc_at_10pc"] == 0.95
    assert m["labels_to_90"] == 40 and m["labels_to_95"] == 100
    assert curve_metrics(labels, accuracy, 10, full=1.2)["labels_to_95"] is None
    assert 0.5 < m["aulc"] < 0.95


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
                                               "labels_to_90", "labels_to_95"}
    assert (tmp_path / "out" / "strategies-demo.png").stat().st_size > 10_000
