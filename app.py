"""Juicer in the browser: `streamlit run app.py` opens the demo project (creating it on first start).

A thin shell: every action is a call into `loop/` (sessions, evaluation, export); this file draws.
Pages: Label (annotators, keyboard first), Curve (leads: learning curve, per-class accuracy, the
hold-out gallery), Rules (auto-accept thresholds), Project (create, embed, export).
"""

from __future__ import annotations

import os
import sys

import streamlit as st

from loop.people import first_start
from loop.project import Paths, open_or_create_dataset_project
from loop.store import StorageError
from loop.trainer import trainer_for
from pages.common import (
    data_dir,
    keep_signed_in,
    project_named,
    sign_in_page,
    signed_in,
    store,
)
from pages.curve import curve_page
from pages.label import label_page
from pages.project import project_page
from pages.rules import rules_page
from pages.team import team_page

DEFAULT_PROJECT = os.environ.get("JUICER_PROJECT", "demo")
DEFAULT_DATASET = os.environ.get("JUICER_DATASET", "demo")  # a bundled dataset name or labeled folder


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
