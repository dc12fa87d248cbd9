"""What every page shares: the data root, who is signed in and what their role allows, the
project chosen in the sidebar, and images scaled for display. Thin: decisions live in `loop/`."""

from __future__ import annotations

import contextlib
import html
import os
from pathlib import Path

import streamlit as st

from loop.people import PermissionDenied, Person, authenticate, require
from loop.project import Paths, Project
from loop.store import Store, StoreError


def data_dir() -> Path:
    return Path(os.environ.get("JUICER_DATA", "data"))


def paths() -> Paths:
    return Paths(data_dir())


def store() -> Store:
    return _store(str(data_dir()))


@st.cache_resource(show_spinner=False)
def _store(root: str) -> Store:
    return Store(Paths(Path(root)).database)


def project_named(name: str) -> Project:
    """The project, with its settings as stored now (a lead may have changed them in another tab,
    or from the command line)."""
    project = _project(str(data_dir()), name)
    if project.store.project(project.id)["settings"] != project.settings.to_json():
        project = reload_project(project)
    return project


@st.cache_resource(show_spinner=False)
def _project(root: str, name: str) -> Project:
    """One Project object per data root and name in this server process."""
    where = Paths(Path(root))
    return Project(Store(where.database), name, where)


def reload_project(project: Project) -> Project:
    """The cached project with its settings read again (after a change of settings)."""
    _project.clear()
    return _project(str(data_dir()), project.name)


COOKIE = "juicer_token"
# Keeps the sign-in in a cookie of this site, so a reload or another page of the app stays signed
# in: set after signing in, cleared on signing out. Streamlit reads it back with the page request
# (`st.context.cookies`), before anything is drawn. SameSite=Strict: never sent by other sites.
_KEEPER = st.components.v2.component("juicer.sign_in_keeper", js="""
export default function keeper({ data }) {
  if (data && data.set) {
    document.cookie = `juicer_token=${encodeURIComponent(data.set)}; path=/; max-age=2592000; SameSite=Strict`;
  }
  if (data && data.clear) {
    document.cookie = "juicer_token=; path=/; max-age=0; SameSite=Strict";
  }
}
""")


def signed_in() -> Person | None:
    """The person whose token this browser session holds, checked against the store on every
    run (a revoked token stops working at once). A token arriving in the address (`?token=`, the
    link printed at first start) is taken and removed from the address at once; a token kept in
    this site's cookie signs a reloaded page in again."""
    token = st.query_params.get("token")
    if token:
        st.session_state["token"] = token
        del st.query_params["token"]
    if "token" not in st.session_state and not st.session_state.get("signed_out"):
        kept = st.context.cookies.get(COOKIE)
        if kept:
            st.session_state["token"] = kept
    try:
        person = authenticate(store(), st.session_state.get("token"))
    except StoreError as exc:
        st.error(str(exc))
        st.stop()
    return person


def keep_signed_in(person: Person | None) -> None:
    """Write (or clear, after signing out) the sign-in cookie; once per run, from `main`. Drawn on
    every run, not only when it changes: a component drawn in one run only may be gone before the
    browser ran it."""
    if person is not None:
        _KEEPER(key="sign-in-keeper", data={"set": st.session_state["token"]}, height=0)
    elif st.session_state.get("signed_out"):
        _KEEPER(key="sign-in-keeper", data={"clear": True}, height=0)


def allowed(action: str) -> Person:
    """The signed-in person if their role allows `action`; otherwise say why and stop the page."""
    try:
        return require(signed_in(), action)
    except PermissionDenied as exc:
        st.error(f"Refused: {exc}.")
        st.stop()


def sign_in_page() -> None:
    st.title("Juicer")
    st.markdown("Sign in with the token your lead gave you (a lead makes one on the Project page, "
                "or with `python -m loop token create NAME --role annotator`). On a new install, the "
                "first lead's token is printed in the terminal where Juicer was started.")
    with st.form("sign-in"):
        token = st.text_input("Token", type="password")
        if st.form_submit_button("Sign in", type="primary"):
            if authenticate(store(), token.strip()) is None:
                st.error("That token is not valid (wrong, or revoked).")
            else:
                st.session_state["token"] = token.strip()
                st.session_state.pop("signed_out", None)
                st.rerun()


def sign_out() -> None:
    st.session_state.pop("token", None)
    st.session_state["signed_out"] = True     # and the cookie is cleared on the next run


PROJECT_KEY = "sidebar-project"      # the chooser's widget key
_CHOSEN = "_chosen-project"          # the choice, kept apart: widgets' states do not outlive a page
_FIGURES = "_sidebar-figures"        # this run's (placeholder, project) for `sidebar_figures`


def open_project(name: str) -> None:
    """Make `name` the sidebar's project from the next run on (after creating it, say); call
    `st.rerun()` next to show it."""
    st.session_state[_CHOSEN] = name


