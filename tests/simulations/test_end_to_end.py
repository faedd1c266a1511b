"""The default scenario end to end, and what a run leaves when it fails midway."""

import json

import pytest

from fedcore.cli import scenario_path
from fedcore.config import load_scenario, parse_config
from simulations import runner


def test_default_scenario_reaches_95_percent_on_digits(tmp_path):
    cfg = load_scenario(scenario_path("digits-dirichlet"))
    result = runner.simulate(cfg, out=tmp_path / "run", progress=False)
    summary = result.summary
    assert summary["status"] == "completed" and summary["rounds"] == 20
    assert summary["final_metrics"]["server-eval/accuracy"] >= 0.95
    rounds = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["round"] for r in rounds] == list(range(1, 21))
    last = rounds[-1]
    for key in ("accuracy-std", "accuracy-worst10", "accuracy"):
        assert key in last["client-eval"]
    assert last["bytes-sent"] > 0 and last["bytes-received"] > 0
    assert last["peak-memory-mb"] > 0 and last["seconds"] > 0
    report = json.loads((tmp_path / "run" / "partition.json").read_text())
    assert sum(report["sizes"]) == 1437 and len(report["sizes"]) == 10


def test_run_failing_midway_keeps_completed_rounds(tmp_path, monkeypatch):
    cfg = parse_config({"train": {"rounds": 4}, "model": {"hidden": [16]}})
    real_run_engine = runner.run_engine

    def failing_after_two_rounds(cfg, on_round, *resume):
        def on_round_then_fail(record):
            on_round(record)
            if record["round"] == 2:
                raise RuntimeError("worker lost")

        return real_run_engine(cfg, on_round_then_fail, *resume)

    monkeypatch.setattr(runner, "run_engine", failing_after_two_rounds)
    with pytest.raises(RuntimeError, match="worker lost"):
        runner.simulate(cfg, out=tmp_path / "run", progress=False)
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "worker lost" in summary["error"]
    assert summary["rounds"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert (run / "accuracy.png").exists() and (run / "config.toml").exists()


def test_flower_app_components_load_from_pyproject():
    import tomllib
    from importlib import import_module
    from pathlib import Path

    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    components = pyproject["tool"]["flwr"]["app"]["components"]
    kinds = {"serverapp": ServerApp, "clientapp": ClientApp}
    for kind, ref in components.items():
        module, attr = ref.split(":")
        assert isinstance(getattr(import_module(module), attr), kinds[kind])
    # the app's run-config defaults are valid fedcore settings
    parse_config(pyproject["tool"]["flwr"]["app"]["config"])
