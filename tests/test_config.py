"""Tests for fedcore.config: parsing, error messages that name the key, round trips, reference."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcore.config import (
    ENGINES,
    STRATEGIES,
    TASKS,
    ConfigError,
    DataConfig,
    RunConfig,
    TrainConfig,
    describe,
    load_scenario,
    parse_config,
    parse_override,
    reference_run_config,
    to_dict,
    to_run_config,
    to_toml,
)
from fedcore.datasets import DATASETS
from fedcore.partition import PARTITIONERS
from fedcore.tasks import get_task

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "simulations" / "scenarios"
SCENARIOS = sorted(SCENARIO_DIR.glob("*.toml"))
FAST = settings(max_examples=30, deadline=None)


def _keys(cls: type) -> list[str]:
    return [f.name.replace("_", "-") for f in dataclasses.fields(cls)]


def _flat(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in nested.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return str(info.value)


# --- parsing ------------------------------------------------------------------------------------


def test_empty_mapping_gives_the_defaults():
    assert parse_config({}) == RunConfig()


def test_scenario_folder_is_not_empty():
    assert SCENARIOS, f"no scenarios in {SCENARIO_DIR}"


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_bundled_scenario_parses_to_the_values_in_its_file(path):
    cfg = load_scenario(path)
    resolved = _flat(to_dict(cfg))
    for key, value in _flat(tomllib.loads(path.read_text())).items():
        assert resolved[key] == value, key


def test_nested_tables_and_dotted_keys_give_the_same_config():
    nested = {"seed": 3, "train": {"rounds": 5, "local-epochs": 2}, "model": {"hidden": [32]}}
    dotted = {"seed": 3, "train.rounds": 5, "train.local-epochs": 2, "model.hidden": [32]}
    cfg = parse_config(nested)
    assert cfg == parse_config(dotted)
    assert (cfg.seed, cfg.train.rounds, cfg.train.local_epochs, cfg.model.hidden) == (
        3,
        5,
        2,
        (32,),
    )


def test_dotted_keys_merge_with_a_table_of_the_same_name():
    cfg = parse_config({"train": {"rounds": 5}, "train.lr": 0.1})
    assert (cfg.train.rounds, cfg.train.lr) == (5, 0.1)


def test_override_wins_over_the_file_and_keeps_its_other_settings(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[train]\nrounds = 7\nlr = 0.1\n")
    cfg = load_scenario(path, dict([parse_override("train.rounds=3")]))
    assert (cfg.train.rounds, cfg.train.lr) == (3, 0.1)


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("train.rounds=5", "train.rounds", 5),
        ("train.lr=0.1", "train.lr", 0.1),
        ("train.lr=1e-3", "train.lr", 1e-3),
        ("data.download=true", "data.download", True),
        ("model.hidden=[64, 32]", "model.hidden", [64, 32]),
        ('strategy.name="fedprox"', "strategy.name", "fedprox"),
        (" train.rounds = 5", "train.rounds", 5),
    ],
)
def test_parse_override_reads_the_value_as_toml(text, key, value):
    parsed_key, parsed = parse_override(text)
    assert (parsed_key, parsed) == (key, value)
    assert type(parsed) is type(value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("strategy.name=fedprox", "fedprox"),
        ("model.hidden=64,32", "64,32"),
        ("data.data-dir=/tmp/a=b", "/tmp/a=b"),
    ],
)
def test_parse_override_falls_back_to_the_bare_string(text, value):
    assert parse_override(text)[1] == value


@pytest.mark.parametrize("text", ["train.rounds", "", "=5", " =5"])
def test_parse_override_rejects_text_without_a_key_and_equals(text):
    with pytest.raises(ConfigError, match="key=value"):
        parse_override(text)


def test_flat_run_config_strings_are_converted_to_the_field_type():
    cfg = parse_config({"model.hidden": "64, 32", "data.download": "true", "train.lr": "0.5"})
    assert (cfg.model.hidden, cfg.data.download, cfg.train.lr) == ((64, 32), True, 0.5)


# --- errors name the key and what is allowed ----------------------------------------------------


def test_unknown_top_level_key_names_it_and_lists_allowed_keys():
    message = _error({"nope": 1})
    assert "nope" in message
    for key in _keys(RunConfig):
        assert key in message


@pytest.mark.parametrize(
    "raw", [{"train": {"nope": 1}}, {"train.nope": 1}], ids=["table", "dotted"]
)
def test_unknown_key_in_a_table_names_the_dotted_key_and_lists_allowed_keys(raw):
    message = _error(raw)
    assert "train.nope" in message
    for key in _keys(TrainConfig):
        assert key in message


def test_underscore_spelling_is_an_unknown_key_pointing_at_the_dash_spelling():
    message = _error({"train": {"local_epochs": 1}})
    assert "train.local_epochs" in message
    assert "local-epochs" in message


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [
        ("train.rounds", "abc", "an integer"),
        ("train.rounds", 2.5, "an integer"),
        ("train.lr", True, "a number"),
        ("data.download", 3, "true or false"),
        ("strategy.name", 3, "'fedavg'"),
    ],
)
def test_wrong_type_names_key_value_and_expected_kind(key, value, kind):
    message = _error({key: value})
    assert key in message
    assert repr(value) in message
    assert kind in message


def test_non_integer_hidden_widths_name_the_key_and_expected_kind():
    message = _error({"model.hidden": "a,b"})
    assert "model.hidden" in message
    assert "list of integers" in message


def test_non_integer_hidden_widths_name_the_whole_value():
    assert "'a,b'" in _error({"model.hidden": "a,b"})


@pytest.mark.parametrize("value", [[], ""], ids=["empty-list", "empty-string"])
def test_empty_hidden_list_is_rejected(value):
    assert "model.hidden" in _error({"model.hidden": value})


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("train.rounds", 0, ">= 1"),
        ("train.lr", -1, "> 0"),
        ("train.fraction", 1.5, "<= 1"),
        ("seed", -1, ">= 0"),
        ("data.dataset", "cifar", ", ".join(map(repr, DATASETS))),
        ("strategy.name", "fedsgd", ", ".join(map(repr, STRATEGIES))),
        ("data.partition", "random", ", ".join(map(repr, PARTITIONERS))),
    ],
)
def test_out_of_range_value_names_key_value_and_allowed_range(key, value, allowed):
    message = _error({key: value})
    assert key in message
    assert str(value) in message
    assert allowed in message


def test_hidden_width_below_one_is_rejected():
    assert "model.hidden" in _error({"model.hidden": [64, 0]})


def test_hidden_width_below_one_names_the_allowed_range():
    assert ">= 1" in _error({"model.hidden": [64, 0]})


@pytest.mark.parametrize(
    ("key", "edge"),
    [
        ("train.fraction", 1.0),
        ("evaluate.fraction", 0.0),
        ("data.local-test-fraction", 0.9),
        ("strategy.trim-beta", 0.49),
        ("train.momentum", 0.0),
    ],
)
def test_inclusive_bound_accepts_its_edge(key, edge):
    section, name = key.split(".")
    assert getattr(getattr(parse_config({key: edge}), section), name.replace("-", "_")) == edge


@pytest.mark.parametrize(
    ("key", "edge"), [("train.fraction", 0.0), ("train.lr", 0.0), ("data.alpha", 0.0)]
)
def test_exclusive_bound_rejects_its_edge(key, edge):
    assert key in _error({key: edge})


@pytest.mark.parametrize("raw", [{"data": 3}, {"data": [1, 2]}, {"data": "digits"}])
def test_non_table_where_a_table_is_expected_is_rejected(raw):
    message = _error(raw)
    assert "data" in message
    assert "table" in message


def test_dotted_key_below_a_scalar_setting_is_rejected():
    with pytest.raises(ConfigError, match="seed"):
        parse_config({"seed": 0}, {"seed.x": 1})


def test_missing_scenario_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_scenario(tmp_path / "missing.toml")


def test_invalid_toml_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[train\nrounds = 1\n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load_scenario(path)


def test_directory_as_scenario_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        load_scenario(tmp_path)


# --- round trips ----------------------------------------------------------------------------


def _positive_floats(high: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=1e-6, max_value=high, allow_nan=False, allow_infinity=False)


def _unit_floats() -> st.SearchStrategy[float]:
    return st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def valid_settings(draw) -> dict[str, Any]:
    """Dotted settings a user might give, drawn from the documented valid ranges."""
    return {
        "seed": draw(st.integers(0, 2**31)),
        "data.dataset": draw(st.sampled_from(DATASETS)),
        # natural needs femnist (a combination check); femnist data is not needed to parse
        "data.partition": draw(st.sampled_from([p for p in PARTITIONERS if p != "natural"])),
        "data.num-clients": draw(st.integers(1, 500)),
        "data.alpha": draw(_positive_floats(100.0)),
        "data.download": draw(st.booleans()),
        "data.data-dir": draw(st.text(st.sampled_from('ab/._- "\\é'), max_size=12)),
        "model.hidden": draw(st.lists(st.integers(1, 1024), min_size=1, max_size=4)),
        "train.rounds": draw(st.integers(1, 1000)),
        "train.lr": draw(_positive_floats(10.0)),
        "train.momentum": draw(_unit_floats()),
        "train.fraction": draw(_positive_floats(1.0)),
        "evaluate.server": draw(st.booleans()),
        "strategy.name": draw(st.sampled_from(STRATEGIES)),
        "strategy.trim-beta": draw(st.floats(0.0, 0.49)),
        "engine.name": draw(st.sampled_from(ENGINES)),
    }


def test_run_config_values_are_flat_scalars():
    flat = to_run_config(RunConfig())
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())
    assert flat["model.hidden"] == "200,200"


def test_default_survives_the_flower_run_config():
    assert parse_config(to_run_config(RunConfig())) == RunConfig()


def test_default_survives_a_scenario_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(to_toml(RunConfig()))
    assert load_scenario(path) == RunConfig()


@FAST
@given(overrides=valid_settings())
def test_non_default_config_survives_the_flower_run_config(overrides):
    cfg = parse_config({}, overrides)
    assert parse_config(to_run_config(cfg)) == cfg


@FAST
@given(overrides=valid_settings())
def test_non_default_config_survives_a_scenario_file(tmp_path_factory, overrides):
    cfg = parse_config({}, overrides)
    path = tmp_path_factory.mktemp("scenario") / "config.toml"
    path.write_text(to_toml(cfg))
    assert load_scenario(path) == cfg


def test_data_dir_with_a_newline_survives_a_scenario_file(tmp_path):
    cfg = RunConfig(data=DataConfig(data_dir="runs\nold"))
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    assert load_scenario(path) == cfg


# --- a task's own tables -----------------------------------------------------------------------


GCN = {
    "task": "gcn",
    "data": {"dataset": "cora", "partition": "louvain"},
    "model": {"hidden": [16]},
}


def test_a_task_table_is_typed_by_its_task():
    cfg = parse_config(GCN, {"graph.mode": "precomm", "graph.hops": "1"})
    assert (cfg.graph.mode, cfg.graph.hops, cfg.model.hidden) == ("precomm", 1, (16,))
    assert type(cfg.graph) is get_task("gcn").sections["graph"]  # declared by the task
    assert not hasattr(RunConfig(), "graph")  # task mlp has no [graph]
    assert RunConfig(task="gcn").graph.mode == "local"  # a table not given is at its defaults


def test_a_task_table_is_validated_like_a_core_section():
    with pytest.raises(ConfigError, match=r"graph.hops = 3 is out of range: expected an integer"):
        parse_config(GCN, {"graph.hops": 3})
    with pytest.raises(ConfigError, match=r"unknown key graph.hop; task 'gcn' reads .*graph.hops"):
        parse_config(GCN, {"graph.hop": 1})


def test_another_tasks_setting_is_refused_unless_at_its_default():
    # Flower's run config holds every built-in key at its default: that parses
    assert parse_config({"graph.mode": "local", "model.dropout": 0.5}) == RunConfig()
    # a setting the task would silently ignore is an error naming its task
    with pytest.raises(ConfigError, match=r"graph.mode is a setting of task 'gcn'.*'mlp' does"):
        parse_config({"graph.mode": "precomm"})
    with pytest.raises(ConfigError, match=r"model.dropout is a setting of task 'gcn'"):
        parse_config({}, {"model.dropout": 0.1})
    with pytest.raises(ConfigError, match=r"unknown key tree.depth; task 'mlp' reads no table"):
        parse_config({"tree": {"depth": 3}})


def test_parsing_imports_no_task_and_no_torch():
    """Every deployed ClientApp process parses the run config, the secure-aggregation
    stages' too, which never train: the tables of a built-in task come without it."""
    import subprocess
    import sys

    code = (
        "import sys; from fedcore.config import parse_config; "
        "parse_config({'task': 'gcn', 'graph': {'mode': 'precomm'}}); "
        "print([m for m in ('torch', 'fedcore.tasks.gcn', 'scipy.stats') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_each_builtin_task_declares_the_tables_the_registry_lists():
    from fedcore.config.sections import sections_of
    from fedcore.tasks import get_task

    for task in TASKS:
        assert dict(get_task(task).sections) == sections_of(task), task


def test_a_table_the_task_does_not_declare_is_refused_in_code():
    gcn = RunConfig(task="gcn")
    with pytest.raises(ConfigError, match=r"task 'mlp' has no table \[graph\]"):
        RunConfig(sections=(("graph", gcn.graph),))
    with pytest.raises(ConfigError, match="must be a MLPModelOptions, got GCNModelOptions"):
        RunConfig(sections=(("model", gcn.model),))
    assert gcn.with_section("graph", hops=1).graph.hops == 1
    with pytest.raises(ConfigError, match=r"no table \[graph\]"):
        RunConfig().with_section("graph", hops=1)


def test_every_task_table_survives_the_flower_run_config_and_a_scenario_file(tmp_path):
    cfg = parse_config(GCN, {"graph.mode": "precomm", "model.dropout": 0.25})
    assert parse_config(to_run_config(cfg)) == cfg
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    assert load_scenario(path) == cfg


# --- the reference ------------------------------------------------------------------------------


def test_describe_lists_every_leaf_key_once():
    keys = [key for key, _, _ in describe()]
    assert len(keys) == len(set(keys))
    assert set(keys) == set(reference_run_config())
    assert set(to_run_config(RunConfig())) < set(keys)  # the default task reads fewer


def test_describe_gives_every_key_a_description():
    assert all(doc.strip() for _, _, doc in describe())


def test_describe_defaults_are_the_default_config_as_toml():
    flat = {}
    for task in TASKS:  # every built-in task's tables, at their defaults
        flat |= _flat(to_dict(RunConfig(task=task)))
    flat |= _flat(to_dict(RunConfig()))
    for key, default, _ in describe():
        assert tomllib.loads(f"v = {default}")["v"] == flat[key], key


def test_natural_partition_needs_a_dataset_with_natural_clients():
    assert "femnist" in _error({"data.partition": "natural", "data.dataset": "digits"})


def test_target_accuracy_needs_server_evaluation():
    message = _error({"train.target-accuracy": 0.9, "evaluate.server": False})
    assert "train.target-accuracy" in message


def test_readme_configuration_reference_is_current():
    from pathlib import Path

    from fedcore.config import reference_table

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert reference_table() in readme, "regenerate the README table with reference_table()"


def test_the_flower_app_config_lists_every_key_at_its_default():
    """``flwr run --run-config`` accepts only keys the app config lists."""
    import tomllib
    from pathlib import Path

    from fedcore.config import reference_run_config

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["tool"]["flwr"]["app"]["config"] == reference_run_config()
