import numpy as np
import pytest

from loop import autoaccept
from loop.autoaccept import apply_temperature, fit_temperature, threshold_for_precision
from loop.project import Paths, create_project
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
