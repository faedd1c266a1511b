"""What a run prints: a rich progress bar for rounds on a terminal (ETA and the latest
metrics), one plain line per round anywhere else (a log file, a pipe, CI), and at the end the
run's quality in the task's own metric."""

from __future__ import annotations

import math

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

# The evaluation metrics that say how good a model is, in the order they are shown: (key in
# the task's evaluation, its name in print, how the value is shown). A recommender's mean
# squared error is shown as its root, in the ratings' own unit.
QUALITY = (
    (ACCURACY, "accuracy", float),
    ("mse", "RMSE", math.sqrt),
    ("mae", "MAE", float),
    ("r2", "R^2", float),
    ("explained-variance", "explained variance", float),
    ("ari", "ARI", float),
    ("log-likelihood", "log-likelihood", float),
    ("shd", "SHD", float),
)


def round_metrics(record: RoundRecord) -> list[str]:
    """The round's headline numbers: the server's accuracy and loss, the worst clients'
    accuracy, a recommender's error, and how many clients failed."""
    parts = []
    server = record.get("server-eval") or {}
    clients = record.get("client-eval") or {}
    if ACCURACY in server:
        parts.append(f"acc {server[ACCURACY]:.3f}")
    if LOSS in server:
        parts.append(f"loss {server[LOSS]:.3f}")
    if f"{ACCURACY}-worst10" in clients:
        parts.append(f"worst10% {clients[f'{ACCURACY}-worst10']:.3f}")
    evaluation = server if "mse" in server else clients
    if "mse" in evaluation:
        parts.append(f"rmse {math.sqrt(evaluation['mse']):.3f}")
    if "mae" in evaluation:
        parts.append(f"mae {evaluation['mae']:.3f}")
    if record.get("train-failures"):
        parts.append(f"{len(record['train-failures'])} failed")
    return parts


def round_line(record: RoundRecord, rounds: int) -> str:
    """One plain line for a finished round, with why it did not aggregate if it did not."""
    head = f"round {record['round']}/{rounds} {record.get('status', '')}".rstrip()
    line = "  ".join([head, *round_metrics(record)])
    if record.get("reason"):
        line += f"  ({record['reason']})"
    return line


def final_quality(final_metrics: dict[str, float]) -> str:
    """The run's quality from its summary's ``final_metrics`` in the task's own metrics (the
    server's test set if it evaluated one, else the clients'); empty if nothing evaluated."""
    for part, label in (("server-eval", "test"), ("client-eval", "clients' test")):
        shown = [
            f"{name} {show(final_metrics[f'{part}/{key}']):.4f}"
            for key, name, show in QUALITY
            if f"{part}/{key}" in final_metrics
        ]
        if shown:
            return f"{label} {', '.join(shown)}"
    return ""


class RoundProgress:
    """Context manager; call it with each round's record. On a terminal it draws a progress
    bar; elsewhere (``nohup``, CI, ``2> log``) a bar is drawn only once it stops, so it
    prints :func:`round_line` for each round instead, flushed as the round ends."""

    def __init__(
        self, rounds: int, description: str, console: Console | None = None, enabled: bool = True
    ) -> None:
        self._console = console or Console(stderr=True)
        self._rounds = rounds
        self._plain = enabled and not self._console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(compact=True),
            TextColumn("{task.fields[latest]}"),
            console=self._console,
            disable=not enabled or self._plain,
        )
        self._task = self._progress.add_task(description, total=rounds, latest="")

    def __call__(self, record: RoundRecord) -> None:
        if self._plain:
            print(round_line(record, self._rounds), file=self._console.file, flush=True)
            return
        latest = "  ".join(round_metrics(record))
        self._progress.update(self._task, advance=1, latest=latest)

    def __enter__(self) -> RoundProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()
