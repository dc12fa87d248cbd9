"""The subsampling study: its plan (fractions, sizes, subsets), a small study on the demo set, a
study on a few dozen human labels, and the command line end to end."""

import doctest
import json

import numpy as np
import pytest

import loop.study
from loop.__main__ import main
from loop.embeddings import EmbeddingCache
from loop.project import Paths, ProjectError, open_or_create_dataset_project
from loop.study import (RUN_COLUMNS, compare_backbones, comparison_report, draw_subset, labeled_pool,
                        parse_fractions, rank_key, run_study, study_figure, study_sizes,
                        write_outputs)
from tests.conftest import SHARED_DATA


def test_docstring_examples():
    result = doctest.testmod(loop.study)
    assert result.failed == 0 and result.attempted > 0


# -- the plan ---------------------------------------------------------------------------------

def test_fractions_parse_and_auto():
    assert parse_fractions("0.05,0.1, 0.25,0.5") == [0.05, 0.1, 0.25, 0.5]
    assert parse_fractions("auto") is None


@pytest.mark.parametrize("text, message", [
    ("0,0.1,0.2", "fraction 0 must lie strictly between 0 and 1"),
    ("-0.1,0.1,0.2", "fraction -0.1 must lie strictly between 0 and 1"),
    ("0.1,1,0.2", "fraction 1 must lie strictly between 0 and 1"),
    ("0.1,1.5", "fraction 1.5 must lie"),
    ("0.1,half", "fraction 'half' is not a number"),
    ("0.1,,0.2", "fraction '' is not a number"),
    ("nan", "fraction nan must lie"),
])
def test_bad_fractions_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        parse_fractions(text)


def test_sizes_from_fractions_and_automatic():
    assert study_sizes(1600, 10, [0.5, 0.05, 0.1, 0.25]) == [80, 160, 400, 800]
    # Below one label per class a size is raised to it; duplicates merge; the full pool is no subset.
    assert study_sizes(100, 10, [0.01, 0.05, 0.1, 0.3, 0.6]) == [10, 30, 60]
    auto = study_sizes(40, 10)
    assert auto[0] == 10 and auto[-1] == 20 and len(auto) >= 3 and auto == sorted(set(auto))
    with pytest.raises(ValueError, match="3 or more distinct subset sizes .* give 10, 20"):
        study_sizes(40, 10, [0.05, 0.1, 0.25, 0.5])
    with pytest.raises(ValueError, match="at least 24 labeled pool images for 10 classes"):
        study_sizes(23, 10)
    with pytest.raises(ValueError, match="not a number"):
        study_sizes(100, 2, ["0.1", 0.2, 0.3])


def test_subsets_hold_every_class_and_follow_the_seed():
    y = np.repeat(np.arange(5), [100, 50, 20, 5, 1])
    for size in (5, 6, 40):
        picked = draw_subset(y, size, np.random.default_rng(1))
        assert len(np.unique(picked)) == size and set(y[picked]) == set(range(5))
    same = draw_subset(y, 40, np.random.default_rng(7)), draw_subset(y, 40, np.random.default_rng(7))
    assert np.array_equal(*same)
    assert not np.array_equal(same[0], draw_subset(y, 40, np.random.default_rng(8)))
    with pytest.raises(ValueError, match="subset size 200"):
        draw_subset(y, 200, np.random.default_rng(0))


# -- a small study on the demo set ---------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_study(demo_project):
    progress = []
    result = run_study(demo_project, fractions=[0.05, 0.1, 0.25], repeats=2, target=0.95, seed=0,
                       on_progress=lambda done, total: progress.append((done, total)),
                       repeats_full=2, pool="known")
    return result, progress


