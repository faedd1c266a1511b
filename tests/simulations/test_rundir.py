"""The run directory: one per run, claimed atomically; ``--out`` never overwrites a file."""

from __future__ import annotations

from datetime import datetime

import pytest

from fedcore.cli import main
from fedcore.config import parse_config
from simulations import rundir
from simulations.rundir import RunDirectory

CFG = parse_config({"data": {"num-clients": 2}})


@pytest.fixture
def frozen_clock(monkeypatch):
    """Every run starts in the same second."""

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(rundir, "datetime", Frozen)


def test_two_runs_started_in_the_same_second_get_distinct_directories(tmp_path, frozen_clock):
    a = RunDirectory.create(tmp_path, CFG, "inprocess")
    b = RunDirectory.create(tmp_path, CFG, "inprocess")
    assert a.path != b.path
    assert a.path.name.startswith("20260102-030405") and b.path.name.startswith("20260102-030405")


def test_a_directory_made_by_a_rival_just_before_is_not_shared(tmp_path, frozen_clock, monkeypatch):
    """The race an ``exists()`` check loses: another run makes the directory between this
    run's check and its ``mkdir``. A ``mkdir`` without exist_ok notices; the next name is
    used and the rival's files are not touched."""
    real_mkdir = rundir.os.mkdir
    rivals = []

    def rival_first(path, *args):
        path = type(tmp_path)(path)
        if not rivals and path.parent == tmp_path:
            real_mkdir(path)  # the other run, a moment earlier
            (path / "config.toml").write_text("the other run's config")
            rivals.append(path)
        return real_mkdir(path, *args)

    monkeypatch.setattr(rundir.os, "mkdir", rival_first)
    mine = RunDirectory.create(tmp_path, CFG, "inprocess")
    assert rivals and mine.path != rivals[0]
    assert sorted(p.name for p in rivals[0].iterdir()) == ["config.toml"]
    assert (rivals[0] / "config.toml").read_text() == "the other run's config"


def test_out_pointing_at_a_non_empty_directory_is_refused_and_left_untouched(capsys, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "model.pt").write_bytes(b"my model")
    code = main(["simulate", "--quiet", "--set", "train.rounds=1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "not empty" in err and str(out) in err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "notes.txt"]
    assert (out / "notes.txt").read_text() == "my notes"
    assert (out / "model.pt").read_bytes() == b"my model"


def test_out_that_is_a_file_is_refused(capsys, tmp_path):
    out = tmp_path / "results"
    out.write_text("a file")
    code = main(["simulate", "--quiet", "--set", "train.rounds=1", "--out", str(out)])
    assert code == 2 and "is a file" in capsys.readouterr().err
    assert out.read_text() == "a file"


def test_out_refusal_comes_before_the_data_is_loaded(tmp_path, monkeypatch):
    """Nothing is loaded (or downloaded) for a run that cannot be written."""
    out = tmp_path / "results"
    out.mkdir()
    (out / "x").write_text("")

    def no_loading(*args):
        raise AssertionError("data loaded for a refused --out")

    monkeypatch.setattr(rundir, "checked_task", no_loading)
    with pytest.raises(FileExistsError, match="not empty"):
        RunDirectory.create(tmp_path, CFG, "inprocess", exact=out)


def test_an_empty_or_new_out_directory_is_used(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert RunDirectory.create(tmp_path, CFG, "inprocess", exact=empty).path == empty
    new = tmp_path / "a" / "new"
    assert RunDirectory.create(tmp_path, CFG, "inprocess", exact=new).path == new
    assert (new / "config.toml").is_file()


def test_a_configuration_the_strategy_refuses_leaves_no_run_directory(capsys, tmp_path):
    """A strategy the task's server hook does not implement (task fedsgd steps with a server
    optimizer, not Krum) is refused when the task is checked; that happens before the run
    directory exists, with exit code 2."""
    out = tmp_path / "run"
    settings = ["task=fedsgd", "strategy.name=krum", "evaluate.fraction=0"]
    code = main(
        ["simulate", "--quiet", "--out", str(out)] + [a for s in settings for a in ("--set", s)]
    )
    assert code == 2 and "not 'krum'" in capsys.readouterr().err
    assert not out.exists()
