"""What a run prints: one plain line per round where stderr is no terminal, and its quality
at the end."""

import io
import math

import pytest
from rich.console import Console

from simulations.progress import RoundProgress, final_quality, round_line


@pytest.fixture(autouse=True)
def no_forced_terminal(monkeypatch):
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


def _record(n, **parts):
    return {"round": n, "status": "aggregated", **parts}


class _Log(io.StringIO):
    """A stream that is no terminal and records each flush (a pipe to a log reader)."""

    def __init__(self):
        super().__init__()
        self.flushed: list[str] = []

    def flush(self):
        self.flushed.append(self.getvalue())


def test_without_a_terminal_each_round_prints_one_line_as_it_ends():
    log = _Log()
    with RoundProgress(3, "digits fedavg", console=Console(file=log)) as progress:
        progress(_record(1, **{"server-eval": {"accuracy": 0.5, "loss": 1.25}}))
        assert log.flushed and log.flushed[-1].splitlines() == [
            "round 1/3 aggregated  acc 0.500  loss 1.250"
        ]
        progress(_record(2, **{"server-eval": {"accuracy": 0.75, "loss": 0.5}}))
        assert len(log.flushed[-1].splitlines()) == 2
    assert "\x1b" not in log.getvalue() and "\r" not in log.getvalue()
    assert len(log.getvalue().splitlines()) == 2  # no bar drawn at the end


def test_a_disabled_progress_prints_nothing_without_a_terminal():
    log = _Log()
    with RoundProgress(2, "digits fedavg", console=Console(file=log), enabled=False) as progress:
        progress(_record(1))
    assert log.getvalue() == ""


def test_a_round_line_names_an_aborted_round_and_its_failures():
    record = {
        "round": 4,
        "status": "aborted",
        "train-failures": ["node 1: x", "node 2: y"],
        "reason": "2 of 2 sampled clients failed (first: node 1: x)",
    }
    line = round_line(record, 5)
    assert line.startswith("round 4/5 aborted")
    assert "2 failed" in line and "node 1: x" in line


def test_a_round_line_shows_a_recommenders_rmse():
    line = round_line(_record(1, **{"client-eval": {"mse": 0.81, "mae": 0.7}}), 2)
    assert "rmse 0.900" in line and "mae 0.700" in line


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        ({"server-eval/accuracy": 0.91234, "server-eval/loss": 0.3}, "test accuracy 0.9123"),
        ({"client-eval/accuracy": 0.8, "client-eval/loss": 0.3}, "clients' test accuracy 0.8000"),
        (
            {"client-eval/mse": 0.81, "client-eval/mae": 0.7, "train/train-loss": 0.1},
            "clients' test RMSE 0.9000, MAE 0.7000",
        ),
        ({"train/train-loss": 0.1}, ""),
    ],
)
def test_the_final_quality_names_the_tasks_metric(final, expected):
    assert final_quality(final) == expected


def test_the_server_evaluation_is_preferred_to_the_clients():
    final = {"server-eval/accuracy": 0.9, "client-eval/accuracy": 0.1}
    assert final_quality(final) == "test accuracy 0.9000"


def test_rmse_is_the_root_of_the_mse():
    got = final_quality({"server-eval/mse": 2.0})
    assert got == f"test RMSE {math.sqrt(2.0):.4f}"