def test_study_table_has_every_run(demo_study, demo_project):
    result, progress = demo_study
    assert result.pool == "known" and result.pool_size == 1600 and result.holdout_size == 400
    assert list(result.runs.columns) == RUN_COLUMNS and len(result.runs) == 3 * 2 + 2
    subsets = result.runs[result.runs["kind"] == "subset"]
    assert subsets.groupby("size")["repeat"].apply(sorted).to_dict() == {80: [0, 1], 160: [0, 1],
                                                                        400: [0, 1]}
    assert result.runs["accuracy"].between(0, 1).all()
    assert result.correct.shape == (8, 400)
    assert np.allclose(result.correct.mean(1), result.runs["accuracy"])
    # Repeats at one size train on different images, so they get different images right.
    assert not np.array_equal(result.correct[0], result.correct[1])
    assert progress[-1] == (8, 8) and [d for d, _ in progress] == list(range(1, 9))
    summary = result.summary()
    assert summary["n"].tolist() == [80, 160, 400, 1600] and summary["runs"].tolist() == [2, 2, 2, 2]
    assert summary["mean"].iloc[-1] > summary["mean"].iloc[0] + 0.05   # more labels help
    assert (summary["min"] <= summary["mean"]).all() and (summary["mean"] <= summary["max"]).all()


def test_forecast_is_checked_against_the_full_pool(demo_study):
    result, _ = demo_study
    mean, low, high = result.predicted_full
    assert 0.1 <= low <= mean <= high <= 1
    assert result.measured_full == pytest.approx(np.mean(result.measured_full_runs))
    assert len(result.measured_full_runs) == 2
    assert result.inside_interval == (low <= result.measured_full <= high)
    assert abs(mean - result.measured_full) < 0.1      # the demo curve is smooth; a loose sanity bound
    labels, labels_low, labels_high = result.labels_needed
    assert result.labels_needed.target == 0.95
    if result.labels_needed.reachable:
        assert labels_low <= labels and (labels_high is None or labels <= labels_high)
    figures = json.loads(json.dumps(result.figures()))
    assert {"sizes", "predicted_full", "measured_full", "inside_interval", "labels_needed"} <= set(figures)
    assert [s["n"] for s in figures["sizes"]] == [80, 160, 400]
    report = loop.study.report(result)
    assert "forecast at the full pool (1,600 labels)" in report and "measured at the full pool" in report
    assert "1,000,000" not in report


def test_labels_needed_is_said_within_the_project_pool(demo_study):
    """A target beyond what the project's images allow is said as what labeling them all would
    reach, never as "more than 1,000,000" labels of a project that has 1,600."""
    import dataclasses

    from loop.forecast import LabelsNeeded

    result, _ = demo_study
    beyond = dataclasses.replace(result, project_pool=1600, target=0.99,
                                 labels_needed=LabelsNeeded(0.99, 806_761.0, 2101.0, None, 0.995))
    text = beyond.needed_text()
    assert text.startswith("labeling all 1,600 pool images is forecast to reach about ")
    assert "99.0% would need more images than the project has" in text and "1,000,000" not in text
    inside = dataclasses.replace(result, project_pool=1600,
                                 labels_needed=LabelsNeeded(0.9, 900.0, 600.0, None, 0.97))
    assert inside.needed_text().startswith("about 900 labels to reach")
    assert "more than the 1,600 pool images" in inside.needed_text()
    assert dataclasses.replace(result, project_pool=None).needed_text() == str(result.labels_needed)


def test_same_seed_same_study(demo_study, demo_project):
    result, _ = demo_study
    again = run_study(demo_project, fractions=[0.05, 0.1, 0.25], repeats=2, target=0.95, seed=0,
                      repeats_full=2, pool="known")
    assert again.runs["accuracy"].tolist() == result.runs["accuracy"].tolist()
    assert again.predicted_full == result.predicted_full


def test_figure_and_files(demo_study, tmp_path):
    result, _ = demo_study
    fig = study_figure(result)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylim()[1] == 1.0
    assert any(line.get_label() == "forecast" for line in ax.get_lines())
    csv_path, png_path = write_outputs(result, tmp_path / "out")
    lines = csv_path.read_text().splitlines()
    assert lines[0] == ",".join(RUN_COLUMNS) and len(lines) == 1 + len(result.runs)
    assert png_path.stat().st_size > 10_000


