"""fedcore: federated and privacy-preserving learning on Flower."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedcore.config import RunConfig
    from simulations.runner import RunResult

__version__ = "0.1.0"


def simulate(
    config: RunConfig | Mapping[str, Any] | str | Path | None = None,
    *,
    task: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    progress: bool = False,
) -> RunResult:
    """Run a federated simulation in this process and return its results.

    ``config`` is a :class:`~fedcore.config.RunConfig`, a mapping of settings shaped like a
    scenario's TOML tables, or a scenario file (None: the defaults); ``task`` replaces its
    task, e.g. ``"my_package.my_module:TASK"`` for a :class:`~fedcore.tasks.base.Task` of
    your own; ``overrides`` are dotted keys, as ``--set``. The run directory is written
    as by ``fedcore simulate`` (``out``, or a new one under ``runs/``); the result holds its
    path and summary. This is the programmatic composition root: it imports the engines.
    """
    from fedcore.config import RunConfig, load_scenario, parse_config, to_dict
    from simulations.runner import simulate as run

    extra = dict(overrides or {}) | ({"task": task} if task is not None else {})
    if isinstance(config, RunConfig):
        cfg = parse_config(to_dict(config), extra)
    elif config is None or isinstance(config, Mapping):
        cfg = parse_config(dict(config or {}), extra)
    else:
        cfg = load_scenario(config, extra)
    return run(cfg, out=Path(out) if out is not None else None, progress=progress)
