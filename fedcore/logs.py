"""How the command line logs: warnings and errors only, each printed once, coloured only on a
terminal. Called once, at the boundary (:func:`fedcore.cli.main`), before any library that
configures logging on import is imported."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from flwr.common.logger import update_console_handler

PLAIN = "%(levelname)s: %(name)s: %(message)s"


def configure_logging(stream: TextIO | None = None) -> None:
    """Print warnings and errors of every library to ``stream`` (default: stderr), once.

    Opacus calls ``logging.basicConfig`` when ``opacus.utils.module_utils`` is imported,
    which gives the root logger a handler; Flower's logger prints through a handler of its
    own and also propagates to the root, so every Flower line then came out twice (and
    Opacus' own INFO lines with it). A root handler of ours, in place first, makes that
    ``basicConfig`` a no-op, and Flower's logger no longer propagates. Flower's INFO lines
    (connections, messages) are for the deployed processes' logs, not a run's output.
    """
    stream = stream or sys.stderr
    root = logging.getLogger()
    if not root.handlers:  # a host that configured logging (pytest, an application) keeps it
        handler = logging.StreamHandler(stream)
        handler.setLevel(logging.WARNING)  # also for loggers that set INFO (Opacus' own)
        handler.setFormatter(logging.Formatter(PLAIN))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    flower = logging.getLogger("flwr")
    flower.setLevel(logging.WARNING)
    flower.propagate = False
    update_console_handler(colored=stream.isatty())
