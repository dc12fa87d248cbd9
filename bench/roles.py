"""Security by role: each person (a lead, an annotator, a revoked annotator, and nobody signed in)
tries each action through the app (Streamlit's AppTest, page by page and the full app's
navigation) and through the command line; the table says what was allowed and what was refused,
with the message, and lists anything a role could do that it should not (or could not do that
it should).

    python bench/roles.py [--json]

The data root is temporary (`datasets` linked to data/datasets, as tests/test_app.py does); the
embedding cache is an overlay of data/cache/embeddings (links to its shards, new ones written
beside them), so nothing is written into the repository. The first run creates the demo project.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

LEAD = "lead-token-for-the-roles-bench-0123456789"
ROLES = ("lead", "annotator", "revoked", "none")
# What each role should be able to do: the lead everything, an annotator labeling and opening the
# Review page (where they see only the suspects a lead sent them).
ANNOTATOR_ACTIONS = {"open Label page", "open Review page", "cli: label"}
# Commands for someone with a shell on the server (who can read the database file anyway); they
# take no token.
SERVER_COMMANDS = ("create", "demo", "status", "queue", "token", "roots", "export", "backup",
                   "restore", "retrain", "curve", "replay", "benchmark-strategies", "study",
                   "backtest-forecast")


def should_allow(role: str, action: str) -> bool:
    return role == "lead" or (role == "annotator" and action in ANNOTATOR_ACTIONS)


# -- the app through AppTest --------------------------------------------------------------------

def page(call: str, token: str | None, query: dict | None = None):
    """One page function of the app, run as the person holding `token` (None: nobody)."""
    from streamlit.testing.v1 import AppTest

    script = (f"import sys; sys.path.insert(0, {str(REPO)!r})\nimport streamlit as st\nimport app\n"
              "from pages.label import label_page\nfrom pages.team import team_page\n"
              + (f"st.session_state['token'] = {token!r}\n" if token else "")
              + f"app.open_demo()\n{call}()")
    at = AppTest.from_string(script, default_timeout=600)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    return at.run()


def texts(at) -> str:
    return " ".join([m.value for m in at.markdown] + [e.value for e in at.error]
                    + [w.value for w in at.warning] + [i.value for i in at.info]
                    + [s.value for s in at.success] + [c.value for c in at.caption])


def refusal(at) -> str | None:
    """The page's refusal ("Refused: ... needs the lead role" or the sign-in message), if any."""
    for error in at.error:
        if error.value.startswith("Refused:"):
            return error.value
    return None


def button(at, prefix: str):
    return next((b for b in at.button if b.label.startswith(prefix)), None)


def text_input(at, test):
    return next((t for t in at.text_input if test(t.label)), None)


def outcome(at, allowed_when: str, detail: str = "") -> str:
    """'allowed: ...' when `allowed_when` is in the page's text, 'refused: ...' when the page
    refused, else what went wrong."""
    if at.exception:
        return f"error: exception on the page: {at.exception[0].value[:300]}"
    refused = refusal(at)
    if refused:
        return f"refused: {refused}"
    shown = texts(at) + " " + " ".join(t.value for t in at.title) + " " + " ".join(
        s.value for s in at.subheader)
    if allowed_when in shown:
        return f"allowed{': ' + detail if detail else ''}"
    return f"unclear: neither refused nor '{allowed_when}' (errors: {[e.value for e in at.error]})"


def with_button(call: str, token: str | None, prefix: str, allowed_when: str, fill=None,
                then=None) -> str:
    """Open the page, fill its inputs (`fill(at)`), click the button labeled `prefix`; for a
    person the page refuses, the refusal is the answer, provided the button was never drawn."""
    at = page(call, token)
    refused = refusal(at)
    if refused or at.exception:
        if button(at, prefix) is not None:
            return f"error: the page refused ({refused}) but still drew '{prefix}'"
        return outcome(at, allowed_when) + f" (the page refused before drawing '{prefix}')"
    if fill:
        fill(at)
    found = button(at, prefix)
    if found is None:
        return f"unclear: no button '{prefix}' (buttons: {[b.label for b in at.button]})"
    found.click().run()
    if then:
        then(at)
    success = [s.value for s in at.success] + [i.value for i in at.info] + [w.value for w in at.warning]
    return outcome(at, allowed_when, "; ".join(success)[:200])


