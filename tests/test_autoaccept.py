import numpy as np
import pytest

from loop import autoaccept
from loop.autoaccept import apply_temperature, fit_temperature, threshold_for_precision
from loop.project import Paths, Project, create_project
from loop.queue import next_queries
from loop.settings import Settings
from loop.store import Store
from tests.test_project import small_folder


def test_temperature_undoes_overconfidence():
    rng = np.random.default_rng(1)
    y = (rng.random(3000) < 0.2).astype(int)
    calibrated = np.tile([0.8, 0.2], (3000, 1))
    assert fit_temperature(apply_temperature(calibrated, 0.5), y) == pytest.approx(2.0, rel=0.1)
    assert fit_temperature(calibrated, y) == pytest.approx(1.0, rel=0.1)


def test_threshold_meets_the_target_on_the_given_set():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(3) * 0.5, 500)
    y = np.array([rng.choice(3, p=p) for p in probs])      # calibrated by construction
    t = threshold_for_precision(y, probs, 0.9)
    covered = probs.max(1) >= t
    assert (probs.argmax(1) == y)[covered].mean() >= 0.9
    lower = probs.max(1)[probs.max(1) < t]
    if len(lower):                                          # the lowest such threshold
        assert (probs.argmax(1) == y)[probs.max(1) >= lower.max()].mean() < 0.9
    assert threshold_for_precision(y, np.full((500, 3), 1 / 3), 0.99) is None


def test_auto_accept_labels_pool_only_audits_and_undoes(tmp_path, demo_project, shared_cache):
    paths = Paths(tmp_path / "data", cache_dir=shared_cache)
    root = small_folder(demo_project.root, tmp_path / "animals", per_class=30)
    project = create_project(Store(paths.database), "a", root, paths,
                             settings=Settings(seeds_per_class=3, holdout_fraction=0.3))
    result = autoaccept.run(project, target_precision=0.9, audit_share=0.25, rng=np.random.default_rng(0))
    assert result["threshold"] is not None and 0 < result["temperature"] < 20
    accepted = autoaccept.auto_accepted(project)
    assert len(accepted) == result["accepted"] > 0
    holdout = {i["id"] for i in project.store.images(project.id, split="holdout")}
    assert not {e["image_id"] for e in accepted} & holdout                 # never the hold-out set
    assert all(e["source"] == "auto" and e["annotator"] == "auto-v1" for e in accepted)
    # Audits go to people first and are not labeled by the machine.
    audits = {r["image_id"] for r in project.store.db.query("SELECT image_id FROM audits")}
    assert len(audits) == result["audited"] > 0 and not audits & {e["image_id"] for e in accepted}
    queries = next_queries(project, 10)
    assert queries[0].origin == "audit" and queries[0].image_id in audits
    truth = {i["id"]: i["known_class_id"] for i in project.store.images(project.id)}
    project.store.add_labels(project.id, [(q.image_id, truth[q.image_id]) for q in queries if q.origin == "audit"],
                             "ana", "human")
    report = autoaccept.audit_report(project)
    assert report["reviewed"] >= 1 and report["promised_precision"] == 0.9
    assert 0 <= report["measured_precision"] <= 1
    # Undo: every auto label retracted by new events, nothing rewritten.
    events_before = len(project.store.label_events(project.id))
    assert autoaccept.undo(project) == len(accepted)
    assert autoaccept.auto_accepted(project) == []
    assert len(project.store.label_events(project.id)) == events_before + len(accepted)


# -- the auto-accept command: the Rules page's rules from a shell --------------------------------

@pytest.fixture
def cli_project(tmp_path, demo_project, shared_cache):
    paths = Paths(tmp_path / "data", cache_dir=shared_cache)
    root = small_folder(demo_project.root, tmp_path / "animals", per_class=30)
    project = create_project(Store(paths.database), "a", root, paths,
                             settings=Settings(seeds_per_class=3, holdout_fraction=0.3))
    return project, ["--data", str(tmp_path / "data"), "auto-accept", "a"]


def test_auto_accept_command_previews_asks_first_runs_and_undoes(cli_project, capsys, monkeypatch):
    from loop.__main__ import main

    project, argv = cli_project
    monkeypatch.setenv("JUICER_CACHE", str(project.paths.cache))
    labels_before = len(project.store.current_labels(project.id))
    assert main([*argv, "--precision", "0.9"]) == 0                # a preview changes nothing
    out = capsys.readouterr().out
    assert "would label" in out and "auto-accept is off; 0 auto-accepted label(s) in force" in out
    assert len(project.store.current_labels(project.id)) == labels_before
    would = autoaccept.preview(project, 0.9, project.settings.audit_share)["would_accept"]
    monkeypatch.setattr(autoaccept, "CONFIRM_ABOVE", max(would - 1, 0))   # this count is "large"
    assert would > 0
    assert main([*argv, "--precision", "0.9", "--now"]) == 1
    out = capsys.readouterr().out
    assert f"not done: this would label {would:,} image(s)" in out and "run again with --yes" in out
    assert len(project.store.current_labels(project.id)) == labels_before
    assert main([*argv, "--precision", "0.9", "--on", "--yes"]) == 0
    out = capsys.readouterr().out
    accepted = len(autoaccept.auto_accepted(project))
    assert accepted > 0 and f"accepted {accepted:,} image(s)" in out
    assert f"auto-accept is on at 90.0%; {accepted:,} auto-accepted label(s) in force" in out
    assert Project.open("a", project.paths.root).settings.auto_accept_precision == 0.9
    assert main([*argv, "--undo"]) == 0
    assert f"retracted {accepted:,}" in capsys.readouterr().out
    assert autoaccept.auto_accepted(project) == []
    assert main([*argv, "--off"]) == 0
    assert "auto-accept is off" in capsys.readouterr().out
    assert Project.open("a", project.paths.root).settings.auto_accept_precision is None


@pytest.mark.parametrize("extra, message", [
    ([], "--precision P is needed"),
    (["--precision", "1.5", "--now"], "--precision is a share in [0.5, 1)"),
    (["--precision", "0.9", "--now", "--off"], "choose one of --now, --on, --off, --undo"),
])
def test_auto_accept_command_refuses_bad_input(cli_project, capsys, extra, message):
    from loop.__main__ import main

    project, argv = cli_project
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err
    assert autoaccept.auto_accepted(project) == []


def test_auto_accept_command_names_an_unknown_project(tmp_path, capsys):
    from loop.__main__ import main

    assert main(["--data", str(tmp_path), "auto-accept", "nope", "--precision", "0.9"]) == 2
    assert "no project 'nope'" in capsys.readouterr().err
