"""The run directory: what a run leaves behind, written as it goes so a failure loses nothing.

Layout::

    config.toml        the resolved config; `fedcore simulate config.toml` reproduces the run
    partition.json     clients' sizes and label histograms (simulated runs: a deployed server
                       holds no client's data)
    metrics.jsonl      one JSON line per completed round, flushed as each round ends, with
                       its status (aggregated | aborted | empty) and, unless aggregated, why
    summary.json       status (completed | failed), final_metrics, rounds, round_status,
                       wall_seconds, engine (and the error if failed)
    model.pt           final global model (torch state_dict); only for a completed run
    accuracy.png, loss.png (mse.png, mae.png for mf): per-round curves

A run whose rounds aggregated nothing ends ``failed`` (:class:`fedcore.server.FailurePolicy`).
A directory is claimed atomically: two runs never share one, and ``--out`` must be new or
empty.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord

from fedcore.config import RunConfig, to_toml
from fedcore.server import FailurePolicy, RoundRecord, final_state
from fedcore.tasks import checked_task, server_data
from simulations.plots import plot_rounds
from strategies.registry import build_strategy


class RunDirectory:
    """Writes one run's files; use as a context manager so a failure is recorded too."""

    def __init__(self, path: Path, cfg: RunConfig, engine: str) -> None:
        self.path = path
        self.cfg = cfg
        self.engine = engine
        self.rounds: list[RoundRecord] = []
        self.policy = FailurePolicy(cfg.train.max_failed_rounds)
        self._start = time.perf_counter()
        self._done = False

    @classmethod
    def create(
        cls,
        root: Path,
        cfg: RunConfig,
        engine: str,
        exact: Path | None = None,
        simulated: bool = True,
    ) -> RunDirectory:
        """A new run directory: ``exact`` if given (it must be new or empty), else a fresh
        timestamped folder under ``root`` (with a suffix if another run took that name).

        ``simulated``: this process simulates the clients, so it loads their partition and
        writes its report (``partition.json``); a deployed server (``flwr run``) loads only
        its own data (:func:`fedcore.tasks.server_data`) and writes no partition report."""
        if exact is not None:
            _refuse_used(Path(exact))  # before anything is loaded or written
        # the task's own rules, then bad data, fail before any file
        task = checked_task(cfg)
        report = task.load_data(cfg).report if simulated else None
        if not simulated:
            server_data(task, cfg)
        build_strategy(cfg)  # and so does a setting only the strategy can judge (its noise)
        path = _claim_exact(Path(exact)) if exact is not None else _claim_new(root, cfg)
        run_dir = cls(path, cfg, engine)
        with open(path / "config.toml", "x") as f:  # "x": two runs never write one directory
            f.write(to_toml(cfg))
        (path / "metrics.jsonl").write_text("")
        if report is not None:
            _write_json(path / "partition.json", report)
        return run_dir

    def append_round(self, record: RoundRecord) -> None:
        """Append the round to metrics.jsonl and its DP events to ledger.jsonl, then apply
        the failure policy (:class:`~fedcore.server.RunFailed` ends the run there)."""
        record = dict(record)
        events = record.pop("privacy-events", [])
        self.rounds.append(record)
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if events:
            with open(self.path / "ledger.jsonl", "a") as f:
                f.writelines(json.dumps(e) + "\n" for e in events)
        self.policy.observe(record)

    def summary(self, status: str, error: str | None = None) -> dict[str, Any]:
        last = self.rounds[-1] if self.rounds else {}
        final: dict[str, Any] = {}
        for part in ("server-eval", "client-eval", "train"):
            for k, v in (last.get(part) or {}).items():
                final[f"{part}/{k}"] = v
        summary = {
            "status": status,
            "engine": self.engine,
            "rounds": len(self.rounds),
            "rounds_planned": self.cfg.train.rounds,
            "wall_seconds": time.perf_counter() - self._start,
            "final_metrics": final,
            "round_status": dict(self.policy.counts),
            "peak_memory_mb": max((r["peak-memory-mb"] for r in self.rounds), default=None),
            "bytes_sent": sum(r["bytes-sent"] for r in self.rounds),
            "bytes_received": sum(r["bytes-received"] for r in self.rounds),
        }
        if error is not None:
            summary["error"] = error
        return summary

    def finish(self, arrays: ArrayRecord) -> dict[str, Any]:
        """Save the final model, the summary and the plots, and with DP the privacy report;
        a run that aggregated nothing raises :class:`~fedcore.server.RunFailed` instead."""
        self.policy.finish()
        torch.save(final_state(self.cfg, arrays), self.path / "model.pt")
        privacy = None
        ledger = self.path / "ledger.jsonl"
        if self.cfg.privacy.dp != "off" or ledger.exists():  # the report, from the ledger only
            from privacy.report import write_report

            report = write_report(self.path)
            privacy = report["guarantee"] | {"delta": report["delta"]}
        return self._close("completed", privacy=privacy)

    def fail(self, error: BaseException) -> dict[str, Any]:
        return self._close("failed", f"{type(error).__name__}: {error}")

    def _close(
        self, status: str, error: str | None = None, privacy: dict | None = None
    ) -> dict[str, Any]:
        summary = self.summary(status, error)
        if privacy is not None:
            summary["privacy"] = privacy
        _write_json(self.path / "summary.json", summary)
        if self.rounds:
            plot_rounds(self.rounds, self.path)
        self._done = True
        return summary

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None and not self._done:
            self.fail(exc)
            exc.add_note(f"run directory: {self.path}")


def _refuse_used(path: Path) -> None:
    """Refuse an ``--out`` that is a file or a directory holding anything."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--out {path} is a file; give a new or an empty directory")
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if {"config.toml", "metrics.jsonl"} & set(entries):
        raise FileExistsError(f"{path} already holds a run; choose another --out")
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise FileExistsError(
            f"--out {path} is not empty ({len(entries)} entries: {shown}); give a new or an "
            "empty directory, so no file of yours is overwritten"
        )


def _claim_exact(path: Path) -> Path:
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        _refuse_used(path)  # it may have been filled since the first check
        if not path.is_dir():
            raise
    return path


def _claim_new(root: Path, cfg: RunConfig) -> Path:
    """A new directory under ``root`` named for the time and the run, made with ``mkdir``
    (atomic: of two runs that start in the same second, one gets the next suffix)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{cfg.task}-{cfg.data.dataset}-{cfg.strategy.name}"
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = root / (base if n == 1 else f"{base}-{n}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{root} holds 9999 runs named {base}[-n]; choose another --out")


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)