def app_actions(token: str | None, root: Path, conflict_image: int) -> dict[str, str]:
    results = {}
    for title, call, marker in [("open Label page", "label_page", "Label: demo"),
                                ("open Curve page", "app.curve_page", "Learning curve: demo"),
                                ("open Rules page", "app.rules_page", "Decision rules: demo"),
                                ("open Team page", "team_page", "Team: demo"),
                                ("open Review page", "app.review_page", "Review: demo"),
                                ("open Project page", "app.project_page", "Projects")]:
        results[title] = outcome(page(call, token), marker)

    results["rules: preview auto-accept threshold"] = with_button(
        "app.rules_page", token, "Preview the threshold", "Threshold")

    def confirm_if_asked(at):
        confirm = button(at, "Yes, label")
        if confirm is not None:
            confirm.click().run()

    results["rules: auto-accept now"] = with_button("app.rules_page", token, "Auto-accept now",
                                                    "Accepted", then=confirm_if_asked)
    results["rules: turn auto-accept on"] = with_button(
        "app.rules_page", token, "Turn on", "It runs again after every retrain", then=confirm_if_asked)
    if results["rules: turn auto-accept on"].startswith("allowed"):
        from loop.project import Project
        Project.open("demo", root).update_settings(auto_accept_precision=None)   # as it was

    def export_name(at):
        text_input(at, lambda label: "exports" in label).input(f"copy-{time.time_ns()}")

    results["project: export ImageFolder copy"] = with_button(
        "app.project_page", token, "Export ImageFolder copy", "Copied", fill=export_name)
    results["project: save settings"] = with_button("app.project_page", token, "Save settings", "Saved.")

    def new_project(at):
        text_input(at, lambda label: label.startswith("Name (")).input(f"tiny{time.time_ns() % 10**6}")
        text_input(at, lambda label: label.startswith("Folder")).input("tiny")

    results["project: create a project"] = with_button(
        "app.project_page", token, "Create and embed", "Created", fill=new_project)
    person = f"cara{time.time_ns() % 10**6}"
    results["project: create a token"] = with_button(
        "app.project_page", token, "Create a token", f"Token for {person}",
        fill=lambda at: text_input(at, lambda label: label == "Name").input(person))

    def choose(at):
        next(s for s in at.selectbox if s.label == "Revoke the token of").select(person)

    created = results["project: create a token"].startswith("allowed")
    results["project: revoke a token"] = with_button(
        "app.project_page", token, "Revoke", f"Revoked {person}" if created else "Revoked",
        fill=choose if created else None)
    results["team: resolve a conflict"] = resolve_in_app(token, root, conflict_image)
    return results


def resolve_in_app(token: str | None, root: Path, image_id: int) -> str:
    from loop.project import Project

    at = page("team_page", token)
    refused = refusal(at)
    if refused or at.exception:
        if button(at, "Label it") is not None:
            return f"error: the page refused ({refused}) but still drew 'Label it'"
        return outcome(at, "Conflicts") + " (the page refused before drawing 'Label it ...')"
    found = next((b for b in at.button if b.label == "Label it Cow"
                  and str(b.key).startswith(f"take-{image_id}-")), None)    # pages/team.py's keys
    if found is None:
        return f"unclear: no 'Label it Cow' button (buttons: {[b.label for b in at.button]})"
    found.click().run()
    project = Project.open("demo", root)
    settled = image_id not in [c["image_id"] for c in project.store.conflicts(project.id)]
    if at.exception:
        return f"error: exception on the page: {at.exception[0].value[:300]}"
    return "allowed: conflict settled as Cow" if settled else "unclear: the conflict is still open"


