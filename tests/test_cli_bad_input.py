"""The CLI's promise for OS and data errors (issue 17, finding 10): one line, exit 2, no
traceback, found before any data is loaded; ``fedcore --version``; a BOM-prefixed scenario."""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import pytest

from fedcore.cli import main
from fedcore.config import RunConfig, load_scenario, to_toml

# A dataset that is not there: an --out error must come first, before the data is read.
NO_DATA = ["--set", "data.dataset=femnist", "--set", "data.data-dir=/nonexistent-fedcore"]


@pytest.fixture(autouse=True)
def plain_80_column_stderr(monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "80")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _fails_in_one_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return err


def _unwritable(tmp_path: Path) -> Path:
    """A folder no directory can be made in (root ignores modes: a read-only sysfs)."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o500)
        return folder
    if not Path("/sys/kernel").is_dir():
        pytest.skip("running as root without a sysfs: no folder is unwritable")
    return Path("/sys")


def test_version_prints_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"fedcore {importlib.metadata.version('fedcore')}"


@pytest.mark.parametrize("command", ["simulate", "partition"])
def test_out_under_a_file_is_refused_before_the_data_loads(capsys, tmp_path, command):
    (tmp_path / "a-file").write_text("mine")
    err = _fails_in_one_line(capsys, [command, *NO_DATA, "--out", "a-file/run"])
    assert "a-file" in err and "not a directory" in err
    assert (tmp_path / "a-file").read_text() == "mine"


def test_an_unwritable_out_is_refused_before_the_data_loads(capsys, tmp_path):
    out = _unwritable(tmp_path) / "run"
    err = _fails_in_one_line(capsys, ["simulate", *NO_DATA, "--out", str(out)])
    assert f"--out {out}" in err and "cannot create" in err


def test_an_unwritable_default_runs_folder_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(_unwritable(tmp_path))
    err = _fails_in_one_line(capsys, ["simulate", *NO_DATA])
    assert "runs" in err and "cannot create" in err


def test_an_absurd_model_is_refused_before_allocation(capsys):
    err = _fails_in_one_line(capsys, ["simulate", "--set", "model.hidden=[1000000000]"])
    assert "model.hidden" in err and "parameters" in err


def test_min_clients_above_the_clients_is_one_line_not_a_300_s_wait(capsys):
    err = _fails_in_one_line(capsys, ["simulate", "--set", "train.min-clients=11"])
    assert "train.min-clients = 11" in err


def test_a_scenario_with_a_utf8_bom_is_read_like_without(tmp_path):
    """Windows editors write a BOM; it carries nothing in UTF-8, so it is skipped."""
    text = to_toml(RunConfig()).replace("seed = 0", "seed = 7")
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "plain.toml").write_text(text, encoding="utf-8")
    assert load_scenario(tmp_path / "bom.toml") == load_scenario(tmp_path / "plain.toml")
    assert load_scenario(tmp_path / "bom.toml").seed == 7


def _run_dir(tmp_path: Path) -> Path:
    """A run directory's report inputs, written by hand: a DP config and one ledger event."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(to_toml(RunConfig()))
    (run / "metrics.jsonl").write_text("")
    return run


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("config.toml", b"[privacy\ndelta = "),
        ("config.toml", b"\xff\xfe not utf-8"),
        ("ledger.jsonl", b'{"round": 1, "mechanism"'),
        ("ledger.jsonl", b"\x00\x01\x02"),
        ("metrics.jsonl", b"{not json}\n"),
    ],
    ids=["toml", "config-bytes", "ledger-json", "ledger-bytes", "metrics"],
)
def test_report_on_a_corrupt_run_directory_is_one_line(capsys, tmp_path, name, content):
    run = _run_dir(tmp_path)
    (run / name).write_bytes(content)
    err = _fails_in_one_line(capsys, ["report", str(run)])
    assert str(run) in err


def test_report_on_an_unreadable_file_is_one_line(capsys, tmp_path):
    run = _run_dir(tmp_path)
    (run / "ledger.jsonl").mkdir()  # a folder where the ledger should be: IsADirectoryError
    err = _fails_in_one_line(capsys, ["report", str(run)])
    assert "ledger.jsonl" in err or str(run) in err


def test_report_of_a_good_run_directory_still_works(capsys, tmp_path):
    run = _run_dir(tmp_path)
    assert main(["report", str(run)]) == 0
    assert json.loads((run / "privacy_report.json").read_text())


def test_an_unknown_key_with_a_line_break_is_still_one_line(capsys):
    """Found by fuzzing: ``--set 'w<newline>x=1'`` printed the key raw, on two lines."""
    err = _fails_in_one_line(capsys, ["simulate", "--set", "w\nx=1"])
    assert "'w\\nx'" in err


@pytest.mark.parametrize("nesting", [("[", "]"), ("{a = ", "}")], ids=["arrays", "tables"])
def test_values_nested_past_the_parsers_recursion_limit_are_one_line(capsys, tmp_path, nesting):
    """Found by fuzzing: tomllib raised RecursionError, a traceback, from a file or --set."""
    opener, closer = nesting
    value = f"{opener * 5000}1{closer * 5000}"
    (tmp_path / "deep.toml").write_text(f"seed = {value}\n")
    assert "nested too deeply" in _fails_in_one_line(capsys, ["simulate", "deep.toml"])
    err = _fails_in_one_line(capsys, ["simulate", "--set", f"seed={value}"])
    assert "nested too deeply" in err


def test_a_key_of_thousands_of_parts_is_one_line(capsys, tmp_path):
    (tmp_path / "dotted.toml").write_text("a." * 5000 + "b = 1\n")
    assert "nested too deeply" in _fails_in_one_line(capsys, ["simulate", "dotted.toml"])


def test_warm_exec_refuses_a_bad_poll_and_a_missing_secret_file(capsys, tmp_path):
    address = ["warm-exec", "--runtime-api-address", "127.0.0.1:9094", "--insecure"]
    err = _fails_in_one_line(capsys, [*address, "--poll", "0"])
    assert "poll must be positive" in err
    missing = tmp_path / "no-secret"
    err = _fails_in_one_line(capsys, [*address, "--superexec-auth-secret-file", str(missing)])
    assert "no-secret" in err
