"""Juicer in the browser: `streamlit run app.py` opens the demo project (creating it on first start).

A thin shell: every action is a call into `loop/` (sessions, evaluation, export); this file draws.
Pages: Label (annotators, keyboard first), Curve (leads: learning curve, per-class accuracy, the
hold-out gallery), Rules (auto-accept thresholds), Project (create, embed, export).
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pandas as pd
import streamlit as st

from loop import autoaccept
from loop.benchmark import strategy_versus_control
from loop.evaluation import risk_coverage
from loop.people import first_start
from loop.project import Paths, Project, create_project, open_or_create_dataset_project
from loop.replay import curve_rows, forecast_curve
from loop.settings import Settings
from loop.store import StorageError, StoreError
from loop.study import report, run_study, study_figure
from loop.trainer import trainer_for
from models.backbones import BACKBONES
from models.images import IMAGE_SUFFIXES
from pages.common import (allowed, data_dir, escape, keep_signed_in, paths, picture, project_named,
                          reload_project, sidebar, sign_in_page, signed_in, store)
from pages.label import label_page
from pages.team import team_page

DEFAULT_PROJECT = os.environ.get("JUICER_PROJECT", "demo")
DEFAULT_DATASET = os.environ.get("JUICER_DATASET", "demo")  # a bundled dataset name or labeled folder
LARGE_AUTO_ACCEPT = 50   # auto-accepting more images than this at once asks for confirmation


def open_demo() -> None:
    _open_demo(str(data_dir()))


@st.cache_resource(show_spinner=False)
def _open_demo(root: str) -> None:
    """Create the demo project on first start, with a progress bar while it embeds, and on an
    empty data root the first lead (its token printed once on the server's console)."""
    token = first_start(store(), os.environ.get("JUICER_LEAD_TOKEN"))
    if token and not os.environ.get("JUICER_LEAD_TOKEN"):
        port = st.get_option("server.port")
        print(f"\nJuicer: first start on data root '{root}'. The lead's token (shown once; make "
              f"more with `python -m loop token create NAME --role lead|annotator`):\n\n  {token}\n\n"
              f"Open http://localhost:{port}/?token={token}\n", file=sys.stderr, flush=True)
    bar = st.progress(0.0, text="Preparing the demo project (first start only)...")
    open_or_create_dataset_project(DEFAULT_DATASET, Paths(data_dir()), name=DEFAULT_PROJECT,
                                   on_progress=lambda done, total: bar.progress(
                                       done / max(total, 1), text=f"Embedding images: {done} / {total}"))
    bar.empty()
    # Every project's background trainer starts with the server: it mends what a killed server
    # left, retrains when labels exist past the newest version, submits stale drafts.
    for row in store().projects():
        trainer_for(project_named(row["name"]))


# -- Curve page ------------------------------------------------------------------------------

def curve_page() -> None:
    project = sidebar(allowed("lead_pages"))
    st.title(f"Learning curve: {project.name}")
    live_curve(project)
    gallery(project)


@st.fragment(run_every=5)
def live_curve(project: Project) -> None:
    rows = curve_rows(project)
    if not rows:
        st.info("No model yet: the curve starts with the first retrain.")
        return
    last = rows[-1]
    st.markdown(f"**{last['accuracy']:.1%}** hold-out accuracy with **{last['labels']}** labels "
                f"(model v{last['version']}, {len(rows)} retrains).")
    evaluation = project.store.evaluations(project.id)[-1]
    target = st.slider("Target accuracy", 0.5, 0.99, 0.9, 0.01, key="target")
    points = tuple((r["labels"], r["accuracy"]) for r in rows)
    forecast = fit_curve(str(data_dir()), project.name, len(rows))
    st.pyplot(curve_figure(points, forecast, target), clear_figure=True)
    if forecast is None:
        st.caption("The forecast appears once three retrains at different label counts are scored.")
    else:
        needed = forecast.labels_needed(target)
        st.markdown(f"**Forecast:** {needed.more_than(last['labels'])}." + (
            "" if needed.reachable else " More labels of the same kind will not get there; a "
            "better backbone or cleaner labels might."))
        st.caption(f"Forecast: bounded curve families weighed by how well they predicted later "
                   f"points on real learning curves ({forecast.priors.learned_on}); 80% interval from "
                   f"a bootstrap over retrains and hold-out images, calibrated on those curves "
                   f"(`python -m loop backtest-forecast --source lcdb`). Labels are those of the "
                   f"curve; hold-out accuracy on {evaluation['n_holdout']} images.")
    study_panel(project, target)
    per_class = pd.DataFrame({"class": list(evaluation["per_class"]),
                              "accuracy": list(evaluation["per_class"].values())})
    per_class = per_class.sort_values("accuracy")
    comparison = strategy_vs_control(str(data_dir()), project.name, rows[-1]["version"])
    if comparison:
        st.markdown(f"**Strategy against random, on this project's own labels:** a head trained on "
                    f"{comparison['labels']} of the strategy's picks scores "
                    f"{comparison['strategy_accuracy']:.1%} on the hold-out set; one trained on the "
                    f"{comparison['labels']} random control picks scores {comparison['control_accuracy']:.1%} "
                    f"(both with the {comparison['seeds']} seed labels).")
    else:
        st.caption("Strategy against random: shown once the random control slice (10% of queries) "
                   "holds 5 labels.")
    st.markdown("**Per-class accuracy** (the classes at the top need labels most)")
    st.dataframe(per_class, hide_index=True)


@st.cache_data(show_spinner=False, max_entries=16)
def strategy_vs_control(data_dir: str, name: str, version: int) -> dict | None:
    """Recomputed once per model version (it trains a few small heads)."""
    return strategy_versus_control(project_named(name))


@st.cache_resource(show_spinner=False, max_entries=16)
def fit_curve(data_dir: str, name: str, n_evaluations: int):
    """Refitted once per retrain (keyed by the number of evaluations; about 10 ms)."""
    try:
        return forecast_curve(project_named(name))
    except ValueError:
        return None


def study_panel(project: Project, target: float) -> None:
    """The subsampling study on the current labels: train on random subsets, forecast the full
    set, then train on it and compare, the way a lead checks a forecast before buying labels."""
    with st.expander("Check the forecast: subsampling study on the current labels"):
        st.caption("Trains the head on random subsets of the labels so far (5 repeats per size), fits "
                   "the forecaster to those, predicts the accuracy with all labels, then trains on all "
                   "of them and shows the measured value beside the prediction.")
        if st.button("Run the study", key="run_study"):
            try:
                with st.spinner("Training heads on subsets..."):
                    st.session_state["study"] = run_study(project, None, 5, target)
            except (ValueError, KeyError) as error:   # too few labels, embeddings missing: said plainly
                st.error(error.args[0] if isinstance(error, KeyError) else str(error))
        result = st.session_state.get("study")
        if result is not None and result.project == project.name:
            st.pyplot(study_figure(result), clear_figure=True)
            st.text(report(result))


def curve_figure(points: tuple, forecast, target: float):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, accuracy = map(np.array, zip(*points))
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.plot(labels, accuracy, "o", label="hold-out accuracy after each retrain")
    if forecast is not None:
        needed = forecast.labels_needed(target)
        end = max(labels.max() * 4, min(1.2 * (needed.labels or 0), labels.max() * 64))
        grid = np.geomspace(max(1, labels.min()), end, 200)
        mean, low, high = forecast.predict(grid)
        ax.plot(grid, mean, "-", label="forecast")
        ax.fill_between(grid, low, high, alpha=0.25, label="80% interval")
        if forecast.priors.labels_shift > 0:
            ax.plot(grid, forecast.labels_curve(grid), "--", color="C2", lw=1,
                    label="curve labels needed are read from")
        if needed.reachable and needed.labels > labels.max():
            ax.axvline(needed.labels, color="C2", ls=":", lw=1,
                       label=f"about {needed.labels:,.0f} labels for {target:.0%}")
        ax.set_xscale("log")
    ax.axhline(target, color="grey", ls=":", label=f"target {target:.0%}")
    ax.set(xlabel="labeled training images", ylabel="accuracy", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def gallery(project: Project) -> None:
    evaluations = project.store.evaluations(project.id)
    if not evaluations:
        return
    st.subheader("Hold-out gallery")
    versions = {f"v{e['version']} ({e['n_labels']} labels)": e for e in evaluations}
    labels = list(versions)
    a, b, c, d = st.columns(4)
    chosen = versions[a.selectbox("Model", labels, index=len(labels) - 1)]
    compare = b.selectbox("Compare with", ["-"] + labels)
    only = c.selectbox("True class", ["all"] + project.class_names)
    low, high = d.slider("Confidence", 0.0, 1.0, (0.0, 1.0))
    ids, classes, probs = project.store.holdout_predictions(chosen["id"])
    index_of = {cid: i for i, cid in enumerate(c["id"] for c in project.class_rows)}
    truth = np.array([index_of[c] for c in classes])
    predicted, confidence = probs.argmax(1), probs.max(1)
    keep = (confidence >= low) & (confidence <= high)
    if only != "all":
        keep &= truth == project.class_names.index(only)
    changed = None
    if compare != "-":
        other_ids, _, other_probs = project.store.holdout_predictions(versions[compare]["id"])
        other_correct = dict(zip(other_ids.tolist(), (other_probs.argmax(1) == truth).tolist()))
        changed = np.array([other_correct.get(i) != bool(p == t) for i, p, t in zip(ids, predicted, truth)])
        keep &= changed
        st.caption(f"Showing only the images whose result differs between {compare} and the chosen model.")
    wrong_first = np.argsort((predicted == truth)[keep], kind="stable")
    shown = np.flatnonzero(keep)[wrong_first][:48]
    st.caption(f"{int(keep.sum())} image(s) match; {int((predicted != truth)[keep].sum())} wrong "
               f"(shown first, marked ✗).")
    images = {i["id"]: i for i in project.store.images(project.id, split="holdout")}
    columns = st.columns(8)
    for k, row in enumerate(shown):
        with columns[k % 8]:
            data = picture(project, images[int(ids[row])]["path"], 96)
            if data:
                st.image(data, width=96)
            mark = "✓" if predicted[row] == truth[row] else "✗"
            st.caption(f"{mark} {project.class_names[predicted[row]]} {confidence[row]:.0%}"
                       + ("" if mark == "✓" else f" (is {project.class_names[truth[row]]})"))


# -- Rules page ------------------------------------------------------------------------------

def rules_page() -> None:
    project = sidebar(allowed("lead_pages"))
    st.title(f"Decision rules: {project.name}")
    evaluations = project.store.evaluations(project.id)
    if not evaluations:
        st.info("No model yet.")
        return
    latest = evaluations[-1]
    st.markdown(f"Model v{latest['version']}, trained on {latest['n_labels']} labels, scored on "
                f"{latest['n_holdout']} hold-out images.")
    for rule in latest["rules"][1:]:
        if rule["n_decided"]:
            st.markdown(f"- at **{rule['threshold']:g}**: auto-accepting would decide "
                        f"{rule['coverage']:.0%} of images, with {rule['errors_per_100']:.1f} errors "
                        f"per 100 accepted")
        else:
            st.markdown(f"- at **{rule['threshold']:g}**: no image is that confident yet")
    table = pd.DataFrame(latest["rules"])[["rule", "coverage", "accuracy", "errors_per_100", "n_decided"]]
    st.dataframe(table, hide_index=True)
    ids, classes, probs = project.store.holdout_predictions(latest["id"])
    index_of = {cid: i for i, cid in enumerate(c["id"] for c in project.class_rows)}
    coverage, risk = risk_coverage(np.array([index_of[c] for c in classes]), probs)
    st.markdown("**Risk–coverage** (error rate among the most confident images, as more are accepted)")
    st.line_chart(pd.DataFrame({"coverage": coverage, "error rate": risk}).set_index("coverage"), height=240)
    st.markdown("**As labels grew**")
    history = pd.DataFrame(curve_rows(project)).set_index("labels")
    st.line_chart(history[["coverage_0.9", "accuracy_0.9", "coverage_0.8", "accuracy_0.8"]], height=240)
    auto_accept_panel(project)


def auto_accept_panel(project: Project) -> None:
    st.subheader("Auto-accept")
    allowed("auto_accept")
    current = project.settings.auto_accept_precision
    st.caption("Probabilities are calibrated by temperature scaling fitted on the training labels "
               "(cross-validated); the threshold is the lowest one that meets the precision on the "
               "hold-out set. A share of what it would accept goes to people as an audit.")
    target = st.slider("Precision to promise", 0.80, 0.995, float(current or 0.95), 0.005)
    if st.button("Preview the threshold for this precision"):
        chosen = autoaccept.preview(project, target, project.settings.audit_share)
        if chosen["threshold"] is None:
            st.warning(f"No threshold reaches {target:.1%} precision on the hold-out set yet.")
        else:
            st.info(f"Threshold {chosen['threshold']:.3f} (temperature {chosen['temperature']:.2f}): it "
                    f"decides {chosen['holdout_coverage']:.0%} of hold-out images at "
                    f"{chosen['holdout_precision']:.1%} precision, and would label "
                    f"{chosen['would_accept']:,} pool image(s) now.")
    a, b, c = st.columns(3)
    if a.button("Turn on (after every retrain)" if not current else f"Change to {target:.1%}"):
        st.session_state["confirm_auto"] = ("on", target)
    if current and b.button("Turn off"):
        project.update_settings(auto_accept_precision=None)
        reload_project(project)
        st.rerun()
    if c.button("Auto-accept now"):
        st.session_state["confirm_auto"] = ("now", target)
    pending = st.session_state.get("confirm_auto")
    if pending:
        kind, chosen_target = pending
        preview = autoaccept.preview(project, chosen_target, project.settings.audit_share)
        count = preview["would_accept"]
        if preview["threshold"] is None:
            st.warning(f"No threshold reaches {chosen_target:.1%} precision yet: nothing would be "
                       "labeled.")
        if count <= LARGE_AUTO_ACCEPT or st.button(
                f"Yes, label {count:,} image(s) automatically at {chosen_target:.1%}", type="primary"):
            st.session_state.pop("confirm_auto")
            if kind == "on":
                project.update_settings(auto_accept_precision=chosen_target)
                reload_project(project)
            result = autoaccept.run(project, chosen_target, project.settings.audit_share)
            st.success(f"Accepted {result['accepted']:,} image(s), sent {result['audited']} to people "
                       "as an audit." + (" It runs again after every retrain." if kind == "on" else ""))
        else:
            st.warning(f"This would label **{count:,}** image(s) with no person looking at them "
                       f"(and send {preview['would_audit']} to people as an audit). Confirm below, "
                       "or move the slider.")
            if st.button("Cancel"):
                st.session_state.pop("confirm_auto")
                st.rerun()
    report = autoaccept.audit_report(project)
    accepted = autoaccept.auto_accepted(project)
    st.markdown(f"Auto-accept is **{'on at ' + format(current, '.1%') if current else 'off'}**. "
                f"{len(accepted)} label(s) in force were auto-accepted. Audit: "
                + (f"measured precision **{report['measured_precision']:.1%}** on {report['reviewed']} "
                   f"reviewed image(s), promised {report['promised_precision']:.1%}."
                   if report["reviewed"] else f"{report['audits']} image(s) waiting for people."))
    if accepted and st.button(f"Undo all {len(accepted)} auto-accepted label(s)"):
        st.success(f"Retracted {autoaccept.undo(project)} label(s).")


# -- Project page ----------------------------------------------------------------------------

def project_page() -> None:
    person = allowed("lead_pages")
    project = sidebar(person)
    st.title("Projects")
    status = project.status()
    st.markdown(f"**{escape(project.name)}**: {status['images']} images in `{status['root']}`, backbone "
                f"{status['backbone']}, classes {escape(', '.join(status['classes']))}.")
    if status["skipped"]:
        with st.expander(f"{len(status['skipped'])} file(s) skipped, and why"):
            st.dataframe(pd.DataFrame(status["skipped"], columns=["file", "reason"]), hide_index=True)
    export_panel(project)
    settings_panel(project)
    create_panel()
    people_panel(person)


# What a lead may change from the browser, with the words shown beside each.
EDITABLE = {
    "batch_size": ("Answers per batch (one retrain each)", int),
    "overlap_share": ("Share of labels also asked of a second person (0 to 1)", float),
    "lease_minutes": ("Minutes an image shown to someone stays theirs", float),
    "draft_max_age_seconds": ("Seconds before pending answers are submitted by the trainer", float),
    "max_file_mb": ("Largest file accepted, MB", float),
    "max_megapixels": ("Largest image accepted, megapixels", float),
}


def settings_panel(project: Project) -> None:
    allowed("settings")
    with st.expander("Settings of this project"):
        with st.form("settings"):
            values = {key: st.number_input(text, value=kind(getattr(project.settings, key)),
                                           key=f"setting-{key}")
                      for key, (text, kind) in EDITABLE.items()}
            strategy = st.text_input("Query strategy", project.settings.strategy)
            if st.form_submit_button("Save settings"):
                try:
                    changed = {k: EDITABLE[k][1](v) for k, v in values.items()}
                    project.update_settings(strategy=strategy.strip(), **changed)
                    reload_project(project)
                    st.success("Saved.")
                except (ValueError, TypeError) as exc:
                    st.error(f"Not saved: {exc}")


def export_panel(project: Project) -> None:
    from loop.export import to_csv, to_image_folder, to_json
    from loop.paths import export_folder

    allowed("export")
    a, b = st.columns(2)
    a.download_button("Labels as CSV", to_csv(project), f"{project.name}-labels.csv", "text/csv")
    b.download_button("Labels as JSON", to_json(project), f"{project.name}-labels.json", "application/json")
    with st.form("export"):
        name = st.text_input(f"Copy the labeled images, one folder per class, into a new folder "
                             f"under {data_dir() / 'exports'} (a folder name, not a path)")
        if st.form_submit_button("Export ImageFolder copy") and name:
            try:
                target = export_folder(data_dir(), name.strip())
                st.success(f"Copied {to_image_folder(project, target)} images to {target}.")
            except (ValueError, OSError) as exc:
                st.error(str(exc))


def create_panel() -> None:
    from loop.paths import import_roots, resolve_import_folder, save_uploads

    allowed("create_project")
    roots = import_roots(data_dir(), store())
    st.subheader("New project from a folder on the server, or from uploaded images")
    st.caption("Folders are imported only from under: " + ", ".join(f"`{r}`" for r in roots)
               + ". Someone with a shell on the server adds a folder with `python -m loop roots add PATH`.")
    with st.form("create"):
        name = st.text_input("Name (letters, digits, - and _)")
        folder = st.text_input("Folder (under one of those; a relative path is taken under the first)")
        uploads = st.file_uploader("Or images to upload (a flat, unlabeled set: give the class names)",
                                   type=sorted(s.lstrip(".") for s in IMAGE_SUFFIXES),
                                   accept_multiple_files=True)
        classes = st.text_input("Class names, comma-separated (only for a flat folder of unlabeled "
                                "images; leave empty when the folder has one sub-folder per class)")
        backbone = st.selectbox("Backbone", list(BACKBONES))
        seeds = st.slider("Seed labels per class", 1, 3, 1)
        if st.form_submit_button("Create and embed"):
            if not folder.strip() and not uploads:
                st.error("Choose a folder or upload images.")
                return
            uploaded = None
            try:
                settings = Settings(backbone=backbone, seeds_per_class=seeds)
                if uploads and not folder.strip():
                    where = uploaded = save_uploads(data_dir() / "uploads", name.strip(),
                                                    [(u.name, u.getvalue()) for u in uploads],
                                                    max_bytes=int(settings.max_file_mb * 2**20))
                else:
                    where = resolve_import_folder(folder.strip(), roots)
                bar = st.progress(0.0, text="Embedding...")
                created = create_project(
                    store(), name.strip(), where, paths(),
                    class_names=[c.strip() for c in classes.split(",") if c.strip()] or None,
                    settings=settings,
                    on_progress=lambda done, total: bar.progress(done / max(total, 1),
                                                                 text=f"Embedding {done} / {total}"))
                st.query_params["project"] = created.name
                st.success(f"Created {escape(created.name)}: {created.status()['images']} images.")
            except (ValueError, OSError) as exc:
                if uploaded is not None and not any(p["name"] == name.strip() for p in store().projects()):
                    shutil.rmtree(uploaded, ignore_errors=True)   # no project: the upload goes too
                st.error(str(exc))


def people_panel(person) -> None:
    from loop import people

    allowed("people")
    st.subheader("People")
    rows = store().people()
    st.dataframe(pd.DataFrame([{"name": p["name"], "role": p["role"],
                                "token": "revoked" if p["revoked_at"] else "active"} for p in rows]),
                 hide_index=True)
    with st.form("new-person"):
        a, b = st.columns(2)
        name = a.text_input("Name")
        role = b.selectbox("Role", people.ROLES[::-1])
        if st.form_submit_button("Create a token"):
            try:
                token = people.create_token(store(), name.strip(), role)
                st.success(f"Token for {escape(name.strip())} ({role}); it is shown this once, give it "
                           "to them privately:")
                st.code(token, language=None)
            except StoreError as exc:
                st.error(str(exc))
    active = [p["name"] for p in rows if not p["revoked_at"] and p["name"] != person.name]
    if active:
        with st.form("revoke"):
            name = st.selectbox("Revoke the token of", active)
            if st.form_submit_button("Revoke"):
                people.revoke(store(), name)
                st.success(f"Revoked {escape(name)}'s token: it stops working at once.")


def main() -> None:
    st.set_page_config(page_title="Juicer", layout="wide")
    open_demo()
    person = signed_in()
    keep_signed_in(person)
    if person is None:
        pages = [st.Page(sign_in_page, title="Sign in", default=True)]
    elif person.role == "lead":
        pages = [st.Page(label_page, title="Label", default=True),
                 st.Page(curve_page, title="Curve", url_path="curve"),
                 st.Page(rules_page, title="Rules", url_path="rules"),
                 st.Page(team_page, title="Team", url_path="team"),
                 st.Page(project_page, title="Project", url_path="project")]
    else:   # an annotator sees the Label page only
        pages = [st.Page(label_page, title="Label", default=True)]
    try:
        st.navigation(pages).run()
    except StorageError as exc:    # disk full, read-only, a deleted database: said once, plainly
        st.error(str(exc))


if __name__ == "__main__":  # `streamlit run app.py`; tests import the pages one by one
    main()
