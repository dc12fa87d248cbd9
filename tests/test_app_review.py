"""The Review page and the Team page's suspected errors through Streamlit's AppTest, on a small
project whose annotator got some labels wrong (and one hold-out label): the lead sees the
suspects with what was given and what the model reads; Change stores a new label event (the old
one stays), Keep leaves the label, Flag withdraws it, each leaving the queue; a changed hold-out
label is said on the page and on the Curve page; an annotator sees only what a lead sent them;
markup in a class name or a path is shown as text; the Team page has each person's rates."""

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO
from tests.test_app import LEAD, texts, use_data_root
from tests.test_project import small_folder

ANN_A = "review-annotator-a-token-0123456789"
ANN_B = "review-annotator-b-token-0123456789"


@pytest.fixture
def review_project(tmp_path, monkeypatch, demo_project, shared_cache):
    """90 images of three animals, 27 of them hold-out; ann-a labeled the pool, every ninth label
    wrong, ann-b one hold-out image wrong; retrained and judged (no background trainer: the page
    functions are run without `app.open_demo`, so nothing retrains or re-judges under the test).
    Returns (project, {image id: the wrong class given})."""
    from loop import suspects
    from loop.people import create_token
    from loop.project import Paths, create_project
    from loop.settings import Settings
    from loop.store import Store

    folder = small_folder(demo_project.root, tmp_path / "imports" / "animals", per_class=30)
    project = create_project(Store(tmp_path / "juicer.db"), "small", folder,
                             Paths(tmp_path, cache_dir=shared_cache),
                             settings=Settings(seeds_per_class=3, holdout_fraction=0.3))
    store = project.store
    for name, role, token in (("lead", "lead", LEAD), ("ann-a", "annotator", ANN_A),
                              ("ann-b", "annotator", ANN_B)):
        create_token(store, name, role, token=token)
    names = project.class_names
    truth = {c["id"]: c["name"] for c in project.class_rows}
    labeled = store.current_labels(project.id)
    wrong, labels = {}, []
    for k, image in enumerate(i for i in store.images(project.id, split="pool")
                              if i["id"] not in labeled):
        given = truth[image["known_class_id"]]
        if k % 9 == 0:
            given = wrong[image["id"]] = names[(names.index(given) + 1) % len(names)]
        labels.append((image["id"], given))
    store.add_labels(project.id, labels, "ann-a", "human")
    held = store.images(project.id, split="holdout")[0]
    wrong[held["id"]] = names[(names.index(truth[held["known_class_id"]]) + 1) % len(names)]
    store.add_labels(project.id, [(held["id"], wrong[held["id"]])], "ann-b", "human")
    project.retrain()
    judged = suspects.judge(project)
    assert judged["version"] == 2 and judged["issues"] and judged["holdout_issues"]
    use_data_root(monkeypatch, tmp_path, shared_cache)
    return project, wrong


def run_page(call: str, token: str = LEAD) -> AppTest:
    """`call` (a page function: review_page, team_page, curve_page) as the person of `token`."""
    module = {"review_page": "review", "team_page": "team", "curve_page": "curve"}[call]
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r})\nimport streamlit as st\n"
              f"from pages.{module} import {call}\nfrom pages.common import sidebar_figures\n"
              f"st.session_state['token'] = {token!r}\n"
              f"try:\n    {call}()\nfinally:\n    sidebar_figures()\n")
    at = AppTest.from_string(script, default_timeout=300).run()
    assert not at.exception, at.exception
    return at


def queue(project, reviewer=None) -> list[dict]:
    from loop import suspects
    return suspects.review_queue(project, reviewer=reviewer, limit=None)


def card_button(at, kind: str, row: dict):
    """The card's button: kind "keep", "change" or "flag" (pages/review.py's keys)."""
    return at.button(key=f"{kind}-{row['image_id']}-{row['event_id']}")


def toasts(at) -> str:
    """The toasts as read on screen (without the markdown escapes of `pages.common.escape`)."""
    return " ".join(t.value for t in at.toast).replace("\\", "")


