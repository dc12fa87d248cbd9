"""The noise benchmark end to end, tiny: three arms per seed, the JSON line the issue names, and
figures that are what the runs measured (not filled in)."""

import json

import pytest

from loop.__main__ import main
from tests.conftest import SHARED_DATA


@pytest.mark.slow
def test_benchmark_noise_prints_its_figures_and_one_json_line(tmp_path, monkeypatch, demo_project, capsys):
    monkeypatch.chdir(tmp_path)          # it merges its figures into bench/results/noise.json here
    rc = main(["--data", str(SHARED_DATA), "benchmark-noise", "--dataset", "demo", "--noise", "0.3",
               "--repeats", "1", "--budget", "30", "--review-every", "1", "--review-size", "3",
               "--out", str(tmp_path / "out"), "--json"])
    assert rc == 0
    out = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(out[-1])["demo"]
    assert set(figures["labels_to_95"]) == {"random", "default", "default_with_review"}
    assert 0 <= figures["precision_at_5pct"] <= 1 and 0 <= figures["recall_at_5pct"] <= 1
    stored = json.loads((tmp_path / "bench" / "results" / "noise.json").read_text())["demo"]
    run = stored["per_run"][0]
    assert run["found"]["wrong"] > 0 and run["found"]["top"] == 2        # 5% of 40 labels
    assert run["default_with_review"]["reviews"] > 0
    assert all(run[arm]["answers"] == 30 for arm in ("random", "default", "default_with_review"))
    assert any("top 5% suspects" in line for line in out)
