"""Juicer in the browser: `streamlit run app.py` opens the demo project (creating it on first start).

A thin page: every action is a call into `loop/`; this file only draws. The full labeling UI comes
with the app issue; this page shows the project, its learning curve, the decision rules, and lets
an annotator label the next queued images.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from loop.project import Paths, Project, open_or_create_dataset_project
from loop.queue import next_queries
from loop.replay import curve_rows

DATA_DIR = os.environ.get("JUICER_DATA", "data")
PROJECT = os.environ.get("JUICER_PROJECT", "demo")
DATASET = os.environ.get("JUICER_DATASET", "demo")   # a bundled dataset name or a labeled folder


@st.cache_resource(show_spinner=False)
def open_project(name: str) -> Project:
    paths = Paths(Path(DATA_DIR))
    bar = st.progress(0.0, text="Embedding the demo images (first start only)...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Embedding images: {done} / {total}")

    project = open_or_create_dataset_project(DATASET, paths, name=name, on_progress=progress)
    bar.empty()
    return project


st.set_page_config(page_title="Juicer", layout="wide")
project = open_project(PROJECT)
status = project.status()
st.title(f"Juicer: {project.name}")
cols = st.columns(5)
cols[0].metric("images", status["images"])
cols[1].metric("labeled (training)", status["labeled_pool"])
cols[2].metric("hold-out", status["labeled_holdout"])
cols[3].metric("model versions", status["model_versions"])
cols[4].metric("hold-out accuracy", "-" if status["accuracy"] is None else f"{status['accuracy']:.1%}")

label_tab, curve_tab, rules_tab = st.tabs(["Label", "Learning curve", "Decision rules"])

with label_tab:
    annotator = st.text_input("Your name", value=st.session_state.get("annotator", ""))
    queries = next_queries(project, 6)
    if not queries:
        st.info("Every image is labeled.")
    with st.form("batch"):
        choices = {}
        columns = st.columns(max(len(queries), 1))
        for column, query in zip(columns, queries):
            column.image(str(project.root / query.path), width=140)
            hint = (f"model v{query.model_version}: {query.suggestion} ({query.confidence:.0%})"
                    if query.suggestion else "no model yet")
            column.caption(("hold-out · " if query.split == "holdout" else "") + hint)
            options = ["(skip)"] + project.class_names
            default = options.index(query.suggestion) if query.suggestion else 0
            choices[query.image_id] = column.selectbox("label", options, index=default,
                                                       key=f"label-{query.image_id}")
        submitted = st.form_submit_button("Submit batch and retrain", shortcut="Enter")
    if submitted:
        if not annotator.strip():
            st.error("Enter your name first: every label records who gave it.")
        else:
            st.session_state["annotator"] = annotator.strip()
            labels = [(i, c) for i, c in choices.items() if c != "(skip)"]
            if labels:
                project.store.add_labels(project.id, labels, annotator=annotator.strip(), source="human")
                with st.spinner("Retraining..."):
                    project.retrain()
            st.rerun()

with curve_tab:
    rows = curve_rows(project)
    if rows:
        frame = pd.DataFrame(rows).set_index("labels")
        st.line_chart(frame[["accuracy", "balanced_accuracy"]])
        st.caption("Hold-out accuracy after each retrain. The forecast of labels still needed "
                   "comes with the forecaster issue.")
    else:
        st.info("No model yet.")

with rules_tab:
    evaluations = project.store.evaluations(project.id)
    if evaluations:
        rules = pd.DataFrame(evaluations[-1]["rules"])[["rule", "coverage", "accuracy", "errors_per_100"]]
        st.dataframe(rules, hide_index=True)
    else:
        st.info("No model yet.")
