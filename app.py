"""Juicer in the browser: `streamlit run app.py` opens the demo project (creating it on first start).

A thin shell: every action is a call into `loop/` (sessions, evaluation, export); this file draws.
Pages: Label (annotators, keyboard first), Curve (leads: learning curve, per-class accuracy, the
hold-out gallery), Rules (auto-accept thresholds), Project (create, embed, export).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from loop import autoaccept
from loop.benchmark import strategy_versus_control
from loop.evaluation import risk_coverage
from loop.export import to_csv, to_image_folder, to_json
from loop.project import Paths, Project, create_project, open_or_create_dataset_project
from loop.replay import curve_rows, forecast_curve
from loop.session import LabelingSession
from loop.settings import Settings
from loop.store import Store, StoreError
from loop.study import report, run_study, study_figure
from loop.trainer import trainer_for
from models.backbones import BACKBONES
from models.images import IMAGE_SUFFIXES

DATA_DIR = Path(os.environ.get("JUICER_DATA", "data"))
DEFAULT_PROJECT = os.environ.get("JUICER_PROJECT", "demo")
DEFAULT_DATASET = os.environ.get("JUICER_DATASET", "demo")  # a bundled dataset name or labeled folder
KEYS = [str(k) for k in range(1, 10)] + ["0"]


def paths() -> Paths:
    return Paths(DATA_DIR)


def open_demo() -> None:
    _open_demo(str(DATA_DIR))


@st.cache_resource(show_spinner=False)
def _open_demo(data_dir: str) -> None:
    """Create the demo project on first start, with a progress bar while it embeds."""
    bar = st.progress(0.0, text="Preparing the demo project (first start only)...")
    open_or_create_dataset_project(DEFAULT_DATASET, Paths(Path(data_dir)), name=DEFAULT_PROJECT,
                                   on_progress=lambda done, total: bar.progress(
                                       done / max(total, 1), text=f"Embedding images: {done} / {total}"))
    bar.empty()


def project_named(name: str) -> Project:
    return _project(str(DATA_DIR), name)


@st.cache_resource(show_spinner=False)
def _project(data_dir: str, name: str) -> Project:
    """One Project object per data root and name in this server process."""
    root = Paths(Path(data_dir))
    return Project(Store(root.database), name, root)


@st.cache_data(max_entries=4096, show_spinner=False)
def picture(path: str, size: int) -> bytes:
    """An image scaled for display (small images are enlarged without blurring)."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        scale = size / max(img.size)
        resample = Image.NEAREST if scale > 2 else Image.BILINEAR
        img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))), resample)
        buffer = io.BytesIO()
        img.save(buffer, "PNG")
        return buffer.getvalue()


def sidebar() -> tuple[Project, str]:
    names = [p["name"] for p in Store(paths().database).projects()]
    chosen = st.query_params.get("project", DEFAULT_PROJECT)
    name = st.sidebar.selectbox("Project", names, index=names.index(chosen) if chosen in names else 0)
    st.query_params["project"] = name
    # The name lives in the address, so a refresh or a bookmark keeps it.
    annotator = st.sidebar.text_input("Your name (recorded with every label)",
                                      value=st.query_params.get("annotator", ""))
    if annotator.strip():
        st.query_params["annotator"] = annotator.strip()
    project = project_named(name)
    status = project.status()
    st.sidebar.metric("labeled (training)", status["labeled_pool"])
    st.sidebar.metric("model versions", status["model_versions"])
    st.sidebar.metric("hold-out accuracy",
                      "-" if status["accuracy"] is None else f"{status['accuracy']:.1%}")
    return project, annotator.strip()


# -- Label page ---------------------------------------------------------------------------------

def _act(session: LabelingSession, image_id: int, action: str, class_name: str | None = None) -> None:
    started = time.perf_counter()
    try:
        if action == "answer":
            if session.answer(image_id, class_name):
                st.session_state["notice"] = "Batch submitted; the model retrains in the background."
        elif action == "undo":
            undone = session.undo()
            st.session_state["notice"] = "Nothing to undo." if undone is None else "Undone."
        elif action == "submit":
            n = len(session.submit())
            st.session_state["notice"] = f"Submitted {n} label(s); retraining in the background."
    except StoreError as exc:
        st.session_state["notice"] = f"Not stored: {exc}"
    st.session_state["action_started"] = started


def _answer_other(session: LabelingSession, image_id: int) -> None:
    chosen = st.session_state.pop("other", None)
    if chosen:
        _act(session, image_id, "answer", chosen)


