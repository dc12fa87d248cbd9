"""The Project page (leads): the chosen project's status, export, settings, its backbone (fine-tune
the top, or go back), a new project from a folder under the import roots or from uploads, and
people's tokens."""

from __future__ import annotations

import shutil
import zlib

import pandas as pd
import streamlit as st

from loop.project import Project, create_project
from loop.settings import Settings
from loop.store import StoreError
from models.backbones import BACKBONES
from models.images import IMAGE_SUFFIXES
from pages.common import (
    allowed,
    data_dir,
    escape,
    open_project,
    paths,
    reload_project,
    sidebar,
    store,
)

NOTES = "project-notes"    # what the last action did, said once after its rerun


def note(kind: str, text: str, code: str | None = None) -> None:
    """Say `text` on the next run (an action here ends with `st.rerun()`, so that every figure
    of the page is read after it)."""
    st.session_state.setdefault(NOTES, []).append((kind, text, code))


def project_page() -> None:
    person = allowed("lead_pages")
    project = sidebar(person)
    st.title("Projects")
    for kind, text, code in st.session_state.pop(NOTES, []):
        getattr(st, kind)(text)
        if code:
            st.code(code, language=None)
    status = project.status()
    st.markdown(f"**{escape(project.name)}**: {status['images']:,} images in `{status['root']}`, "
                f"backbone {status['backbone']}, classes {escape(', '.join(status['classes']))}.")
    file_lists(status)
    export_panel(project)
    settings_panel(project)
    backbone_panel(project)
    create_panel()
    people_panel(person)


def import_summary(status: dict, embedded: int | None = None) -> str:
    """How the files found became images: ready, skipped, copies (and what the progress bar
    counted, which is neither)."""
    found = status["images"] + len(status["skipped"])
    copies = sum(len(group) for group in status["duplicates"])
    text = f"{found:,} file(s) found, **{status['images']:,} images ready**"
    if status["skipped"]:
        text += f", {len(status['skipped']):,} skipped (see why below)"
    text += "."
    if copies:
        text += (f" {copies:,} of the ready images are byte-for-byte copies of each other "
                 f"({len(status['duplicates']):,} group(s), listed below); each group stays in one split.")
    if embedded:
        text += (f" The progress bar counted only the {embedded:,} distinct file(s) not embedded "
                 "before.")
    elif embedded is not None:
        text += " Every file was embedded before (another project holds the same files)."
    return text


def file_lists(status: dict) -> None:
    """The skipped files with their reasons, and the groups of copies."""
    if status["skipped"]:
        with st.expander(f"{len(status['skipped']):,} file(s) skipped, and why"):
            st.dataframe(pd.DataFrame(status["skipped"], columns=["file", "reason"]), hide_index=True)
    if status["duplicates"]:
        copies = sum(len(group) for group in status["duplicates"])
        with st.expander(f"{copies:,} file(s) that are copies of another ({len(status['duplicates']):,} "
                         "group(s))"):
            st.dataframe(pd.DataFrame({"copies of one image": [" = ".join(g) for g in status["duplicates"]]}),
                         hide_index=True)
    if status.get("conflicts"):
        st.warning(f"{len(status['conflicts']):,} image(s) have byte-for-byte copies in different "
                   "class folders: their truth is ambiguous, so they are kept out of the hold-out. "
                   "Check the folders.")
        st.dataframe(pd.DataFrame({"copies, with their folders' classes": status["conflicts"]}),
                     hide_index=True)


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
    # Keyed by the stored settings: changed anywhere (another tab, the command line), the fields
    # show the new values, not what this browser typed before.
    stored = zlib.crc32(project.settings.to_json().encode())
    with st.expander("Settings of this project"), st.form("settings"):
        values = {key: st.number_input(text, value=kind(getattr(project.settings, key)),
                                       key=f"setting-{key}-{stored}")
                  for key, (text, kind) in EDITABLE.items()}
        strategy = st.text_input("Query strategy", project.settings.strategy,
                                 key=f"setting-strategy-{stored}")
        if st.form_submit_button("Save settings"):
            try:
                changed = {k: EDITABLE[k][1](v) for k, v in values.items()}
                project.update_settings(strategy=strategy.strip(), **changed)
                reload_project(project)
                note("success", "Saved.")
            except (ValueError, TypeError) as exc:
                st.error(f"Not saved: {exc}")
            else:
                st.rerun()


TUNING_POLL_SECONDS = 2.0


def backbone_panel(project: Project) -> None:
    """What the heads train on; fine-tuning the backbone's top where it is offered, its progress
    while it runs (polled), the jobs so far, and the way back to the frozen backbone."""
    allowed("fine_tune")
    from loop import tuning

    st.subheader("Backbone")
    running = tuning.running_job(project) is not None
    st.fragment(backbone_body, run_every=TUNING_POLL_SECONDS if running else None)(project, running)