@pytest.mark.parametrize("options, message", [
    ({"repeats": 0}, "repeats and repeats_full must be at least 1"),
    ({"target": 1.5}, "target accuracy must lie in"),
    ({"pool": "guess"}, "pool source 'guess' is not one of labels, known, auto"),
    ({"fractions": [0.1, 2.0]}, "fraction 2 must lie strictly between 0 and 1"),
])
def test_bad_study_arguments(demo_project, options, message):
    with pytest.raises(ValueError, match=message):
        run_study(demo_project, **{"pool": "known", **options})


# -- a project with a few dozen human labels, as the app's curve page sees it --------------------

def label_unlabeled(project, every: int, count: int) -> list[dict]:
    """Give `count` of the project's unlabeled pool images (every `every`-th) their folder class
    as a person's label ("ana"); returns the pool images that were unlabeled before."""
    labeled = set(project.store.current_labels(project.id, "pool"))
    pool = [i for i in project.store.images(project.id, split="pool") if i["id"] not in labeled]
    project.store.add_labels(project.id, [(i["id"], i["known_class_id"]) for i in pool[::every][:count]],
                             annotator="ana", source="human")
    return pool

@pytest.fixture(scope="module")
def few_labels(tmp_path_factory, shared_cache, demo_project):
    """The demo images as a project in its own data folder: the 10 seeds plus 30 labels people
    gave (and one auto-accepted label, which a study must not count)."""
    root = tmp_path_factory.mktemp("few")
    project = open_or_create_dataset_project("demo", Paths(root, cache_dir=shared_cache),
                                             data_dir=SHARED_DATA)
    pool = label_unlabeled(project, every=50, count=30)
    project.store.add_labels(project.id, [(pool[1]["id"], pool[1]["known_class_id"])],
                             annotator="model", source="auto")
    return root, project


def test_study_on_a_few_human_labels(few_labels):
    _, project = few_labels
    ids, X, y = labeled_pool(project, "labels")
    assert len(ids) == 40 and X.shape == (40, X.shape[1]) and len(np.unique(y)) == 10
    result = run_study(project, fractions=None, repeats=3, target=0.9, repeats_full=1)
    assert result.pool == "labels" and result.pool_size == 40
    sizes = sorted(result.runs.loc[result.runs["kind"] == "subset", "size"].unique())
    assert sizes[0] == 10 and sizes[-1] == 20 and len(sizes) >= 3
    assert len(result.measured_full_runs) == 1
    mean, low, high = result.predicted_full
    assert low <= mean <= high
    with pytest.raises(ValueError, match="3 or more distinct subset sizes of at least 10 labels"):
        run_study(project, fractions=[0.05, 0.1, 0.25, 0.5], pool="labels")


# -- which backbone or feature option gives the most per label -----------------------------------

@pytest.fixture(scope="module")
def two_options(tmp_path_factory, demo_project):
    """The few-labels project in a cache of its own holding two feature options: the real Lite0
    embeddings, and under '+flip' the same drowned in noise (an option that is clearly worse,
    so the comparison has a right answer; embedding the real flipped views would take a minute).
    Nothing is written to the shared cache."""
    root = tmp_path_factory.mktemp("options")
    cache_dir = root / "embeddings"
    hashes = sorted({i["hash"] for i in demo_project.store.images(demo_project.id)})
    real = demo_project.cache.get(hashes)
    EmbeddingCache(cache_dir, "efficientnet-lite0").add(hashes, real)
    noise = np.random.default_rng(0).normal(0, 3 * real.std(), real.shape).astype(np.float32)
    EmbeddingCache(cache_dir, "efficientnet-lite0+flip").add(hashes, real + noise)
    project = open_or_create_dataset_project("demo", Paths(root, cache_dir=cache_dir),
                                             data_dir=SHARED_DATA)
    label_unlabeled(project, every=20, count=90)
    return root, cache_dir, project


