"""What `fedcore simulate` prints into a log (stderr a pipe): a line per round as it ends, each
warning once, no library chatter, and the run's quality at the end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fedcore.datasets.paths import resolve_data_dir

pytestmark = pytest.mark.slow


def _run(tmp_path, *argv: str) -> tuple[int, list[tuple[str, bool]]]:
    """Run the CLI with stderr to a pipe; each stderr line, and whether the run was still
    going when the line could be read."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_INTERACTIVE")}
    env |= {"COLUMNS": "200", "FEDCORE_DATA": str(resolve_data_dir())}
    process = subprocess.Popen(
        [sys.executable, "-m", "fedcore", "simulate", *argv, "--out", str(tmp_path / "run")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = [(line.rstrip("\n"), process.poll() is None) for line in process.stderr]
    return process.wait(timeout=120), lines


def test_a_recommender_run_prints_each_round_as_it_ends_and_its_rmse(tmp_path):
    code, lines = _run(
        tmp_path,
        "movielens-fcf",
        *("--set", "train.rounds=2", "--set", "train.local-epochs=1"),
        # half the users evaluate; about half of all users rate nothing in u1.test
        *("--set", "train.fraction=0.2", "--set", "evaluate.fraction=0.5"),
    )
    text = [line for line, _ in lines]
    assert code == 0, text
    assert not any("WARNING" in line for line in text), text[:5]
    assert len(text) <= 4, text  # round 1, round 2, done, results
    first = next(i for i, line in enumerate(text) if line.startswith("round 1/2 aggregated"))
    assert lines[first][1], "round 1 was printed only once the run had ended"
    assert "rmse" in text[first]
    done = next(line for line in text if line.startswith("done"))
    assert "RMSE" in done and "MAE" in done


def test_a_dp_run_prints_each_warning_once_and_plainly(tmp_path):
    code, lines = _run(
        tmp_path,
        "mnist-dp",
        "--set",
        "train.rounds=1",
        "--set",
        "train.local-epochs=1",
        "--set",
        "faults.client-failure-rate=0.3",
        "--quiet",
    )
    text = [line for line, _ in lines]
    assert code == 0, text
    rejected = [line for line in text if "rejected reply" in line]
    assert rejected, text  # Flower's logger printed something: a failed client's warning
    messages = [line[line.index("rejected reply") :] for line in rejected]
    # after Opacus' basicConfig, the root logger printed each again in a format of its own
    assert len(set(messages)) == len(messages), rejected
    assert not any("\x1b" in line for line in text), text  # no colour codes in a log
    assert not any(line.startswith("INFO") for line in text), text