def navigation(tokens: dict[str, str | None]) -> tuple[dict, dict]:
    """The full app per role: the pages its navigation registers, the page drawn, and what is
    drawn when the browser asks for the lead's Curve page (its url path /curve)."""
    from streamlit.testing.v1 import AppTest

    found, curve_hash = {}, None
    for role in ROLES:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
        if tokens[role]:
            at.query_params["token"] = tokens[role]
        at.run()
        registered = getattr(at, "_registered_pages", {}) or {}
        pages = [info.get("page_name") or info.get("url_pathname") for info in registered.values()]
        if role == "lead":
            curve_hash = next((h for h, info in registered.items()
                               if info.get("url_pathname") == "curve"), None)
        entry = {"pages offered": pages, "page drawn": [t.value for t in at.title][:1],
                 "token left in the address": "token" in at.query_params}
        if curve_hash is not None:
            # AppTest.switch_page takes page files only (these pages are functions), so the
            # request for /curve is made the way switch_page makes it: by the page's hash.
            at._page_hash = curve_hash
            at.run()
            entry["asked for /curve, drawn"] = [t.value for t in at.title][:1] + [
                e.value for e in at.error][:1]
        found[role] = entry
    return found, {"curve_hash_found": curve_hash is not None}


# -- the command line ---------------------------------------------------------------------------

def cli(root: Path, args: list[str]) -> tuple[int, str, str]:
    from loop.__main__ import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(["--data", str(root), *args])
        except SystemExit as exc:
            rc = exc.code
    return rc, out.getvalue().strip(), err.getvalue().strip()


def cli_actions(root: Path, token: str | None, free_image: int, conflict_image: int) -> dict[str, str]:
    def said(rc, out, err):
        if rc == 0:
            return f"allowed: {out.splitlines()[0] if out else '(no output)'}"
        return f"refused (exit {rc}): {err or out}"

    give = ["--token", token] if token else []
    return {
        "cli: label": said(*cli(root, ["label", "demo", *give, f"{free_image}=Cat"])),
        "cli: conflicts (list)": said(*cli(root, ["conflicts", "demo", *give])),
        "cli: conflicts (resolve)": said(*cli(root, ["conflicts", "demo", str(conflict_image), *give,
                                                     "--class", "Cow"])),
    }


# -- setup ------------------------------------------------------------------------------------

def make_conflict(project, annotators=("ann-a", "ann-b")) -> int:
    """An image two people labeled differently (Cat, then Cow): one open conflict."""
    from loop.session import LabelingSession

    taken = project.store.taken_image_ids(project.id) | set(project.store.current_labels(project.id))
    image = next(i["id"] for i in project.store.images(project.id, split="pool") if i["id"] not in taken)
    LabelingSession(project, annotators[0]).label_batch([(image, "Cat")])
    LabelingSession(project, annotators[1]).label_batch([(image, "Cow")])
    return image


def free_images(project, n: int) -> list[int]:
    taken = project.store.taken_image_ids(project.id) | set(project.store.current_labels(project.id))
    return [i["id"] for i in project.store.images(project.id, split="pool") if i["id"] not in taken][:n]


