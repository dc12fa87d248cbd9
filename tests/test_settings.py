"""Settings: the one dataclass, the names and values a person may change on an existing project,
and the `settings` command that prints and changes them (checked as on the Project page)."""

import pytest

from loop.__main__ import main
from loop.project import Paths, Project, create_project
from loop.settings import Settings, changeable, parse_change
from loop.store import Store
from tests.test_project import small_folder


def test_docstring_examples():
    import doctest

    import loop.settings
    assert doctest.testmod(loop.settings).failed == 0


@pytest.mark.parametrize("text, expected", [
    ("overlap_share=0.25", ("overlap_share", 0.25)), ("batch_size= 20", ("batch_size", 20)),
    ("strategy=margin", ("strategy", "margin")), ("auto_accept_precision=none", ("auto_accept_precision", None)),
    ("auto_accept_precision=0.97", ("auto_accept_precision", 0.97)), ("head.warm_steps=50", ("head.warm_steps", 50)),
])
def test_changes_are_typed_like_the_setting(text, expected):
    assert parse_change(text) == expected


@pytest.mark.parametrize("text, message", [
    ("overlap", "is not NAME=VALUE"),
    ("colour=red", "unknown setting 'colour'; known: strategy, control_share"),
    ("batch_size=ten", "setting 'batch_size' takes a whole number, not 'ten'"),
    ("batch_size=1.5", "takes a whole number"),
    ("backbone=efficientnet-lite2", "setting 'backbone' cannot be changed: the images are embedded"),
    ("head.nope=1", "unknown setting 'head.nope'"),
])
def test_bad_changes_name_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_change(text)


def test_every_changeable_setting_round_trips():
    settings = Settings()
    for name, value in changeable().items():
        if value is not None:
            assert settings.with_changes({name: value}).flat()[name] == value


@pytest.fixture
def cli_project(tmp_path, demo_project, shared_cache):
    paths = Paths(tmp_path / "data", cache_dir=shared_cache)
    create_project(Store(paths.database), "a", small_folder(demo_project.root, tmp_path / "animals",
                                                              per_class=4), paths)
    return ["--data", str(tmp_path / "data"), "settings", "a"]


def test_settings_command_prints_and_changes(cli_project, capsys, tmp_path):
    assert main(cli_project) == 0
    out = capsys.readouterr().out
    assert "overlap_share = 0.0" in out and "head.dropout = 0.0" in out
    assert "backbone = efficientnet-lite0   (fixed at creation)" in out
    assert main([*cli_project, "--set", "overlap_share=0.25", "head.dropout=0.1", "strategy=margin"]) == 0
    assert "overlap_share: 0.0 -> 0.25" in capsys.readouterr().out
    settings = Project.open("a", tmp_path / "data").settings
    assert (settings.overlap_share, settings.head.dropout, settings.strategy) == (0.25, 0.1, "margin")


@pytest.mark.parametrize("change, message", [
    ("overlap_share=3", "overlap_share must lie in [0, 1], got 3.0"),
    ("strategy=psychic", "psychic"),
    ("colour=red", "unknown setting 'colour'"),
    ("lease_minutes=abc", "setting 'lease_minutes' takes a number, not 'abc'"),
])
def test_settings_command_refuses_bad_values_and_stores_nothing(cli_project, capsys, tmp_path, change, message):
    before = Project.open("a", tmp_path / "data").settings
    assert main([*cli_project, "--set", "batch_size=20", change]) == 2
    assert message in capsys.readouterr().err
    assert Project.open("a", tmp_path / "data").settings == before     # not even batch_size


def test_settings_command_names_an_unknown_project(tmp_path, capsys):
    assert main(["--data", str(tmp_path), "settings", "nope"]) == 2
    assert "no project 'nope' (known projects: none yet)" in capsys.readouterr().err
