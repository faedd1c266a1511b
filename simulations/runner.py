"""Run one simulation end to end: run directory, engine, progress, summary; or continue one
that a crash, Ctrl-C or SIGTERM cut short, from its checkpoint."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcore.checkpoint import Checkpoint
from fedcore.config import ConfigError, RunConfig
from fedcore.devices import torch_device
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
    status is ``failed``, then re-raises; Ctrl-C or SIGTERM leave it ``interrupted``, with the
    last completed round's model and a checkpoint to :func:`resume` from, and raise
    :class:`KeyboardInterrupt`.
    """
    if cfg.train.resume_from:
        raise ConfigError(
            "train.resume-from is for deployed runs; continue a simulation with "
            "fedcore simulate --resume RUN_DIR"
        )
    if cfg.engine.name == "inprocess":  # its clients train here: a missing GPU, said now
        torch_device(cfg.engine.device)
    run_dir = RunDirectory.create(root, cfg, cfg.engine.name, exact=out)
    return _run(run_dir, None, progress)


def resume(path: Path, progress: bool = True) -> RunResult:
    """Continue the unfinished run in ``path`` from its checkpoint (same config, same
    engine): the rounds after it run again, and the run ends as if never interrupted."""
    run_dir, ckpt = RunDirectory.reopen(path)
    return _run(run_dir, ckpt, progress)


def _run(run_dir: RunDirectory, ckpt: Checkpoint | None, progress: bool) -> RunResult:
    cfg = run_dir.cfg
    description = f"{cfg.data.dataset} {cfg.strategy.name}"
    with (
        _sigterm_interrupts(),
        run_dir,
        RoundProgress(cfg.train.rounds, description, enabled=progress) as bar,
    ):
        for record in run_dir.rounds:  # a resumed run's earlier rounds
            bar(record)

        def on_round(record: RoundRecord) -> None:
            run_dir.append_round(record)
            bar(record)

        arrays = run_engine(cfg, on_round, ckpt, run_dir.on_state, run_dir.append_release)
        summary = run_dir.finish(arrays)
    return RunResult(run_dir.path, summary)


class Terminated(KeyboardInterrupt):
    """SIGTERM: ends a run as Ctrl-C does (interrupted, resumable), exit status 143."""

    exit_status = 128 + signal.SIGTERM


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (Python's
    default for SIGTERM is to die on the spot, writing nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated("interrupted by SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
