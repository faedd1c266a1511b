"""Following a deployed run from its run directory: the ServerApp appends one JSON line to
``metrics.jsonl`` as each round ends, so the launcher can report rounds as they land."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fedcore.server import RoundRecord


class MetricsFollower:
    """Reads the rounds a run's ``metrics.jsonl`` gains between calls of :meth:`poll`.

    Args:
        find_run: the run directory once it exists, else None (a deployed run's directory
            appears only when its ServerApp starts).
    """

    def __init__(self, find_run: Callable[[], Path | None]) -> None:
        self._find_run = find_run
        self._metrics: Path | None = None
        self._offset = 0
        self._partial = b""  # a line the ServerApp is still writing

    def poll(self) -> list[RoundRecord]:
        """The rounds whose lines were completed since the last call, in order."""
        if self._metrics is None:
            run = self._find_run()
            if run is None:
                return []
            self._metrics = run / "metrics.jsonl"
        try:
            with open(self._metrics, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:  # the directory is there, its first file not yet
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]