@st.fragment
def label_one(project: Project, annotator: str) -> None:
    session = LabelingSession(project, annotator, trainer_for(project))
    item = session.current()
    if item is None:
        st.success("Nothing left to label in this project.")
        return
    left, right = st.columns([2, 3])
    left.image(picture(str(project.root / item.path), 320), width=320)
    with right:
        if item.split == "holdout":
            st.markdown("**Hold-out image**: it scores the model and is never trained on, so "
                        "no suggestion is shown. Pick its class.")
        elif item.origin == "audit":
            st.markdown("**Audit image**: auto-accept would have labeled it; your answer measures "
                        "how often it is right, so no suggestion is shown. Pick its class.")
        elif item.suggestion:
            st.markdown(f"### {item.suggestion}  \n{item.confidence:.0%} confident, suggested by "
                        f"model v{item.model_version}")
        else:
            st.markdown("No model yet: pick the class.")
        st.button(f"Confirm {item.suggestion or ''} (Enter)", type="primary", shortcut="Enter",
                  disabled=item.suggestion is None, on_click=_act,
                  args=(session, item.image_id, "answer", item.suggestion), key="confirm")
        columns = st.columns(5)
        for k, name in enumerate(project.class_names[:len(KEYS)]):
            columns[k % 5].button(f"{KEYS[k]} {name}", shortcut=KEYS[k], on_click=_act,
                                  args=(session, item.image_id, "answer", name), key=f"class-{k}")
        if len(project.class_names) > len(KEYS):
            st.selectbox("Other class", project.class_names[len(KEYS):], index=None, key="other",
                         on_change=_answer_other, args=(session, item.image_id))
        a, b, c = st.columns(3)
        a.button("Skip (S)", shortcut="s", on_click=_act, args=(session, item.image_id, "answer", None))
        b.button("Undo (U)", shortcut="u", on_click=_act, args=(session, item.image_id, "undo"))
        c.button("Submit batch now (B)", shortcut="b", on_click=_act, args=(session, item.image_id, "submit"))
    pending = session.pending()
    version = session.latest_version()
    trainer = trainer_for(project)
    st.caption(f"{len(pending)} of {session.batch_size} answers in this batch (kept if you refresh) · "
               f"newest model v{version['version'] if version else '-'}"
               f"{' · retraining…' if trainer.busy else ''}")
    if "notice" in st.session_state:
        st.info(st.session_state.pop("notice"))
    if "action_started" in st.session_state:
        server_ms = 1000 * (time.perf_counter() - st.session_state.pop("action_started"))
        st.session_state.setdefault("server_ms", []).append(server_ms)
        st.caption(f"server time for the last answer: {server_ms:.0f} ms")
    st.markdown(f'<span id="current-image" data-image="{item.image_id}"></span>', unsafe_allow_html=True)


def label_grid(project: Project, annotator: str) -> None:
    session = LabelingSession(project, annotator, trainer_for(project))
    name = st.selectbox("Class to confirm", project.class_names)
    items = session.grid(name, n=12)
    if not items:
        st.info("No unlabeled images are predicted as this class (or there is no model yet).")
        return
    st.caption("Click the images that are NOT this class, then confirm the rest.")
    rejected = set()
    columns = st.columns(6)
    for k, item in enumerate(items):
        with columns[k % 6]:
            st.image(picture(str(project.root / item.path), 120), width=120)
            if st.checkbox(f"wrong ({item.confidence:.0%})", key=f"reject-{item.image_id}"):
                rejected.add(item.image_id)
    if st.button(f"Confirm {len(items) - len(rejected)} as {name}", type="primary"):
        labeled = session.confirm_grid(name, items, rejected)
        st.success(f"Labeled {len(labeled)} image(s) as {name}; retraining in the background.")
        st.rerun()


def label_page() -> None:
    project, annotator = sidebar()
    st.title(f"Label: {project.name}")
    if not annotator:
        st.warning("Enter your name in the sidebar first: every label records who gave it.")
        return
    mode = st.radio("Mode", ["One by one", "Grid"], horizontal=True, label_visibility="collapsed")
    if mode == "One by one":
        st.caption("Keys: Enter confirms the suggestion · 1-9, 0 pick a class · S skips · U undoes · "
                   "B submits the batch now")
        label_one(project, annotator)
    else:
        label_grid(project, annotator)


# -- Curve page ------------------------------------------------------------------------------

def curve_page() -> None:
    project, _ = sidebar()
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
    forecast = fit_curve(str(DATA_DIR), project.name, len(rows))
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
    comparison = strategy_vs_control(str(DATA_DIR), project.name, rows[-1]["version"])
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
    return strategy_versus_control(_project(data_dir, name))


@st.cache_resource(show_spinner=False, max_entries=16)
def fit_curve(data_dir: str, name: str, n_evaluations: int):
    """Refitted once per retrain (keyed by the number of evaluations; about 10 ms)."""
    try:
        return forecast_curve(_project(data_dir, name))
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
            st.image(picture(str(project.root / images[int(ids[row])]["path"]), 96), width=96)
            mark = "✓" if predicted[row] == truth[row] else "✗"
            st.caption(f"{mark} {project.class_names[predicted[row]]} {confidence[row]:.0%}"
                       + ("" if mark == "✓" else f" (is {project.class_names[truth[row]]})"))


# -- Rules page ------------------------------------------------------------------------------

