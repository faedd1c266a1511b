"""One exchange of messages with the nodes: send, then collect the replies.

Flower's deployed Grid (``HttpGrid``) checks for replies every 3 seconds. With ``poll > 0``
(``engine.poll-interval``) this pushes the messages and pulls the replies every ``poll``
seconds instead; on 2 cores that measured no faster (``benchmarks/deploy_latency.py``), so the
default keeps Flower's. A Grid whose own ``send_and_receive`` does not poll (fedcore's
in-process engine) always keeps it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

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
