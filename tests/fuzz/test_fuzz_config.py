"""Fuzzing the first boundary: scenario settings and ``--set`` overrides (issue 17).

The key space is derived from the code: every key of :func:`fedcore.config.reference_run_config`
(the core sections and every built-in task's tables), with each key's field rules, so a new
key is fuzzed without a change here. Values are hostile: wrong types, extreme and
non-finite numbers, odd strings, conflicting combinations, tables where a scalar belongs.
The invariant: a :class:`ConfigError` (what the CLI turns into one line and exit 2) or a
config that survives Flower's run config and a scenario file unchanged and that its task
accepts or refuses with a ConfigError; never another exception. Through ``fedcore.cli.main``
a sample of overrides as typed on the command line exits 2 with one line, no traceback.
``benchmarks/fuzz.py`` runs :data:`overrides` and :data:`command_lines` with more examples.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcore.cli import main
from fedcore.config import (
    ConfigError,
    RunConfig,
    load_scenario,
    parse_config,
    reference_run_config,
    to_run_config,
    to_toml,
)
from fedcore.config.sections import BUILTIN_TASKS, builtin_options
from fedcore.tasks import checked_task

MAX_EXAMPLES = 200
MAX_CLI_EXAMPLES = 40
MAX_FILE_EXAMPLES = 60


@functools.cache
def fields() -> dict[str, tuple[dataclasses.Field, Any]]:
    """Every key a built-in run reads -> (its field, its type): the core sections walked
    from :class:`RunConfig`, the tasks' tables from their registry."""
    out: dict[str, tuple[dataclasses.Field, Any]] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "sections":
                continue
            key = prefix + f.name.replace("_", "-")
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], key + ".")
            else:
                out[key] = (f, hints[f.name])

    walk(RunConfig, "")
    out |= {key: (o.field, o.hint) for key, o in builtin_options().items()}
    assert set(out) == set(reference_run_config()), "the walk missed a key"
    return out


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_EXTREME_INTS = st.sampled_from([0, -1, 1, 2, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 10**30])
_EXTREME_FLOATS = st.sampled_from(
    [0.0, -0.0, 1e-320, 1e-9, 0.5, 1.0, 1.0000001, 1e308, float("nan"), float("inf"), -1e308]
)


def junk() -> st.SearchStrategy:
    """TOML values of any type, including tables and lists where a scalar belongs."""
    scalars = st.one_of(
        st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), _TEXT, _EXTREME_INTS
    )
    return st.one_of(
        scalars,
        st.lists(scalars, max_size=3),
        st.dictionaries(st.sampled_from(["a", "rounds", "name"]), scalars, max_size=2),
    )


def value_for(key: str) -> st.SearchStrategy:
    """A value for ``key``: of its own type (within and beyond its rules), or junk."""
    f, hint = fields()[key]
    m = f.metadata
    if hint is bool:
        own = st.one_of(st.booleans(), st.sampled_from(["true", "false", "TRUE", "yes"]))
    elif hint is int:
        own = st.one_of(
            st.integers(-5, 5000), _EXTREME_INTS, st.from_regex(r"-?\d{1,25}", fullmatch=True)
        )
    elif hint is float:
        own = st.one_of(
            st.floats(), _EXTREME_FLOATS, st.sampled_from(["1e3", "nan", "-inf", "0x1"])
        )
    elif hint is str:
        own = st.one_of(st.sampled_from(m.get("choices") or ("",)), _TEXT)
    else:  # tuple[int, ...]
        ints = st.one_of(st.integers(-3, 3000), _EXTREME_INTS)
        own = st.one_of(
            st.lists(ints, max_size=4),
            st.lists(ints, min_size=1, max_size=3).map(lambda v: ",".join(map(str, v))),
            _TEXT,
        )
    return st.one_of(own, own, junk())


def valid_value_for(key: str) -> st.SearchStrategy:
    """A value for ``key`` within its own rules (choices, bounds), extremes included: a
    combination of such values is what the rules between settings must judge."""
    f, hint = fields()[key]
    m = f.metadata
    if hint is bool:
        return st.booleans()
    if m.get("choices"):
        return st.sampled_from(m["choices"])
    if hint is str:
        return st.just(f.default)
    if hint not in (int, float):  # tuple[int, ...]
        return st.lists(st.integers(1, 64), min_size=1, max_size=3)
    low = m.get("ge") if m.get("ge") is not None else m.get("gt")
    low = 0 if low is None else low
    high = m.get("le")
    if hint is int:
        top = int(high) if high is not None else int(low) + 100
        edges = [int(low), top] + ([] if high is not None else [2**31, 10**12])
        return st.one_of(st.integers(int(low), top), st.sampled_from(edges))
    top = high if high is not None else 1e6
    return st.one_of(
        st.floats(low, top, exclude_min=m.get("gt") is not None),
        st.sampled_from([top] + ([] if high is not None else [1e300])),
    )


