"""Typed run configuration: frozen dataclasses, parsed and validated once at the boundary.

Scenario TOML files, ``--set key=value`` overrides and Flower's flat ``run_config`` are only
transport. They all go through :func:`parse_config`, which reports any unknown key, wrong type or
out-of-range value with the key, the value and what is allowed. Algorithms only see the typed
:class:`RunConfig`.

Keys are the field names with ``-`` for ``_``, grouped in TOML tables (``[train] local-epochs``)
or flattened with dots (``train.local-epochs``), which is also the form of Flower's run config.

The core sections (``schema``) are the subsystems'. A task's own tables (``[model]``,
``[graph]``) are declared by the task (:mod:`fedcore.config.sections`) and parsed with them.
"""

from __future__ import annotations

from fedcore.config.export import (
    describe,
    reference_run_config,
    reference_table,
    to_dict,
    to_run_config,
    to_toml,
)
from fedcore.config.fields import option
from fedcore.config.parse import load_scenario, parse_config, parse_override
from fedcore.config.schema import (
    ATTACKS,
    CLIENT_LEVEL_DP,
    ENGINES,
    NEEDS_INDIVIDUAL_UPDATES,
    STRATEGIES,
    TASKS,
    AttackConfig,
    CompressionConfig,
    ConfigError,
    DataConfig,
    EngineConfig,
    EvaluateConfig,
    FaultConfig,
    PrivacyConfig,
    RunConfig,
    SecAggConfig,
    StrategyConfig,
    TrainConfig,
)

__all__ = [
    "ATTACKS",
    "CLIENT_LEVEL_DP",
    "ENGINES",
    "NEEDS_INDIVIDUAL_UPDATES",
    "STRATEGIES",
    "TASKS",
    "AttackConfig",
    "CompressionConfig",
    "ConfigError",
    "DataConfig",
    "EngineConfig",
    "EvaluateConfig",
    "FaultConfig",
    "PrivacyConfig",
    "RunConfig",
    "SecAggConfig",
    "StrategyConfig",
    "TrainConfig",
    "describe",
    "load_scenario",
    "option",
    "parse_config",
    "parse_override",
    "reference_run_config",
    "reference_table",
    "to_dict",
    "to_run_config",
    "to_toml",
]
