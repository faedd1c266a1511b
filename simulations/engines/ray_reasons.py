"""Client failures on the Ray engine in one plain line, as the in-process engine writes them.

Flower's Ray backend reports a ClientApp that raised as ``<class 'RayTaskError(...)'>:<'...'>``
around Ray's rendering of the exception: the traceback twice (the client's, then Flower's
wrapper's), in ANSI colour. Stored as it is, one failure filled a kilobyte of metrics.jsonl
and a round's reason ran over many lines; what it says is the client's exception.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fedcore.server import RoundRecord

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_RAY_REASON = re.compile(r"<class '([^']*)'>:<'(.*)'>", re.DOTALL)  # Flower's Ray Error.reason
# An exception line of a traceback, "package.module.Type: message", unindented.
_EXCEPTION = re.compile(r"(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*): (\S.*)")
_FAILURE_LISTS = ("train-failures", "eval-failures")
# Flower's simulation worker and Ray backend, the modules that log each client failure
_FLOWER_BACKEND = ("vce_api.py", "raybackend.py")
_RUN_SIMULATION_DEPRECATED = "The `run_simulation` function is deprecated"


def one_line_reason(text: str) -> str:
    """``text`` without colour codes, on one line, with a Ray failure in it replaced by the
    exception the client raised (``Type: message``, the first of its traceback's chain)."""
    text = _ANSI.sub("", text)
    match = _RAY_REASON.search(text)
    if match is not None:
        kind, body = match.groups()
        raised = (_EXCEPTION.fullmatch(line.rstrip()) for line in body.splitlines())
        cause = next((f"{m[1]}: {m[2]}" for m in raised if m is not None), None)
        if cause is None:  # no traceback: the error's own words
            cause = f"{kind.rsplit('.', 1)[-1]}: {body}"
        text = text[: match.start()] + cause + text[match.end() :]
    return " ".join(text.split())


def plain_failures(record: RoundRecord) -> RoundRecord:
    """``record`` with its failures and its reason made :func:`one_line_reason`."""
    plain = dict(record)
    for key in _FAILURE_LISTS:
        if plain.get(key):
            plain[key] = [one_line_reason(str(f)) for f in plain[key]]
    if isinstance(plain.get("reason"), str):
        plain["reason"] = one_line_reason(plain["reason"])
    return plain


class OneLineFailures(logging.Filter):
    """A filter for Flower's logger while the Ray engine runs. Its backend logs each client
    failure as ERROR records (a notice, the exception, its traceback: about 90 lines of
    Ray's coloured rendering); they are dropped, since fedcore's strategy warns of each
    failed reply itself (``rejected reply from node ...``), a warning made one line here.
    So is Flower's notice that ``run_simulation`` is deprecated in favour of ``flwr run``:
    this engine is that function, and ``flwr run`` is the deployed engine."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and Path(record.pathname).name in _FLOWER_BACKEND:
            return False
        message = record.getMessage()
        if _RUN_SIMULATION_DEPRECATED in message:
            return False
        if _RAY_REASON.search(message) is not None:
            record.msg, record.args = one_line_reason(message), ()
        return True


@contextmanager
def one_line_failures() -> Iterator[None]:
    """:class:`OneLineFailures` on Flower's logger for the duration."""
    flower, one_line = logging.getLogger("flwr"), OneLineFailures()
    flower.addFilter(one_line)
    try:
        yield
    finally:
        flower.removeFilter(one_line)
