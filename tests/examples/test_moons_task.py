"""A task written outside fedcore runs through the public API, the CLI and the privacy stack,
named only by its import path (examples/moons_task.py; nothing in fedcore knows it)."""

from pathlib import Path

import pytest

import fedcore
from fedcore.cli import main
from fedcore.config import ConfigError, parse_config
from fedcore.tasks import get_task

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SMALL = {"data": {"num-clients": 6}, "moons": {"width": 16}, "train": {"rounds": 8}}


@pytest.fixture(autouse=True)
def on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def test_the_api_runs_a_task_named_by_its_import_path(tmp_path):
    result = fedcore.simulate(SMALL, task="moons_task:TASK", out=tmp_path / "run")
    assert result.summary["status"] == "completed"
    assert result.summary["final_metrics"]["server-eval/accuracy"] > 0.8  # chance: 0.5
    assert (result.path / "partition.json").exists()


def test_under_secure_aggregation_and_client_level_dp(tmp_path):
    settings = SMALL | {
        "evaluate": {"fraction": 0.0},
        "secagg": {"mode": "full", "bound": 4.0},
        "privacy": {"dp": "distributed", "clip-norm": 1.0, "noise-multiplier": 0.2},
    }
    result = fedcore.simulate(settings, task="moons_task:TASK", out=tmp_path / "run")
    summary = result.summary
    assert summary["status"] == "completed" and summary["final_metrics"]["train/secure-sum"] == 6
    assert summary["privacy"]["against_every_party"] > 0
    assert (result.path / "privacy_report.md").exists()


def test_the_cli_takes_the_import_path_too(tmp_path, capsys):
    settings = ["task=moons_task:TASK", "train.rounds=2", "moons.width=8"]
    argv = ["simulate", "--quiet", "--out", str(tmp_path / "cli")]
    code = main(argv + [a for s in settings for a in ("--set", s)])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_module:TASK", "cannot import 'no_such_module'"),
        ("moons_task:MISSING", "moons_task.MISSING is missing, not a fedcore Task"),
        ("moons_task:ResidualNet", "is type, not a fedcore Task"),
    ],
)
def test_a_bad_import_path_is_a_config_error(name, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"task": name})  # what the path names is checked at parse time
    with pytest.raises(ConfigError, match=message):
        get_task(name)