def rules_page() -> None:
    project, _ = sidebar()
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
    current = project.settings.auto_accept_precision
    st.caption("Probabilities are calibrated by temperature scaling fitted on the training labels "
               "(cross-validated); the threshold is the lowest one that meets the precision on the "
               "hold-out set. A share of what it would accept goes to people as an audit.")
    target = st.slider("Precision to promise", 0.80, 0.995, float(current or 0.95), 0.005)
    if st.button("Preview the threshold for this precision"):
        chosen = autoaccept.plan(project, target)
        if chosen["threshold"] is None:
            st.warning(f"No threshold reaches {target:.1%} precision on the hold-out set yet.")
        else:
            st.info(f"Threshold {chosen['threshold']:.3f} (temperature {chosen['temperature']:.2f}): it "
                    f"decides {chosen['holdout_coverage']:.0%} of hold-out images at "
                    f"{chosen['holdout_precision']:.1%} precision.")
    a, b, c = st.columns(3)
    if a.button("Turn on (after every retrain)" if not current else f"Change to {target:.1%}"):
        project.update_settings(auto_accept_precision=target)
        st.rerun()
    if current and b.button("Turn off"):
        project.update_settings(auto_accept_precision=None)
        st.rerun()
    if c.button("Auto-accept now"):
        result = autoaccept.run(project, target, project.settings.audit_share)
        st.success(f"Accepted {result['accepted']} image(s), sent {result['audited']} to people as an audit.")
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

def save_uploads(project_name: str, uploads) -> Path:
    """Write uploaded files under <data>/uploads/<project>/ (file names only, never paths)."""
    if not project_name:
        raise ValueError("give the project a name first")
    folder = DATA_DIR / "uploads" / project_name
    if folder.exists():
        raise ValueError(f"uploads for '{project_name}' already exist in {folder}; choose another name")
    folder.mkdir(parents=True)
    for k, upload in enumerate(uploads):
        (folder / f"{k:05d}-{Path(upload.name).name}").write_bytes(upload.getvalue())
    return folder


def project_page() -> None:
    project, _ = sidebar()
    st.title("Projects")
    status = project.status()
    st.markdown(f"**{project.name}**: {status['images']} images in `{status['root']}`, backbone "
                f"{status['backbone']}, classes {', '.join(status['classes'])}.")
    if status["skipped"]:
        with st.expander(f"{len(status['skipped'])} file(s) skipped, and why"):
            st.dataframe(pd.DataFrame(status["skipped"], columns=["file", "reason"]), hide_index=True)
    a, b = st.columns(2)
    a.download_button("Labels as CSV", to_csv(project), f"{project.name}-labels.csv", "text/csv")
    b.download_button("Labels as JSON", to_json(project), f"{project.name}-labels.json", "application/json")
    with st.form("export"):
        target = st.text_input("Copy labeled images to a folder on the server (ImageFolder layout)")
        if st.form_submit_button("Export ImageFolder copy") and target:
            try:
                st.success(f"Copied {to_image_folder(project, target)} images to {target}.")
            except (ValueError, OSError) as exc:
                st.error(str(exc))

    st.subheader("New project from a folder on the server, or from uploaded images")
    with st.form("create"):
        name = st.text_input("Name (letters, digits, - and _)")
        folder = st.text_input("Folder on the server (leave empty to upload images instead)")
        uploads = st.file_uploader("Images to upload (a flat, unlabeled set: give the class names)",
                                   type=sorted(s.lstrip(".") for s in IMAGE_SUFFIXES),
                                   accept_multiple_files=True)
        classes = st.text_input("Class names, comma-separated (only for a flat folder of unlabeled "
                                "images; leave empty when the folder has one sub-folder per class)")
        backbone = st.selectbox("Backbone", list(BACKBONES))
        seeds = st.slider("Seed labels per class", 1, 3, 1)
        if st.form_submit_button("Create and embed"):
            bar = st.progress(0.0, text="Embedding...")
            try:
                if uploads and not folder.strip():
                    folder = str(save_uploads(name.strip(), uploads))
                created = create_project(
                    Store(paths().database), name.strip(), folder.strip(), paths(),
                    class_names=[c.strip() for c in classes.split(",") if c.strip()] or None,
                    settings=Settings(backbone=backbone, seeds_per_class=seeds),
                    on_progress=lambda done, total: bar.progress(done / max(total, 1),
                                                                 text=f"Embedding {done} / {total}"))
                st.query_params["project"] = created.name
                st.success(f"Created {created.name}: {created.status()['images']} images.")
            except (ValueError, OSError) as exc:
                st.error(str(exc))


def main() -> None:
    st.set_page_config(page_title="Juicer", layout="wide")
    open_demo()
    st.navigation([st.Page(label_page, title="Label", default=True),
                   st.Page(curve_page, title="Curve", url_path="curve"),
                   st.Page(rules_page, title="Rules", url_path="rules"),
                   st.Page(project_page, title="Project", url_path="project")]).run()


if __name__ == "__main__":  # `streamlit run app.py`; tests import the pages one by one
    main()