def table(results: dict[str, dict[str, str]], width: int = 118) -> None:
    actions = list(next(iter(results.values())))
    for action in actions:
        print(f"  {action}")
        for role in ROLES:
            text = results[role][action]
            expected = should_allow(role, action)
            got = text.startswith("allowed")
            mark = "" if expected == got and not text.startswith(("error", "unclear")) else "  <-- UNEXPECTED"
            print(textwrap.fill(f"{role:<10} {text}{mark}", width=width, initial_indent=" " * 4,
                                subsequent_indent=" " * 15))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import logging

    import streamlit.testing.v1  # noqa: F401 (its loggers exist now; quiet the bare-mode warning)
    from hostile import good_images, overlay_cache

    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
        lambda record: "missing ScriptRunContext" not in record.getMessage())

    with tempfile.TemporaryDirectory(prefix="juicer-roles-") as tmp:
        tmp = Path(tmp).resolve()
        root = tmp / "data"
        root.mkdir()
        (root / "datasets").symlink_to(REPO / "data" / "datasets")
        cache = overlay_cache(tmp / "cache")
        os.environ.update(JUICER_DATA=str(root), JUICER_CACHE=str(cache), JUICER_LEAD_TOKEN=LEAD)
        os.environ.pop("JUICER_TOKEN", None)
        for cls, blobs in good_images(4).items():       # a small folder the lead imports
            (root / "imports" / "tiny" / cls).mkdir(parents=True)
            for k, blob in enumerate(blobs):
                (root / "imports" / "tiny" / cls / f"{k}.png").write_bytes(blob)

        started = time.perf_counter()
        first = page("app.curve_page", LEAD)            # creates the demo project and the lead
        print(f"demo project ready in {time.perf_counter() - started:.0f} s"
              + (f" (exception: {first.exception[0].value[:200]})" if first.exception else ""))
        from loop import people
        from loop.project import Project
        from loop.store import Store

        store = Store(root / "juicer.db")
        tokens = {"lead": LEAD, "annotator": people.create_token(store, "ana", "annotator"),
                  "revoked": people.create_token(store, "rex", "annotator"), "none": None}
        people.revoke(store, "rex")
        project = Project.open("demo", root)
        app_conflicts = {role: make_conflict(project) for role in ROLES}
        cli_conflict = make_conflict(project)
        free = dict(zip(ROLES, free_images(project, len(ROLES))))

        app_results, cli_results = {}, {}
        for role in ROLES:
            started = time.perf_counter()
            app_results[role] = app_actions(tokens[role], root, app_conflicts[role])
            print(f"app as {role}: {time.perf_counter() - started:.0f} s")
        nav, nav_notes = navigation(tokens)
        for role in ("annotator", "revoked", "none", "lead"):   # the lead last: it resolves
            cli_results[role] = cli_actions(root, tokens[role], free[role], cli_conflict)

    print("\n== the app (page functions through AppTest)")
    table(app_results)
    print("\n== the full app (app.py through AppTest): navigation per role")
    for role, entry in nav.items():
        print(f"  {role:<10} " + "; ".join(f"{k}: {v}" for k, v in entry.items()))
    if not nav_notes["curve_hash_found"]:
        print("  (the lead's navigation registered no /curve page: the request for it was not tried)")
    print("\n== the command line (python -m loop ..., exit code and stderr)")
    table({role: cli_results[role] for role in ROLES})
    print("\n  Server-administration commands, for someone with a shell on the server (who can read "
          "the database file anyway); they take no token, so they are not refused to anyone:")
    print(textwrap.fill(", ".join(SERVER_COMMANDS), width=110, initial_indent="    ",
                        subsequent_indent="    "))

    unexpected = []
    for where, results in (("app", app_results), ("cli", cli_results)):
        for role in ROLES:
            for action, text in results[role].items():
                got = text.startswith("allowed")
                if got != should_allow(role, action) or text.startswith(("error", "unclear")):
                    unexpected.append(f"{where}: {role}: {action}: {text}")
    for role, entry in nav.items():
        offered = set(entry["pages offered"])
        wanted = ({"Label", "Curve", "Rules", "Team", "Review", "Project"} if role == "lead" else
                  {"Label", "Review"} if role == "annotator" else {"Sign in"})
        if offered != wanted:
            unexpected.append(f"navigation: {role}: offered {sorted(offered)}, expected {sorted(wanted)}")
        drawn = entry.get("asked for /curve, drawn", [])
        if role != "lead" and any(d.startswith("Learning curve") for d in drawn):
            unexpected.append(f"navigation: {role}: asking for /curve drew the Curve page")
    print(f"\n{len(unexpected)} unexpected result(s)" + "".join(f"\n  {u}" for u in unexpected))
    if args.json:
        print(json.dumps({"app": app_results, "navigation": nav, "cli": cli_results,
                          "server_commands": list(SERVER_COMMANDS), "unexpected": unexpected}))
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