def test_embedded_backbones_are_those_with_every_image(two_options):
    _, cache_dir, project = two_options
    assert project.embedded_backbones() == ["efficientnet-lite0", "efficientnet-lite0+flip"]
    # An option with one image short is not comparable yet.
    hashes = [i["hash"] for i in project.store.images(project.id)]
    partial = EmbeddingCache(cache_dir, "efficientnet-lite0+blocks")
    partial.add(hashes[1:], np.zeros((len(hashes) - 1, 4), np.float32))
    assert "efficientnet-lite0+blocks" not in project.embedded_backbones()
    with pytest.raises(ValueError, match="unknown backbone 'resnet-9000'"):
        project.labeled("pool", backbone="resnet-9000")


def test_compare_backbones_ranks_the_better_features_first(two_options):
    _, _, project = two_options
    progress = []
    results = compare_backbones(project, target=0.8, repeats=2, repeats_full=1,
                                on_progress=lambda done, total: progress.append((done, total)))
    assert [r.backbone for r in results] == ["efficientnet-lite0", "efficientnet-lite0+flip"]
    real, noisy = results
    # Paired: the same labels, the same subsets, the same hold-out for each option.
    assert real.pool_size == noisy.pool_size >= 90 and real.holdout_size == noisy.holdout_size
    subsets = lambda r: r.runs.loc[r.runs["kind"] == "subset", ["size", "seed"]].values.tolist()
    assert subsets(real) == subsets(noisy)
    assert real.measured_full > noisy.measured_full + 0.1
    assert rank_key(real) < rank_key(noisy)
    assert progress[-1][0] == progress[-1][1] and len({t for _, t in progress}) == 1
    text = comparison_report(results)
    assert text.splitlines()[-1].startswith("most per label: efficientnet-lite0 (")
    assert "efficientnet-lite0+flip" in text and "target 80.0%" in text
    # Run alone, an option's study is the same as in the comparison.
    alone = run_study(project, None, 2, 0.8, repeats_full=1, backbone="efficientnet-lite0+flip")
    assert alone.measured_full == noisy.measured_full and alone.backbone == noisy.backbone