def _chosen() -> None:
    st.session_state[_CHOSEN] = st.session_state[PROJECT_KEY]


def sidebar(person: Person) -> Project:
    """The project chooser and who is signed in; returns the chosen project. The project's
    figures are drawn in the sidebar by `sidebar_figures`, after the page's actions ran."""
    st.session_state.pop(_FIGURES, None)
    names = [p["name"] for p in store().projects()]
    if not names:
        st.info("No project yet.")
        st.stop()
    # The choice lives in this session (across pages) and in the address (a refresh or a bookmark
    # keeps it).
    if _CHOSEN not in st.session_state:
        st.session_state[_CHOSEN] = st.query_params.get("project")
    if st.session_state[_CHOSEN] not in names:
        st.session_state[_CHOSEN] = names[0]
    st.session_state[PROJECT_KEY] = st.session_state[_CHOSEN]
    name = st.sidebar.selectbox("Project", names, key=PROJECT_KEY, on_change=_chosen)
    st.query_params["project"] = name
    project = project_named(name)
    st.session_state[_FIGURES] = (st.sidebar.empty(), project)
    st.sidebar.caption(f"Signed in as **{escape(person.name)}** ({person.role})")
    st.sidebar.button("Sign out", on_click=sign_out)
    return project


def sidebar_figures() -> None:
    """The chosen project's figures, drawn into the sidebar once the page has run (its actions
    done), from one read of the store: labels in force (by people, auto-accepted, hold-out), the
    newest scored model with its hold-out accuracy, and a failed background retrain if no version
    was published since."""
    placeholder, project, *read = st.session_state.pop(_FIGURES, (None, None))
    if placeholder is None:
        return
    try:
        f = read[0] if read else project.figures()
        failure = last_failure(project)
    except StoreError:           # a deleted or unreadable database: the page said so already
        return
    lines = [(f"**{f['people']:,}** labels by people · **{f['auto']:,}** auto-accepted "
              f"(training pool), **{f['holdout']:,}** hold-out · {f['unlabeled']:,} unlabeled")]
    if f["version"] is None:
        lines.append("No scored model yet.")
    else:
        lines.append(f"Model **v{f['version']}** (trained on {f['trained_on']:,} labels): "
                     f"**{f['accuracy']:.1%}** hold-out accuracy, balanced {f['balanced_accuracy']:.1%}, "
                     f"on {f['n_holdout']:,} images")
        if f["versions"] > f["version"]:
            lines.append(f"v{f['versions']} is being scored.")
    with placeholder.container():
        st.caption("  \n".join(lines))
        if failure:
            st.error(failure)


def page_figures(project: Project) -> dict:
    """`project.figures()`, read by a page inside its own snapshot of the store and shown by the
    sidebar as they are: the sidebar's model and the page's are then the same, even when a retrain
    is scored while the page draws."""
    figures = project.figures()
    held = st.session_state.get(_FIGURES)
    if held and held[1] is project:
        st.session_state[_FIGURES] = (held[0], project, figures)
    return figures


def last_failure(project: Project) -> str | None:
    """The newest failed background retrain, if no version was published since."""
    failed = project.store.log_entries(project.id, "retrain_failed", limit=1)
    latest = project.store.latest_model_version(project.id)
    if failed and (latest is None or failed[0]["created_at"] > latest["created_at"]):
        return f"The last background retrain failed: {failed[0]['message']}"
    return None


def escape(text: str) -> str:
    """Text from users or folders, safe inside markdown (no markup, no links, no HTML). Not for
    inside a `code span`, where the backslashes it adds would show."""
    text = html.escape(str(text), quote=False)
    for ch in "\\`*_{}[]()#+-.!|~>":
        text = text.replace(ch, "\\" + ch)
    return text


@contextlib.contextmanager
def image_card(project: Project, path: str, size: int):
    """`with image_card(project, path, 120):` a bordered card, the image on its left (see
    `picture`); what the block draws goes in the column beside it."""
    with st.container(border=True):
        left, right = st.columns([1, 4])
        data = picture(project, path, size)
        if data:
            left.image(data, width=size)
        with right:
            yield


def picture(project: Project, path: str, size: int) -> bytes | None:
    """An image of the project scaled for display (never decoded at full size more than needed,
    refused past the project's pixel limit); None with the reason shown if it cannot be read."""
    try:
        return _picture(str(project.root / path), size, int(project.settings.max_megapixels * 1e6))
    except ValueError as exc:
        st.caption(f"cannot show {escape(path)}: {escape(exc)}")
        return None


@st.cache_data(max_entries=4096, show_spinner=False)
def _picture(path: str, size: int, max_pixels: int) -> bytes:
    from models.images import thumbnail

    return thumbnail(path, size, max_pixels=max_pixels)