def test_the_lead_sees_each_suspect_with_what_was_given_and_what_the_model_reads(review_project):
    from pages.review import chance, giver

    project, wrong = review_project
    rows = queue(project)
    assert rows[0]["split"] == "holdout" and rows[0]["image_id"] in wrong
    assert len({r["image_id"] for r in rows} & set(wrong)) >= len(wrong) - 2   # most are found
    at = run_page("review_page")
    assert at.title[0].value == "Review: small"
    said = texts(at)
    assert f"Judged after version **2** of 2: **{len(rows)}** open suspect(s) in all" in said
    for row in rows:
        assert f"Label given: **{row['given']}**, by {giver(row)}." in said
        assert (f"The model's choice: **{row['predicted']}**, at **{chance(row['p_predicted'])}**; "
                f"it gives {row['given']} **{chance(row['p_given'])}**") in said
        assert card_button(at, "keep", row).label == f"Keep {row['given']}"
        assert card_button(at, "change", row).label == f"Change to {row['predicted']}"
    assert "hold-out: every curve point is scored against this label" in said
    assert said.count("hold-out: every curve point") == sum(r["split"] == "holdout" for r in rows)
    assert "training pool" in said
    assert "the imported folder" in said or all(r["annotator"] != "folder" for r in rows)


def test_change_keep_and_flag_each_store_a_review_and_leave_the_queue(review_project):
    project, wrong = review_project
    store = project.store
    pool = [r for r in queue(project) if r["split"] == "pool" and r["image_id"] in wrong]
    changed, kept, flagged = pool[:3]
    at = run_page("review_page")
    card_button(at, "change", changed).click().run()
    assert not at.exception
    events = store.label_events(project.id, changed["image_id"])
    assert [e["id"] for e in events][-2] == changed["event_id"]         # the old event stays
    assert events[-1]["source"] == "review" and events[-1]["annotator"] == "lead"
    assert store.current_labels(project.id)[changed["image_id"]] == store.class_id(
        project.id, changed["predicted"])
    assert f"Image {changed['image_id']}: label changed to {changed['predicted']}" in toasts(at)
    assert changed["image_id"] not in {r["image_id"] for r in queue(project)}
    assert not [b for b in at.button if b.key == f"change-{changed['image_id']}-{changed['event_id']}"]

    card_button(at, "keep", kept).click().run()
    assert store.current_labels(project.id)[kept["image_id"]] == store.class_id(project.id, kept["given"])
    assert store.label_events(project.id, kept["image_id"])[-1]["id"] == kept["event_id"]
    assert store.reviews(project.id)[-1]["decision"] == "kept"
    assert kept["image_id"] not in {r["image_id"] for r in queue(project)}

    card_button(at, "flag", flagged).click().run()
    assert flagged["image_id"] not in store.current_labels(project.id)       # withdrawn
    assert flagged["image_id"] in {f["image_id"] for f in store.flags(project.id)}
    assert flagged["image_id"] not in {r["image_id"] for r in queue(project)}
    assert [r["decision"] for r in store.reviews(project.id)] == ["changed", "kept", "flagged"]
    assert "hold-out label(s) changed by review" not in texts(at)        # only pool labels so far

    # Another class, from the card's selectbox: once (the box empties, a rerun does nothing more).
    other = next(r for r in queue(project) if r["split"] == "pool")
    third = next(c for c in project.class_names if c not in (other["given"], other["predicted"]))
    at.selectbox(key=f"other-{other['image_id']}-{other['event_id']}").select(third).run()
    assert store.current_labels(project.id)[other["image_id"]] == store.class_id(project.id, third)
    at.run()
    assert len(store.reviews(project.id)) == 4

    # A label given again after the page was drawn: the click is refused, nothing is stored.
    stale = next(r for r in queue(project) if r["split"] == "pool")
    at.run()
    store.add_labels(project.id, [(stale["image_id"], stale["given"])], "ann-a", "human")
    card_button(at, "change", stale).click().run()
    assert "changed since it was shown to you" in texts(at)
    assert store.label_events(project.id, stale["image_id"])[-1]["source"] == "human"
    assert len(store.reviews(project.id)) == 4