def test_command_line_compares_backbones(two_options, capsys, monkeypatch):
    root, cache_dir, _ = two_options
    monkeypatch.setenv("JUICER_CACHE", str(cache_dir))
    code = main(["study", "--data", str(root), "--dataset", "demo", "--repeats", "2",
                 "--repeats-full", "1", "--target", "0.8", "--json",
                 "--compare-backbones", "efficientnet-lite0+flip,efficientnet-lite0"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "most per label: efficientnet-lite0 (" in out
    figures = json.loads(out.strip().splitlines()[-1])
    assert list(figures) == ["efficientnet-lite0", "efficientnet-lite0+flip"]
    assert figures["efficientnet-lite0"]["backbone"] == "efficientnet-lite0"
    assert code == 0 and main(["study", "--data", str(root), "--dataset", "demo",
                               "--compare-backbones", "resnet-9000"]) == 2
    assert "unknown backbone 'resnet-9000'" in capsys.readouterr().err


# -- the command line -------------------------------------------------------------------------

def test_command_line_end_to_end_with_json(few_labels, shared_cache, tmp_path, capsys, monkeypatch):
    root, _ = few_labels
    monkeypatch.setenv("JUICER_CACHE", str(shared_cache))
    code = main(["study", "--data", str(root), "--dataset", "demo", "--fractions", "0.05,0.1,0.25",
                 "--repeats", "2", "--repeats-full", "1", "--target", "0.9",
                 "--out", str(tmp_path / "out"), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "mean acc" in out and "(full pool: the check)" in out and "labels needed:" in out
    figures = json.loads(out.strip().splitlines()[-1])
    assert set(figures) >= {"sizes", "predicted_full", "measured_full", "inside_interval",
                            "labels_needed"}
    assert [s["n"] for s in figures["sizes"]] == [80, 160, 400]
    assert all(s["runs"] == 2 for s in figures["sizes"])
    assert set(figures["predicted_full"]) >= {"mean", "low", "high"}
    p = figures["predicted_full"]
    assert p["low"] <= p["mean"] <= p["high"]
    assert set(figures["labels_needed"]) >= {"target", "labels", "low", "high", "reachable"}
    assert isinstance(figures["inside_interval"], bool)
    assert (tmp_path / "out" / "study.csv").exists() and (tmp_path / "out" / "study.png").exists()

    # The same project on the labels people gave, sizes chosen for so few (global --data works too).
    code = main(["--data", str(root), "study", "--dataset", "demo", "--pool", "labels",
                 "--fractions", "auto", "--repeats", "2", "--repeats-full", "1", "--json"])
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["pool_size"] == 40


def test_command_line_errors(few_labels, shared_cache, tmp_path, capsys, monkeypatch):
    root, _ = few_labels
    monkeypatch.setenv("JUICER_CACHE", str(shared_cache))
    assert main(["study", "--data", str(root), "--dataset", "imagenet"]) == 2
    err = capsys.readouterr().err
    assert "'imagenet' is neither a project" in err and "projects: demo" in err
    assert "demo, fashion-mnist, mnist5k" in err
    assert main(["study", "--data", str(tmp_path / "empty"), "--dataset", "birds"]) == 2
    assert "projects: none yet" in capsys.readouterr().err
    assert not (tmp_path / "empty").exists()        # a failed look-up leaves no database behind
    for fractions, message in (("0.1,1.2", "fraction 1.2 must lie strictly between 0 and 1"),
                               ("0,0.5", "fraction 0 must lie"),
                               ("a,b", "fraction 'a' is not a number")):
        # The fractions are checked first, before any project is opened.
        assert main(["study", "--data", str(root), "--dataset", "imagenet",
                     "--fractions", fractions]) == 2
        assert message in capsys.readouterr().err
    assert main(["study", "--data", str(root), "--dataset", "demo", "--pool", "labels"]) == 2
    assert "3 or more distinct subset sizes" in capsys.readouterr().err


def test_dataset_names_open_their_project(tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr(loop.study, "open_or_create_dataset_project",
                        lambda spec, paths, on_progress=None: opened.append((spec, paths.root)) or "p")
    assert loop.study.open_study_project("demo:50", tmp_path) == "p"
    assert opened == [("demo:50", tmp_path)]
    with pytest.raises(ProjectError, match="neither a project"):
        loop.study.open_study_project("demo-50", tmp_path)


def test_command_line_creates_a_dataset_project(tmp_path, shared_cache, capsys, monkeypatch):
    monkeypatch.setenv("JUICER_CACHE", str(shared_cache))
    code = main(["study", "--data", str(tmp_path), "--dataset", "demo", "--repeats", "2",
                 "--repeats-full", "1", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert json.loads(out.strip().splitlines()[-1])["pool_size"] == 1600


def test_command_line_takes_a_labeled_folder(tmp_path, shared_cache, capsys, monkeypatch):
    """`--dataset DIR`, as `replay` takes it: a folder with one sub-folder per class becomes a
    project of the data folder, made once and reopened (demo images: their embeddings are cached)."""
    import shutil

    from loop.datasets import resolve
    from loop.store import Store

    demo = resolve("demo", SHARED_DATA)
    folder = tmp_path / "my animals"
    for name in ("Bear", "Bird", "Cat"):
        (folder / name).mkdir(parents=True)
        for path in sorted((demo / name).iterdir())[:30]:
            shutil.copy(path, folder / name / path.name)
    monkeypatch.setenv("JUICER_CACHE", str(shared_cache))
    root = tmp_path / "data"
    command = ["study", "--data", str(root), "--dataset", str(folder), "--fractions", "auto",
               "--repeats", "2", "--repeats-full", "1", "--json"]
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "study of 'my_animals'" in out and "classes from their folders" in out and "3 classes" in out
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["pool_size"] == 72                       # 90 images, 18 of them the hold-out
    assert main(command) == 0 and "study of 'my_animals'" in capsys.readouterr().out
    assert [p["name"] for p in Store(root / "juicer.db").projects()] == ["my_animals"]


def test_command_line_names_a_missing_folder(tmp_path, capsys):
    assert main(["study", "--data", str(tmp_path / "empty"), "--dataset", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "is neither a project" in err and "nor a folder with one sub-folder per class" in err
