"""``flower-supernode`` with two of its fixed intervals as settings.

Flower 1.42's SuperNode looks for a new message every 3 s when it has none, and tells the
SuperLink to expect a heartbeat every 30 s (so a crashed node is seen offline, and may
rejoin with its key, only after a minute). Both are constants in Flower's code. A round of
plain FedAvg is one exchange with every node, a secure-aggregation round four, and each
exchange waits up to the 3 s for the slowest node's next look: most of a deployed round's
latency on loopback once the ClientApp runs warm (:mod:`fedcore.warm_exec`).

This runs Flower's own ``flower-supernode`` (every argument after the two below is its)
with the two intervals set, by replacing the module attributes Flower reads them from. It
works with the Flower version fedcore pins and refuses any other, since the attributes it
sets are not Flower's public API::

    python -m fedcore.supernode --poll-interval 0.2 --heartbeat-interval 10 \\
        --superlink 10.0.0.1:9092 --isolation process ...

A shorter poll costs the SuperLink one more request per node per interval: 0.2 s is 5
requests a second per idle node, nothing for tens of nodes; keep Flower's 3 s for
thousands. Heartbeats below 10 s are refused by the SuperLink.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from importlib.metadata import version
from types import SimpleNamespace

FLOWER = "1.42.0"  # the version whose attributes this sets (pyproject pins it)
PULL_BACKOFF, PULL_BACKOFF_CAP = 0.05, 1.0  # Flower: 1 s, doubling to 10 s
MIN_HEARTBEAT = 10.0  # Flower's HEARTBEAT_MIN_INTERVAL: the SuperLink refuses less


def _check_flower() -> None:
    installed = version("flwr")
    if installed != FLOWER:
        raise SystemExit(
            f"fedcore.supernode sets intervals inside Flower {FLOWER}, but Flower {installed} "
            "is installed: run flower-supernode itself"
        )


def set_intervals(poll: float, heartbeat: float) -> None:
    """Make this process's SuperNode look for messages every ``poll`` seconds (and wait for
    its ClientApp's reply in steps as short) and send heartbeats every ``heartbeat``."""
    if not 0 < poll <= 3:
        raise ValueError(f"poll interval must be in (0, 3] s, not {poll}")
    if not MIN_HEARTBEAT <= heartbeat <= 1800:
        raise ValueError(f"heartbeat interval must be in [10, 1800] s, not {heartbeat}")
    _check_flower()
    from flwr.supercore import heartbeat as sender
    from flwr.supernode import fleet_http_connection, start_client_internal

    for module, name in (
        (start_client_internal, "time"),
        (start_client_internal, "pull_objects"),
        (fleet_http_connection, "HEARTBEAT_DEFAULT_INTERVAL"),
        (sender, "HEARTBEAT_DEFAULT_INTERVAL"),
    ):
        if not hasattr(module, name):  # Flower moved it: fail, never run with the defaults
            raise RuntimeError(f"{module.__name__} has no {name}: Flower changed")
    # the module's ``time``, but every sleep (3 s idle, 0.5 s waiting for a reply) capped
    capped = {k: getattr(time, k) for k in dir(time) if not k.startswith("_")}
    capped["sleep"] = lambda seconds: time.sleep(min(seconds, poll))
    start_client_internal.time = SimpleNamespace(**capped)
    # a message's content is pushed to the SuperLink just after the message itself: look
    # again soon rather than after Flower's 1 s, 2 s, ... backoff
    start_client_internal.pull_objects = functools.partial(
        start_client_internal.pull_objects,
        initial_backoff=min(poll, PULL_BACKOFF),
        backoff_cap=PULL_BACKOFF_CAP,
    )
    # what the node tells the SuperLink to expect, and how often it sends: both, or the
    # SuperLink marks a live node offline between two heartbeats
    fleet_http_connection.HEARTBEAT_DEFAULT_INTERVAL = heartbeat
    sender.HEARTBEAT_DEFAULT_INTERVAL = heartbeat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fedcore.supernode",
        description="flower-supernode with its message poll and heartbeat intervals set; "
        "every other argument is flower-supernode's",
    )
    parser.add_argument("--poll-interval", type=float, default=3.0)
    parser.add_argument("--heartbeat-interval", type=float, default=30.0)
    ours, theirs = parser.parse_known_args(argv)
    try:
        set_intervals(ours.poll_interval, ours.heartbeat_interval)
    except ValueError as err:
        parser.error(str(err))
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *theirs]
    flower_supernode()
    return 0


if __name__ == "__main__":
    sys.exit(main())
