"""One exchange of messages with the nodes: send, then collect the replies.

Flower's deployed Grid (``HttpGrid``) checks for replies every 3 seconds. With ``poll > 0``
(``engine.poll-interval``, 0.1 s by default) this pushes the messages and pulls the replies
every ``poll`` seconds instead: once the nodes answer in about a second (warm executors,
``benchmarks/deploy_latency.py``), the 3 s wait was most of an exchange. A Grid whose own
``send_and_receive`` does not poll (fedcore's in-process engine) always keeps it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

DEFAULT_POLL = 0.1


def send_and_receive(
    grid: Grid, messages: Iterable[Message], timeout: float | None, poll: float = DEFAULT_POLL
) -> Iterable[Message]:
    """The replies to ``messages`` that arrive within ``timeout`` seconds (None: all),
    checking every ``poll`` seconds (0: the Grid's own ``send_and_receive``)."""
    if poll <= 0 or getattr(grid, "polls", True) is False:  # e.g. replies made on demand
        return grid.send_and_receive(messages, timeout=timeout)
    waiting = set(grid.push_messages(messages))
    end = None if timeout is None else time.monotonic() + timeout
    replies: list[Message] = []
    while waiting:
        got = list(grid.pull_messages(waiting))
        replies.extend(got)
        waiting.difference_update(m.metadata.reply_to_message_id for m in got)
        if not waiting or (end is not None and time.monotonic() >= end):
            break
        time.sleep(poll if end is None else max(0.0, min(poll, end - time.monotonic())))
    return replies


class Stopped(RuntimeError):
    """The runtime hosting the round loop stopped it (the run was interrupted)."""


class StoppableGrid:
    """``grid``, whose next pull raises :class:`Stopped` once ``stop`` is set: a round loop
    on a thread of its own (Flower's simulation runs the ServerApp so) then ends at its next
    poll instead of waiting forever for replies from a runtime that has stopped."""

    def __init__(self, grid: Grid, stop: threading.Event) -> None:
        self._grid, self._stop = grid, stop

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        poll = getattr(self._grid, "pull_interval", DEFAULT_POLL) or DEFAULT_POLL
        return send_and_receive(self, messages, timeout, poll)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        if self._stop.is_set():
            raise Stopped("the simulation runtime stopped; the round loop ends here")
        return self._grid.pull_messages(message_ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)
