"""The run directory: what a run leaves behind, written as it goes so a failure loses nothing.

Layout::

    config.toml        the resolved config; `fedcore simulate config.toml` reproduces the run
    partition.json     clients' sizes and label histograms
    metrics.jsonl      one JSON line per completed round, flushed as each round ends
    summary.json       status, final_metrics, rounds, wall_seconds, engine (and error if failed)
    model.pt           final global model (torch state_dict)
    accuracy.png, loss.png (mse.png, mae.png for mf): per-round curves
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord

from fedcore.config import RunConfig, to_toml
from fedcore.server import RoundRecord, final_model
from fedcore.tasks import get_task
from simulations.plots import plot_rounds


class RunDirectory:
    """Writes one run's files; use as a context manager so a failure is recorded too."""

    def __init__(self, path: Path, cfg: RunConfig, engine: str) -> None:
        self.path = path
        self.cfg = cfg
        self.engine = engine
        self.rounds: list[RoundRecord] = []
        self._start = time.perf_counter()
        self._done = False

    @classmethod
    def create(
        cls, root: Path, cfg: RunConfig, engine: str, exact: Path | None = None
    ) -> RunDirectory:
        """A new run directory: ``exact`` if given (it must not hold a previous run), else a
        fresh timestamped folder under ``root``."""
        if exact is not None:
            path = Path(exact)
            if (path / "metrics.jsonl").exists():
                raise FileExistsError(f"{path} already holds a run; choose another --out")
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            base = f"{stamp}-{cfg.task}-{cfg.data.dataset}-{cfg.strategy.name}"
            path, n = root / base, 1
            while path.exists():
                n += 1
                path = root / f"{base}-{n}"
        report = get_task(cfg.task).load_data(cfg).report  # bad data fails before any file
        path.mkdir(parents=True, exist_ok=True)
        run_dir = cls(path, cfg, engine)
        (path / "config.toml").write_text(to_toml(cfg))
        (path / "metrics.jsonl").write_text("")
        _write_json(path / "partition.json", report)
        return run_dir

    def append_round(self, record: RoundRecord) -> None:
        """Append the round to metrics.jsonl and its DP events to ledger.jsonl."""
        record = dict(record)
        events = record.pop("privacy-events", [])
        self.rounds.append(record)
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if events:
            with open(self.path / "ledger.jsonl", "a") as f:
                f.writelines(json.dumps(e) + "\n" for e in events)

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
            "peak_memory_mb": max((r["peak-memory-mb"] for r in self.rounds), default=None),
            "bytes_sent": sum(r["bytes-sent"] for r in self.rounds),
            "bytes_received": sum(r["bytes-received"] for r in self.rounds),
        }
        if error is not None:
            summary["error"] = error
        return summary

    def finish(self, arrays: ArrayRecord) -> dict[str, Any]:
        """Save the final model, the summary and the plots, and with DP the privacy report."""
        torch.save(final_model(self.cfg, arrays).state_dict(), self.path / "model.pt")
        privacy = None
        if self.cfg.privacy.dp != "off":  # the report, from the ledger only
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


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)
