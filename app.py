"""Juicer in the browser: `streamlit run app.py` opens the demo project (creating it on first start).

A thin shell: every action is a call into `loop/` (sessions, evaluation, export); this file draws.
Pages: Label (annotators, keyboard first), Curve (leads: learning curve, per-class accuracy, the
hold-out gallery), Rules (auto-accept thresholds), Team (conflicts, agreement), Review (labels the
model reads as wrong; annotators see those sent to them), Project (create, embed, export,
settings, people). Each page acts, then reads; the sidebar's figures come last.
Served through Streamlit's `st.App` (see the end of the file) so a page's address opens cleanly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware
from streamlit.runtime.pages_manager import PagesManager

from loop.people import first_start
from loop.project import Paths, ProjectError, open_or_create_dataset_project
from loop.store import StorageError
from loop.trainer import trainer_for
from pages.common import (
    data_dir,
    keep_signed_in,
    project_named,
    sidebar_figures,
    sign_in_page,
    signed_in,
    store,
)
from pages.curve import curve_page
from pages.label import label_page
from pages.project import project_page
from pages.review import review_page
from pages.rules import rules_page
from pages.team import team_page

DEFAULT_PROJECT = os.environ.get("JUICER_PROJECT", "demo")
# The lead pages' addresses (http://host/curve ...): st.navigation below, and the server.
PAGE_PATHS = ("curve", "rules", "team", "review", "project")
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
        try:
            trainer_for(project_named(row["name"]))
        except ProjectError as exc:     # said on the project's pages too; the others still open
            print(f"Juicer: project {row['name']!r} has no trainer: {exc}", file=sys.stderr)


def main() -> None:
    st.set_page_config(page_title="Juicer", layout="wide")
    open_demo()
    person = signed_in()
    keep_signed_in(person)
    if person is None:
        pages = [st.Page(sign_in_page, title="Sign in", default=True)]
    elif person.role == "lead":
        pages = [st.Page(label_page, title="Label", default=True),
                 *(st.Page(page, title=path.title(), url_path=path) for page, path in
                   zip((curve_page, rules_page, team_page, review_page, project_page), PAGE_PATHS))]
    else:   # an annotator labels, and reviews what a lead sent them
        pages = [st.Page(label_page, title="Label", default=True),
                 st.Page(review_page, title="Review", url_path="review")]
    try:
        st.navigation(pages).run()
    except (StorageError, ProjectError) as exc:  # disk full, a deleted database, missing weights
        st.error(str(exc))
    finally:                       # the page's actions are done: now the sidebar's figures
        sidebar_figures()


class PageAddresses:
    """Opening a page's own address (http://host/curve) makes Streamlit's browser code look for
    the server one folder down first (/curve/_stcore/health and host-config answer 404 in the
    console; streamlit/streamlit#7074) unless the page names the server's address itself
    (`window.__streamlit.BACKEND_BASE_URL`). This ASGI middleware answers the page addresses with
    Streamlit's own index.html, that address set; every other request passes through."""

    def __init__(self, app):
        self.app = app
        self.index: bytes | None = None

    async def __call__(self, scope, receive, send):
        base = "/".join(p for p in (st.get_option("server.baseUrlPath") or "").split("/") if p)
        pages = {f"/{base}/{page}".replace("//", "/") for page in PAGE_PATHS}
        if (scope["type"] != "http" or scope["method"] not in ("GET", "HEAD")
                or scope["path"].rstrip("/") not in pages):
            return await self.app(scope, receive, send)
        if self.index is None:
            html = (Path(st.__file__).parent / "static" / "index.html").read_text(encoding="utf-8")
            script = ("<script>window.__streamlit = {BACKEND_BASE_URL: new URL("
                      f"{('/' + base + '/').replace('//', '/')!r}, location.origin).href}};</script>")
            self.index = html.replace("<head>", "<head>\n    " + script, 1).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-cache"),
            (b"content-length", str(len(self.index)).encode())]})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else self.index})


# `streamlit run app.py` finds this ASGI app (Streamlit's st.App) and serves the script through
# it; uvicorn imports this file as a module for it, and runs it as the script for each session.
app = st.App(__file__, middleware=[Middleware(PageAddresses)])
# pages/ holds this app's page modules, not Streamlit's old one-script-per-page folder; Streamlit
# takes it for one until st.navigation first runs in the process (which then clears this flag),
# so the first visitor of a new server opening /project would run pages/project.py alone: a blank
# page. Cleared here, when the server imports this file, before any session runs.
PagesManager.uses_pages_directory = False

if __name__ == "__main__":  # `streamlit run app.py`; tests import the pages one by one
    main()
