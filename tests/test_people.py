"""People and roles: tokens stored only as hashes, reserved names refused, each role's refused
actions through the library and the command line."""

import pytest

from loop.__main__ import main
from loop.people import (PermissionDenied, authenticate, create_token, first_start, require,
                         revoke, token_hash)
from loop.project import Paths, create_project
from loop.session import LabelingSession
from loop.settings import Settings
from loop.store import Store, StoreError
from tests.test_project import small_folder


def test_tokens_are_random_stored_as_hashes_and_revocable(tmp_path):
    store = Store(tmp_path / "j.db")
    one, two = create_token(store, "ana", "annotator"), create_token(store, "ben", "lead")
    assert one != two and len(one) > 30
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("j.db*"))     # the file and its WAL
    assert one.encode() not in raw and token_hash(one).encode() in raw
    assert authenticate(store, one).role == "annotator" and authenticate(store, two).role == "lead"
    assert authenticate(store, "") is None and authenticate(store, one + "x") is None
    with pytest.raises(StoreError, match="already has a token"):
        create_token(store, "ana", "lead")
    revoke(store, "ana")
    assert authenticate(store, one) is None
    assert create_token(store, "ana", "annotator") != one      # a new token after revoking


@pytest.mark.parametrize("name", ["folder", "auto", "seed", "Auto-v2", "simulated-x", "a b", "../x",
                                  "<script>", "", "x" * 41])
def test_reserved_and_unsafe_names_get_no_token(tmp_path, name):
    with pytest.raises(StoreError):
        create_token(Store(tmp_path / "j.db"), name, "annotator")


def test_first_start_makes_one_lead(tmp_path):
    store = Store(tmp_path / "j.db")
    token = first_start(store, token="a-lead-token-from-the-environment")
    assert token == "a-lead-token-from-the-environment"
    assert authenticate(store, token).name == "lead"
    assert first_start(store) is None                           # only on an empty data root


def test_annotators_may_label_and_review_and_nothing_else():
    from loop.people import ACTIONS, Person

    ana, lead = Person("ana", "annotator"), Person("lead", "lead")
    for action in ACTIONS:
        assert require(lead, action) is lead
        if action in ("label", "review"):       # review: what a lead sent them (the page asks)
            assert require(ana, action) is ana
        else:
            with pytest.raises(PermissionDenied, match="ana is an annotator: .* needs the lead role"):
                require(ana, action)
    with pytest.raises(PermissionDenied, match="sign in"):
        require(None, "label")


@pytest.fixture
def cli_project(tmp_path, demo_project, shared_cache):
    paths = Paths(tmp_path / "data", cache_dir=shared_cache)
    root = small_folder(demo_project.root, tmp_path / "animals", per_class=6)
    project = create_project(Store(paths.database), "c", root, paths, settings=Settings(holdout_fraction=0.3))
    return project, str(tmp_path / "data")


def tokens(data, capsys):
    out = {}
    for name, role in (("ana", "annotator"), ("ben", "annotator"), ("boss", "lead")):
        assert main(["--data", data, "token", "create", name, "--role", role]) == 0
        out[name] = capsys.readouterr().out.strip().splitlines()[-1]
    return out


def test_cli_label_follows_the_page_rules(cli_project, capsys):
    project, data = cli_project
    t = tokens(data, capsys)
    store = project.store
    holdout = store.images(project.id, split="holdout")[0]["id"]
    free = [i["id"] for i in store.images(project.id, split="pool") if i["id"] not in store.current_labels(project.id)]
    held = free[0]
    store.lease(project.id, [held], "ben")
    assert main(["--data", data, "label", "c", "--token", t["ana"], f"{free[1]}=Cat", f"{held}=Cow",
                 f"{holdout}=Zebra"]) == 1
    out = capsys.readouterr().out
    assert "stored 1 label(s) by ana" in out and f"image {held}: refused: image {held} is with ben" in out
    assert f"image {holdout}: kept as a conflict" in out                 # imported truth untouched
    labels = store.current_labels(project.id)
    assert labels[free[1]] == store.class_id(project.id, "Cat") and held not in labels
    assert store.label_events(project.id, image_id=holdout)[-1]["annotator"] == "folder"
    # Retract: only your own label.
    assert main(["--data", data, "label", "c", "--token", t["ben"], f"{free[1]}="]) == 1
    assert "given by ana, not you" in capsys.readouterr().out
    assert main(["--data", data, "label", "c", "--token", t["ana"], f"{free[1]}="]) == 0
    assert free[1] not in store.current_labels(project.id)


def test_cli_refuses_by_role_and_without_a_token(cli_project, capsys):
    project, data = cli_project
    t = tokens(data, capsys)
    assert main(["--data", data, "label", "c", "1=Cat"]) == 2
    assert "give your token" in capsys.readouterr().err
    assert main(["--data", data, "label", "c", "--token", "jcr_forged-token-0123456789", "1=Cat"]) == 2
    assert "not valid" in capsys.readouterr().err
    assert main(["--data", data, "conflicts", "c", "--token", t["ana"]]) == 2
    assert "ana is an annotator: resolving conflicts needs the lead role" in capsys.readouterr().err
    assert main(["--data", data, "conflicts", "c", "--token", t["boss"]]) == 0
    assert "no open conflicts" in capsys.readouterr().out
    main(["--data", data, "token", "revoke", "ana"])
    assert main(["--data", data, "label", "c", "--token", t["ana"], "1=Cat"]) == 2


def test_cli_conflicts_resolve(cli_project, capsys):
    project, data = cli_project
    t = tokens(data, capsys)
    store = project.store
    image = [i["id"] for i in store.images(project.id, split="pool") if i["id"] not in store.current_labels(project.id)][0]
    LabelingSession(project, "ana").label_batch([(image, "Cat")])
    LabelingSession(project, "ben").label_batch([(image, "Cow")])     # disagrees: a conflict
    assert main(["--data", data, "conflicts", "c", "--token", t["boss"]]) == 0
    assert f"image {image:>6}: ben said Cow; in force: Cat by ana" in capsys.readouterr().out
    assert main(["--data", data, "conflicts", "c", str(image), "--token", t["boss"], "--send-to", "ana"]) == 2
    assert "third person" in capsys.readouterr().err
    assert main(["--data", data, "conflicts", "c", str(image), "--token", t["boss"], "--class", "Cow"]) == 0
    assert store.current_labels(project.id)[image] == store.class_id(project.id, "Cow")
    assert store.conflicts(project.id) == []
