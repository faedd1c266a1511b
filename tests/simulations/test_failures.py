"""A run that did nothing did not succeed: round statuses and the run's failure policy.

Each test plays a run that breaks (every client crashes, a cohort that can never reach the
secure-aggregation threshold, a bug in a task hook, a model that goes non-finite) and checks
what the run directory and the exit code say about it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from fedcore.cli import main
from fedcore.config import parse_config
from fedcore.server import RunFailed
from simulations import runner
from simulations.engines.inprocess import run_inprocess

SMALL = {
    "data": {"num-clients": 4},
    "train": {"rounds": 3, "local-epochs": 1},
    "model": {"hidden": [16]},
    "evaluate": {"fraction": 0.0},
}


def _settings(seed: int = 0, **tables):
    merged = {k: SMALL.get(k, {}) | tables.get(k, {}) for k in SMALL.keys() | tables.keys()}
    return merged | {"seed": seed}


def _simulate(tmp_path: Path, **tables):
    """Run through the run directory; returns (raised exception or None, summary, rounds)."""
    out = tmp_path / "run"
    raised = None
    try:
        runner.simulate(parse_config(_settings(**tables)), out=out, progress=False)
    except RunFailed as err:
        raised = err
    summary = json.loads((out / "summary.json").read_text())
    rounds = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return raised, summary, rounds


def _cli(capsys, tmp_path: Path, *settings: str) -> tuple[int, str, Path]:
    out = tmp_path / "cli-run"
    argv = ["simulate", "--quiet", "--out", str(out)]
    for s in ("train.rounds=3", "train.local-epochs=1", "model.hidden=[16]", *settings):
        argv += ["--set", s]
    code = main(argv)
    return code, capsys.readouterr().err, out


# --- every client fails -------------------------------------------------------------------


def test_every_client_failing_fails_the_run_naming_the_failures(tmp_path):
    raised, summary, rounds = _simulate(tmp_path, faults={"client-failure-rate": 1.0})
    assert raised is not None
    assert summary["status"] == "failed"
    assert "no round aggregated" in summary["error"]
    assert "InjectedFault" in summary["error"]  # the clients' own reason, not just a count
    assert [r["status"] for r in rounds] == ["aborted"] * 3
    assert all("InjectedFault" in r["reason"] for r in rounds)
    assert not (tmp_path / "run" / "model.pt").exists()  # no model is presented as a result


def test_every_client_failing_exits_1_from_the_cli(capsys, tmp_path):
    code, err, out = _cli(capsys, tmp_path, "faults.client-failure-rate=1.0")
    assert code == 1
    assert "no round aggregated" in err and "InjectedFault" in err
    assert "Traceback" not in err  # a failed run is reported, not a crash
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"


def test_a_secure_cohort_that_never_reaches_its_threshold_fails_the_run(tmp_path):
    """Every client crashes before sending its masked input: no sum can be unmasked, so
    secure aggregation aborts every round."""
    raised, summary, rounds = _simulate(
        tmp_path,
        data={"num-clients": 4},
        secagg={"mode": "full", "threshold": 0.5},
        faults={"client-failure-rate": 1.0, "crash-stage": "masked-input"},
    )
    assert raised is not None and summary["status"] == "failed"
    assert "secure aggregation aborted" in summary["error"]
    assert [r["status"] for r in rounds] == ["aborted"] * 3


# --- consecutive failures -----------------------------------------------------------------


def _failing_rounds(monkeypatch, failing: set[int]):
    """Every client crashes in the rounds in ``failing``, none in the others."""
    from simulations import faults

    monkeypatch.setattr(
        faults, "client_fails", lambda cfg, server_round, pid: server_round in failing
    )


def test_n_failed_rounds_in_a_row_fail_the_run_and_stop_it(tmp_path, monkeypatch):
    _failing_rounds(monkeypatch, {3, 4, 5})
    raised, summary, rounds = _simulate(
        tmp_path,
        train={"rounds": 8, "max-failed-rounds": 3},
        faults={"client-failure-rate": 0.5},  # turns the fault mod on; _failing_rounds decides
    )
    assert raised is not None and summary["status"] == "failed"
    assert "3 rounds in a row" in summary["error"]
    assert [r["status"] for r in rounds] == ["aggregated", "aggregated"] + ["aborted"] * 3
    assert summary["rounds"] == 5  # stopped there, not after all 8


def test_some_failed_rounds_with_aggregation_otherwise_complete(tmp_path, monkeypatch):
    _failing_rounds(monkeypatch, {2, 4, 5})
    raised, summary, rounds = _simulate(
        tmp_path,
        train={"rounds": 6, "max-failed-rounds": 3},
        faults={"client-failure-rate": 0.5},
    )
    assert raised is None and summary["status"] == "completed"
    statuses = [r["status"] for r in rounds]
    assert statuses == ["aggregated", "aborted", "aggregated", "aborted", "aborted", "aggregated"]
    assert all("reason" in r for r, s in zip(rounds, statuses, strict=True) if s == "aborted")
    assert summary["round_status"] == {"aggregated": 3, "aborted": 3, "empty": 0}
    assert (tmp_path / "run" / "model.pt").exists()


def test_a_partly_failed_round_is_aggregated():
    cfg = parse_config(_settings(faults={"client-failure-rate": 0.5}, seed=4))
    rounds = []
    run_inprocess(cfg, rounds.append)
    assert any(r["train-failures"] for r in rounds)
    assert all(r["status"] == "aggregated" for r in rounds)
    assert all(r["aggregated-clients"] == 4 - len(r["train-failures"]) for r in rounds)


def test_a_secure_sum_counts_the_clients_in_it():
    faults = {"client-failure-rate": 0.2, "crash-stage": "share-keys"}
    cfg = parse_config(
        _settings(data={"num-clients": 8}, secagg={"mode": "full"}, faults=faults, seed=1)
    )
    rounds = []
    run_inprocess(cfg, rounds.append)
    assert any(r["train-failures"] for r in rounds)
    for r in rounds:
        assert r["status"] == "aggregated"
        assert r["aggregated-clients"] == r["train"]["secure-sum"] == 8 - len(r["train-failures"])


def test_a_round_that_sampled_nobody_is_empty_not_a_failure(tmp_path):
    """Poisson sampling at a low rate draws nobody in some rounds: those are empty, they do
    not count as failures, and the run completes once any round aggregated."""
    raised, summary, rounds = _simulate(
        tmp_path,
        data={"num-clients": 4},
        train={"rounds": 8, "sampling": "poisson", "fraction": 0.2, "max-failed-rounds": 1},
    )
    statuses = [r["status"] for r in rounds]
    assert "empty" in statuses and "aggregated" in statuses, statuses
    assert raised is None and summary["status"] == "completed"


# --- bugs surface -------------------------------------------------------------------------


def _broken_task_hook(monkeypatch):
    from fedcore.tasks import mlp

    def train_one_client(model, data, params, rng):
        raise TypeError("unsupported operand type(s) for +: 'Tensor' and 'NoneType'")

    monkeypatch.setattr(
        mlp, "TASK", dataclasses.replace(mlp.TASK, train_one_client=train_one_client)
    )


def test_a_bug_in_a_task_hook_fails_the_run_with_its_traceback(tmp_path, monkeypatch):
    _broken_task_hook(monkeypatch)
    out = tmp_path / "run"
    with pytest.raises(TypeError, match="unsupported operand"):
        runner.simulate(parse_config(SMALL), out=out, progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "TypeError" in summary["error"]
    assert (out / "metrics.jsonl").read_text() == ""  # not recorded as an aborted round


BROKEN_HOOK_CLI = """
import dataclasses, sys
from fedcore.cli import main
from fedcore.tasks import mlp