def test_a_changed_hold_out_label_is_said_and_the_curve_says_its_points_were_rescored(review_project):
    project, _ = review_project
    held = queue(project)[0]
    assert held["split"] == "holdout"
    at = run_page("review_page")
    card_button(at, "change", held).click().run()
    assert not at.exception
    evaluations = project.store.evaluations(project.id)
    assert all(e["rescored_at"] for e in evaluations)
    assert "re-scored" in toasts(at)
    assert "1 hold-out label(s) changed by review; stored evaluations re-scored" in texts(at)
    curve = run_page("curve_page")
    assert (f"{len(evaluations)} of the {len(evaluations)} point(s) were re-scored after hold-out "
            "labels were changed by review") in texts(curve)


def test_an_annotator_sees_only_what_a_lead_sent_them(review_project):
    project, _ = review_project
    store = project.store
    at = run_page("review_page", ANN_B)
    assert "Nothing is sent to you for review" in texts(at)
    assert not [b for b in at.button if str(b.key).startswith(("keep-", "change-"))]
    row = next(r for r in queue(project) if r["annotator"] == "ann-a")
    lead = run_page("review_page")
    send = lead.selectbox(key=f"send-{row['image_id']}-{row['event_id']}")
    assert "ann-a" not in send.options and "lead" not in send.options    # not the label's giver
    send.select("ann-b").run()
    assert not lead.exception
    assert [r["image_id"] for r in queue(project, "ann-b")] == [row["image_id"]]
    assert "sent to ann\\-b for review" in texts(lead)
    lead.run()                                          # the box emptied: sent once, nothing more
    at = run_page("review_page", ANN_B)
    assert "**1** open suspect(s) sent to you" in texts(at)
    assert [b.key for b in at.button if str(b.key).startswith("change-")] == [
        f"change-{row['image_id']}-{row['event_id']}"]
    assert not [s for s in at.selectbox if s.label == "Send to"]          # sending is the lead's
    card_button(at, "change", row).click().run()
    assert store.label_events(project.id, row["image_id"])[-1]["annotator"] == "ann-b"
    assert "Nothing is sent to you for review" in texts(at)
    assert "Nothing is sent to you for review" in texts(run_page("review_page", ANN_A))


def test_markup_in_a_class_name_or_a_path_is_shown_as_text(review_project):
    project, _ = review_project
    row = next(r for r in queue(project) if r["split"] == "pool")
    hostile_class, hostile_file = "<b>x</b>", "<img src=x onerror=alert(1)>**[y](z)**.png"
    given = project.store.class_id(project.id, row["given"])
    old = project.root / row["path"]
    new_path = f"{old.parent.name}/{hostile_file}"
    old.rename(project.root / new_path)
    with project.store.transaction():
        project.store.db.execute("UPDATE classes SET name = ? WHERE id = ?", [hostile_class, given])
        project.store.db.execute("UPDATE images SET path = ? WHERE id = ?", [new_path, row["image_id"]])
    at = run_page("review_page")
    markdown = " ".join(m.value for m in at.markdown)
    assert "&lt;b&gt;x&lt;/b&gt;" in markdown and "&lt;img src=x onerror=alert\\(1\\)&gt;" in markdown
    assert "\\*\\*\\[y\\]\\(z\\)\\*\\*" in markdown
    assert "<b>" not in markdown and "<img" not in markdown
    assert card_button(at, "keep", row).label == "Keep &lt;b&gt;x&lt;/b&gt;"
    assert at.get("image") and "cannot show" not in texts(at)     # the renamed file still shows


def test_team_page_has_each_persons_suspected_and_corrected_rates(review_project):
    from loop import suspects

    project, _ = review_project
    at = run_page("team_page")
    assert "Suspected errors per person" in [s.value for s in at.subheader]
    table = at.dataframe[-1].value
    assert list(table.columns) == ["person", "labels judged", "suspected", "suspected rate",
                                   "reviewed", "corrected by review", "corrected rate"]
    rows = {r["annotator"]: r for r in suspects.suspicion_by_annotator(project)}
    ann = table[table["person"] == "ann-a"].iloc[0]
    assert ann["labels judged"] == rows["ann-a"]["judged"] == 54
    assert ann["suspected"] == rows["ann-a"]["suspected"] > 0
    assert ann["suspected rate"].endswith("%") and ann["corrected rate"] == "-"
    assert "who" not in table.columns and "may need help" in texts(at)
