"""A rich progress bar for rounds: ETA and the latest metrics."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fedcore.keys import ACCURACY, LOSS
from fedcore.server import RoundRecord


class RoundProgress:
    """Context manager; call it with each round's record."""

    def __init__(
        self, rounds: int, description: str, console: Console | None = None, enabled: bool = True
    ) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(compact=True),
            TextColumn("{task.fields[latest]}"),
            console=console,
            disable=not enabled,
        )
        self._task = self._progress.add_task(description, total=rounds, latest="")

    def __call__(self, record: RoundRecord) -> None:
        parts = []
        server = record.get("server-eval") or {}
        clients = record.get("client-eval") or {}
        if ACCURACY in server:
            parts.append(f"acc {server[ACCURACY]:.3f}")
        if LOSS in server:
            parts.append(f"loss {server[LOSS]:.3f}")
        if f"{ACCURACY}-worst10" in clients:
            parts.append(f"worst10% {clients[f'{ACCURACY}-worst10']:.3f}")
        if record.get("train-failures"):
            parts.append(f"[red]{len(record['train-failures'])} failed[/red]")
        self._progress.update(self._task, advance=1, latest="  ".join(parts))

    def __enter__(self) -> RoundProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()