@st.composite
def overrides(draw) -> dict[str, Any]:
    """A few dotted settings: known keys with values within their rules (a combination
    the rules between settings judge) or hostile ones, now and then an unknown or malformed
    key, and a task (whose tables decide which keys it reads)."""
    keys = draw(st.lists(st.sampled_from(sorted(fields())), min_size=1, max_size=6, unique=True))
    hostile = draw(st.sampled_from([value_for, valid_value_for]))
    out = {k: draw(hostile(k) if i == 0 else valid_value_for(k)) for i, k in enumerate(keys)}
    if draw(st.booleans()):
        out["task"] = draw(st.sampled_from([*BUILTIN_TASKS, "nope", "pkg.mod:THING", "a:b:c"]))
    if draw(st.integers(0, 9)) == 0:
        out[
            draw(st.sampled_from(["train.nope", "nope", "model", "train", "a..b", ".x", "data."]))
        ] = draw(junk())
    return out


def check_overrides(settings_: dict[str, Any]) -> None:
    """A ConfigError, or a config that round-trips and that its task judges by ConfigError."""
    try:
        cfg = parse_config({}, settings_)
    except ConfigError:
        return
    assert parse_config(to_run_config(cfg)) == cfg, "changed by Flower's run config"
    assert parse_config(tomllib.loads(to_toml(cfg))) == cfg, "changed by a scenario file"
    try:
        checked_task(cfg)
    except ConfigError:
        return


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(overrides())
def test_any_settings_are_a_config_or_a_config_error(settings_):
    check_overrides(settings_)


# --- scenario files -------------------------------------------------------------------------


@st.composite
def scenario_files(draw) -> bytes:
    """A scenario file's bytes: a real one (a bundled-like default) damaged, given a BOM,
    deeply nested, or text of any kind."""
    text = to_toml(RunConfig()).encode()
    kind = draw(st.sampled_from(["damaged", "bom", "nested", "dotted", "text"]))
    if kind == "damaged":
        at = draw(st.lists(st.integers(0, len(text) - 1), min_size=1, max_size=4))
        cut = draw(st.integers(0, len(text)))
        return bytes(b ^ draw(st.integers(1, 255)) if i in at else b for i, b in enumerate(text))[
            :cut
        ]
    if kind == "bom":
        return b"\xef\xbb\xbf" + text
    if kind == "nested":  # arrays or inline tables nested past any parser's recursion limit
        depth = draw(st.sampled_from([10, 1000, 100_000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a = ", "}")]))
        return f"seed = {opener * depth}1{closer * depth}\n".encode()
    if kind == "dotted":  # a key of many parts: tables nested as deep
        return ("a." * draw(st.sampled_from([10, 5000])) + "b = 1\n").encode()
    return draw(st.binary(max_size=200)) if draw(st.booleans()) else draw(_TEXT).encode()


def check_scenario_file(raw: bytes) -> None:
    """A scenario file is a config or a ConfigError naming it, whatever its bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenario.toml"
        path.write_bytes(raw)
        try:
            load_scenario(path)
        except ConfigError as err:
            assert str(err).strip()


@settings(max_examples=MAX_FILE_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(scenario_files())
def test_any_scenario_file_is_a_config_or_a_config_error(raw):
    check_scenario_file(raw)


# --- through the command line ---------------------------------------------------------------


def _typed(value: Any) -> str:
    """``value`` as a user types it after ``--set key=`` (TOML, or bare text)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return (
            "[" + ", ".join(_typed(v) if not isinstance(v, str) else repr(v) for v in value) + "]"
        )
    return repr(value)


@st.composite
def command_lines(draw) -> list[str]:
    """``--set`` arguments as typed; valid ones are then refused by ``--out`` under a file,
    so no sample runs a simulation."""
    sets = draw(overrides())
    args = []
    for key, value in sets.items():
        args += ["--set", f"{key}={_typed(value) if not isinstance(value, dict) else '{'}"]
    if draw(st.integers(0, 3)) == 0:  # a malformed argument, or an unknown key of any text
        args += ["--set", draw(st.one_of(_TEXT, st.tuples(_TEXT, _TEXT).map("=".join)))]
    return args


def check_command_line(args: list[str], out_under_a_file: str, capsys) -> None:
    try:
        code = main(["simulate", *args, "--out", out_under_a_file, "--quiet"])
    except SystemExit as usage:  # argparse's own error ("--set -x" lacks its value)
        err = capsys.readouterr().err
        assert usage.code == 2 and "usage:" in err and "Traceback" not in err, err
        return
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.fixture(scope="module")
def out_under_a_file(tmp_path_factory) -> str:
    blocker = tmp_path_factory.mktemp("fuzz") / "a-file"
    blocker.write_text("not a folder")
    return str(blocker / "run")


@settings(
    max_examples=MAX_CLI_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(args=command_lines())
def test_any_set_arguments_exit_2_with_one_line(args, out_under_a_file, capsys):
    check_command_line(args, out_under_a_file, capsys)