def train_one_client(model, data, params, rng):
    raise TypeError("unsupported operand type(s) for +: 'Tensor' and 'NoneType'")

mlp.TASK = dataclasses.replace(mlp.TASK, train_one_client=train_one_client)
sys.exit(main(sys.argv[1:]))
"""


def test_a_bug_in_a_task_hook_reaches_the_cli_log_as_a_traceback(tmp_path):
    """``fedcore simulate`` with a task hook that has a bug: exit 1, and the log holds the
    traceback down to the hook, not an "aborted round"."""
    import subprocess
    import sys

    out = tmp_path / "run"
    argv = ["simulate", "--quiet", "--out", str(out), "--set", "train.rounds=2"]
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", BROKEN_HOOK_CLI, *argv],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" in result.stderr
    assert "TypeError: unsupported operand" in result.stderr
    assert "in train_one_client" in result.stderr  # the frame where the bug is
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "TypeError" in summary["error"]


def test_a_bug_in_a_worker_process_fails_the_run():
    """With workers, a ClientApp bug in a worker process reaches the server too. The app is
    a string, so calling it is a TypeError in the worker (a test module's own function
    cannot be imported there under pytest's importlib mode)."""
    from fedcore.server import run_server
    from simulations.engines.inprocess import InProcessGrid

    cfg = parse_config(_settings(train={"rounds": 1}))
    with (
        InProcessGrid(cfg, app_factory=str, workers=2) as grid,
        pytest.raises(TypeError, match="not callable"),
    ):
        run_server(grid, cfg)


# --- the model goes non-finite --------------------------------------------------------------


def test_a_model_that_goes_non_finite_fails_the_run(tmp_path, monkeypatch):
    from strategies.statistics import StatisticsStrategy

    real = StatisticsStrategy.aggregate_train

    def nan_in_round_2(self, server_round, replies):
        arrays, metrics = real(self, server_round, replies)
        if server_round == 2:
            from fedcore.arrays import to_record

            arrays = to_record({k: np.full_like(v.numpy(), np.nan) for k, v in arrays.items()})
        return arrays, metrics

    monkeypatch.setattr(StatisticsStrategy, "aggregate_train", nan_in_round_2)
    raised, summary, rounds = _simulate(tmp_path, train={"rounds": 4})
    assert raised is not None and summary["status"] == "failed"
    assert "not finite" in summary["error"]
    assert [r["status"] for r in rounds] == ["aggregated", "aborted"]
    assert rounds[-1]["non-finite"] is True


def test_clients_whose_updates_diverge_under_secure_aggregation_fail_the_run(tmp_path):
    """A learning rate that overflows every client's update to NaN: under secure aggregation
    the NaNs used to be cast to arbitrary integers, masked, summed, and the run 'completed'
    with a garbage model. Each client now refuses to mask a non-finite update, so no round
    aggregates and the run fails saying why."""
    raised, summary, rounds = _simulate(
        tmp_path,
        data={"num-clients": 5},
        train={"rounds": 2, "lr": 1e38},
        secagg={"mode": "full"},
        privacy={"dp": "sample", "clip-norm": 1.0, "noise-multiplier": 1.0},
    )
    assert raised is not None and summary["status"] == "failed"
    assert {r["status"] for r in rounds} == {"aborted"}
    assert "not finite" in json.dumps(rounds[0])
