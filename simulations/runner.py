"""Run one simulation end to end: run directory, engine, progress, summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcore.config import RunConfig
from fedcore.server import RoundRecord
from simulations.engines import run_engine
from simulations.progress import RoundProgress
from simulations.rundir import RunDirectory

DEFAULT_ROOT = Path("runs")


@dataclass(frozen=True)
class RunResult:
    path: Path
    summary: dict[str, Any]


def simulate(
    cfg: RunConfig, out: Path | None = None, root: Path = DEFAULT_ROOT, progress: bool = True
) -> RunResult:
    """Run ``cfg`` on its engine, writing the run directory as rounds complete.

    A failure midway leaves the directory with every completed round and a summary whose
    status is ``failed``, then re-raises.
    """
    run_dir = RunDirectory.create(root, cfg, cfg.engine.name, exact=out)
    description = f"{cfg.data.dataset} {cfg.strategy.name}"
    with run_dir, RoundProgress(cfg.train.rounds, description, enabled=progress) as bar:

        def on_round(record: RoundRecord) -> None:
            run_dir.append_round(record)
            bar(record)

        arrays = run_engine(cfg, on_round)
        summary = run_dir.finish(arrays)
    return RunResult(run_dir.path, summary)
