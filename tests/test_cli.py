"""Tests for fedcore.cli: usage errors exit 2 with one message, the reference, an end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedcore.cli import DEFAULT_SCENARIO, main, scenario_path
from fedcore.config import ConfigError, describe, load_scenario

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "simulations" / "scenarios"
BUNDLED = sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))
RUN_FILES = (
    "config.toml",
    "metrics.jsonl",
    "summary.json",
    "partition.json",
    "model.pt",
    "accuracy.png",
    "loss.png",
)


@pytest.fixture(autouse=True)
def plain_80_column_stderr(monkeypatch):
    """Rich sizes and colours its output from the environment; pin what a log file gets."""
    monkeypatch.setenv("COLUMNS", "80")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


# Each case: argv and the words its error must name. Relative paths keep messages short.
BAD_INPUT = {
    "unknown-key": (["simulate", "--set", "train.nope=1"], ["train.nope"]),
    "bad-value": (["simulate", "--set", "train.rounds=0"], ["train.rounds", ">= 1"]),
    "missing-file": (["simulate", "no-such-scenario.toml"], ["no-such-scenario.toml"]),
    "unknown-scenario": (["simulate", "no-such-scenario"], ["no-such-scenario", *BUNDLED]),
    "malformed-set": (["simulate", "--set", "train.rounds"], ["train.rounds", "key=value"]),
}


def _main(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("argv", "names"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_exits_2_with_an_error_naming_it(capsys, monkeypatch, tmp_path, argv, names):
    monkeypatch.chdir(tmp_path)
    code, err = _main(capsys, argv)
    assert code == 2
    assert err.startswith("error: ")
    assert "Traceback" not in err
    for name in names:
        assert name in err


@pytest.mark.parametrize(
    ("argv", "names"),
    [pytest.param(*case, id=name) for name, case in BAD_INPUT.items()],
)
def test_bad_input_error_is_a_single_line(capsys, monkeypatch, tmp_path, argv, names):
    monkeypatch.chdir(tmp_path)
    _, err = _main(capsys, argv)
    assert len(err.strip().splitlines()) == 1, err


def test_error_keeps_the_bracketed_table_name(capsys):
    _, err = _main(capsys, ["simulate", "--set", "train.nope=1"])
    assert "[train]" in err


def test_module_entry_point_exits_2_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fedcore", "simulate", "--set", "train.rounds=-1"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "train.rounds" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_config_command_prints_every_setting(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "train.rounds" in out
    for key, _, _ in describe():
        assert key in out


# --- scenario lookup ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUNDLED)
def test_scenario_path_resolves_a_bundled_name(name):
    assert scenario_path(name).resolve() == (SCENARIO_DIR / f"{name}.toml").resolve()


def test_scenario_path_keeps_a_toml_path_even_if_missing(tmp_path):
    path = tmp_path / "mine.toml"
    assert scenario_path(str(path)) == path


def test_scenario_path_keeps_an_existing_path_without_suffix(tmp_path):
    path = tmp_path / "mine"
    path.write_text("seed = 1\n")
    assert scenario_path(str(path)) == path


def test_scenario_path_lists_bundled_names_for_an_unknown_name():
    with pytest.raises(ConfigError) as info:
        scenario_path("no-such-scenario")
    for name in BUNDLED:
        assert name in str(info.value)


# --- end to end ---------------------------------------------------------------------------------

RUN_ARGS = ["simulate", "--set", "train.rounds=2", "--set", "train.local-epochs=1", "--quiet"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> tuple[int, Path]:
    """The default scenario for two rounds, run once for the tests below."""
    out = tmp_path_factory.mktemp("cli") / "run"
    return main([*RUN_ARGS, "--out", str(out)]), out


def test_short_run_exits_0(short_run):
    assert short_run[0] == 0


def test_short_run_writes_every_run_file(short_run):
    _, out = short_run
    for name in RUN_FILES:
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name


def test_short_run_metrics_have_one_json_line_per_round(short_run):
    lines = (short_run[1] / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2]


def test_short_run_summary_reports_completion_and_accuracy(short_run):
    summary = json.loads((short_run[1] / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["rounds"] == 2
    assert 0.0 <= summary["final_metrics"]["server-eval/accuracy"] <= 1.0


def test_short_run_config_toml_reproduces_the_resolved_config(short_run):
    expected = load_scenario(
        scenario_path(DEFAULT_SCENARIO), {"train.rounds": 2, "train.local-epochs": 1}
    )
    assert load_scenario(short_run[1] / "config.toml") == expected


def test_short_run_partition_report_is_json(short_run):
    assert json.loads((short_run[1] / "partition.json").read_text())


def test_short_run_plots_are_png(short_run):
    for name in ("accuracy.png", "loss.png"):
        assert (short_run[1] / name).read_bytes().startswith(b"\x89PNG"), name


def test_rerun_into_the_same_out_is_refused_and_keeps_the_run(short_run, capsys):
    _, out = short_run
    before = {name: (out / name).read_bytes() for name in RUN_FILES}
    code, err = _main(capsys, [*RUN_ARGS, "--out", str(out)])
    assert code == 2
    assert "already holds a run" in err
    assert {name: (out / name).read_bytes() for name in RUN_FILES} == before


def test_deploy_local_refuses_an_existing_out_before_starting_anything(capsys, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    code, err = _main(capsys, ["deploy-local", "--set", "train.rounds=1", "--out", str(out)])
    assert code == 2 and "not empty" in err and "starting" not in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