def backbone_body(project: Project, was_running: bool) -> None:
    from loop import tuning
    from loop.trainer import trainer_for

    job = tuning.running_job(project)
    if was_running and job is None:
        st.rerun(scope="app")            # it finished: every figure of the page is read again
    active = project.store.active_backbone(project.id)
    if active is None:
        # Backbone names come from the registry and keys the job made, never from users.
        st.markdown(f"Heads train on **{project.settings.backbone}** as it was trained on "
                    "ImageNet (frozen).")
    else:
        st.markdown(f"Heads train on **{active['key']}**: {active['base']} with its "
                    f"top from block {active['start_block']} fine-tuned on {active['n_labels']:,} "
                    f"labels (hold-out accuracy {active['holdout_after']:.1%} on it against "
                    f"{active['holdout_before']:.1%} before, heads trained on the same labels).")
    if job is not None:
        done, total = (job["embedded"] or 0), (job["total"] or 0)
        st.progress(done / total if total and job["status"] == "embedding" else 0.0,
                    text=f"Fine-tuning: {tuning.progress_text(job)}. Labeling goes on meanwhile.")
    jobs = project.store.backbone_versions(project.id)
    if jobs:
        with st.expander(f"Fine-tuning jobs ({len(jobs)})"):
            st.dataframe(pd.DataFrame([{
                "backbone": j["key"], "status": j["status"], "labels": j["n_labels"],
                "images embedded": f"{j['embedded'] or 0:,} of {j['total'] or 0:,}",
                "hold-out before": j["holdout_before"], "hold-out after": j["holdout_after"],
                "seconds": round((j["tune_seconds"] or 0) + (j["embed_seconds"] or 0)),
                "note": j["message"] or ""} for j in jobs]), hide_index=True)
    if job is None:
        ok, why = tuning.offered(project)
        if ok:
            st.caption(f"Offered because {why}. Measured on bundled sets (bench/README.md): "
                       "a point or two either way on demo and fashion-mnist. It is adopted only "
                       "if a head on it scores better on the hold-out than one on what the "
                       "project has now, beyond the hold-out's noise; the hold-out is never "
                       "trained on.")
            if st.button("Fine-tune the backbone's top block", key="fine-tune"):
                try:
                    trainer_for(project).fine_tune()
                except StoreError as exc:
                    note("error", f"Not started: {exc}")
                else:
                    note("info", "Fine-tuning started in the background.")
                st.rerun(scope="app")
        else:
            st.caption(f"Fine-tuning is not offered: {why}.")
    if active is not None and st.button("Go back to the frozen backbone", key="revert-backbone"):
        tuning.revert(project)
        trainer_for(project).request()
        note("success", f"Heads train on {project.features_key} again from the next retrain.")
        st.rerun(scope="app")


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
    with st.form(f"create-{st.session_state.get('create-form', 0)}"):   # a new form after each project
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
                st.error("Choose a folder or upload images" + ("." if name.strip() else
                                                                ", and give the project a name."))
                return
            if not name.strip():
                st.error("Give the project a name (letters, digits, - and _).")
                return
            uploaded, embedded = None, {}
            try:
                settings = Settings(backbone=backbone, seeds_per_class=seeds)
                if uploads and not folder.strip():
                    where = uploaded = save_uploads(data_dir() / "uploads", name.strip(),
                                                    [(u.name, u.getvalue()) for u in uploads],
                                                    max_bytes=int(settings.max_file_mb * 2**20))
                else:
                    where = resolve_import_folder(folder.strip(), roots)
                bar = st.progress(0.0, text="Reading the files...")

                def progress(done: int, total: int) -> None:
                    embedded["total"] = total
                    bar.progress(done / max(total, 1), text=f"Embedding the distinct new files: "
                                                            f"{done:,} / {total:,}")

                created = create_project(
                    store(), name.strip(), where, paths(),
                    class_names=[c.strip() for c in classes.split(",") if c.strip()] or None,
                    settings=settings, on_progress=progress)
            except (ValueError, OSError) as exc:
                if uploaded is not None and not any(p["name"] == name.strip() for p in store().projects()):
                    shutil.rmtree(uploaded, ignore_errors=True)   # no project: the upload goes too
                st.error(str(exc))
            else:
                note("success", f"Created **{escape(created.name)}** and opened it: "
                     + import_summary(created.status(), embedded.get("total", 0)))
                open_project(created.name)
                st.session_state["create-form"] = st.session_state.get("create-form", 0) + 1
                st.rerun()


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
            except StoreError as exc:
                st.error(str(exc))
            else:
                note("success", f"Token for {escape(name.strip())} ({role}); it is shown this once, "
                     "give it to them privately:", code=token)
                st.rerun()
    active = [p["name"] for p in rows if not p["revoked_at"] and p["name"] != person.name]
    if active:
        with st.form("revoke"):
            name = st.selectbox("Revoke the token of", active)
            if st.form_submit_button("Revoke"):
                people.revoke(store(), name)
                note("success", f"Revoked {escape(name)}'s token: it stops working at once.")
                st.rerun()
