"""`fedcore deploy-local` without starting a process: its refusals come before anything starts,
and the rounds of the run it follows are read from metrics.jsonl as they land."""

import json

import pytest

from fedcore.cli import MAX_NODES, main
from fedcore.config import parse_config
from simulations.deploy import LocalDeployment
from simulations.deploy.follow import MetricsFollower
from simulations.deploy.local import place_run

ONE_ROUND = ["deploy-local", "--set", "train.rounds=1"]


@pytest.fixture(autouse=True)
def plain_stderr(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("nodes", ["0", "-1", str(MAX_NODES + 1)])
def test_a_node_count_out_of_range_is_refused_at_parse_time(capsys, nodes):
    with pytest.raises(SystemExit) as info:
        main([*ONE_ROUND, "--nodes", nodes])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--nodes" in err and "starting" not in err


def _a_run(folder):
    folder.mkdir()
    (folder / "config.toml").write_text('task = "mlp"\n')
    (folder / "metrics.jsonl").write_text("")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_an_out_holding_a_run_is_refused_before_anything_starts(capsys, tmp_path):
    before = _a_run(tmp_path / "run")
    code = main([*ONE_ROUND, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "already holds a run" in err and "starting" not in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_an_out_that_is_a_file_is_refused_before_anything_starts(capsys, tmp_path):
    (tmp_path / "file").write_text("mine")
    code = main([*ONE_ROUND, "--out", str(tmp_path / "file")])
    err = capsys.readouterr().err
    assert code == 2 and "is a file" in err and "starting" not in err


def test_the_deployment_refuses_a_used_out_before_flwr_run(tmp_path):
    """``run`` checks ``out`` first: no SuperLink is needed to be refused."""
    _a_run(tmp_path / "run")
    deployment = LocalDeployment(tmp_path / "work", parse_config({"data": {"num-clients": 2}}), 2)
    with pytest.raises(FileExistsError, match="already holds a run"):
        deployment.run(out=tmp_path / "run")
    assert not (tmp_path / "work").exists()


def _finished_run(tmp_path):
    run = tmp_path / "work" / "runs" / "20260101-000000-mlp"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"round": 1}\n')
    return run


def test_a_finished_run_moves_into_an_empty_out(tmp_path):
    run = _finished_run(tmp_path)
    (tmp_path / "out").mkdir()
    assert place_run(run, tmp_path / "out") == tmp_path / "out"
    assert (tmp_path / "out" / "metrics.jsonl").read_text() == '{"round": 1}\n'
    assert not run.exists()


def test_a_finished_run_is_not_moved_into_an_out_filled_during_the_run(tmp_path):
    run = _finished_run(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="appeared during the run"):
        place_run(run, tmp_path / "out")
    assert run.exists() and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mine.txt"]


# --- following the run directory as rounds land -----------------------------------------------


def _record(n):
    return json.dumps({"round": n, "status": "aggregated"}) + "\n"


def test_the_follower_reads_nothing_before_the_run_directory_appears(tmp_path):
    follower = MetricsFollower(lambda: None)
    assert follower.poll() == []


def test_the_follower_reads_each_round_once_as_it_lands(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("")
    follower = MetricsFollower(lambda: tmp_path)
    assert follower.poll() == []
    with open(metrics, "a") as f:
        f.write(_record(1))
    assert [r["round"] for r in follower.poll()] == [1]
    assert follower.poll() == []
    with open(metrics, "a") as f:
        f.write(_record(2) + _record(3))
    assert [r["round"] for r in follower.poll()] == [2, 3]


def test_the_follower_holds_a_half_written_line_until_it_ends(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    line = _record(1)
    metrics.write_text(line[:7])
    follower = MetricsFollower(lambda: tmp_path)
    assert follower.poll() == []
    with open(metrics, "a") as f:
        f.write(line[7:])
    assert [r["round"] for r in follower.poll()] == [1]


def test_the_follower_waits_for_metrics_in_a_new_run_directory(tmp_path):
    follower = MetricsFollower(lambda: tmp_path)  # the directory exists, its file not yet
    assert follower.poll() == []
    (tmp_path / "metrics.jsonl").write_text(_record(1))
    assert [r["round"] for r in follower.poll()] == [1]


def test_deploy_local_resume_takes_the_runs_own_config_only(tmp_path, capsys):
    """``--resume`` continues a run with its own config.toml: anything that would change it
    is refused before a process starts."""
    from fedcore.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text('task = "mlp"\n')
    assert main(["deploy-local", "--resume", str(run), "--set", "train.rounds=2"]) == 2
    assert "its own config.toml" in capsys.readouterr().err
    assert main(["deploy-local", "--resume", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
