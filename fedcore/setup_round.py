"""Round 0: a task's setup (:mod:`fedcore.tasks.setup`) run over the Grid before training.

The server waits for every node of the run, asks the secure-sum service
(:class:`privacy.secagg.service.SecureSum`) for the sum of the setup's vectors (each node
computes its own from its own data; the server sees only the sum), turns the sum into the
setup's public release and broadcasts it; every node keeps its part. The release needs every
node: one that drops out, or a sum that aborts, fails the run with the reason
(:class:`SetupFailed`), since a release missing a node's terms would give every other node
wrong rows.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedcore.arrays import from_numpy
from fedcore.config import RunConfig
from fedcore.exchange import send_and_receive
from fedcore.keys import ARRAYS, CONFIG, QUERY, RELEASE, SERVER_ROUND
from fedcore.tasks.setup import Setup
from privacy.secagg.service import ProtocolAbort, SecureSum

Observe = Callable[[Iterable[Message]], Iterator[Message]]


class SetupFailed(RuntimeError):
    """The task's setup released nothing, or not to every node; the message says why."""


def wait_for_nodes(grid: Grid, count: int, seconds: float) -> list[int]:
    """The node ids of the Grid once ``count`` are connected (TimeoutError after
    ``seconds``)."""
    deadline = time.monotonic() + seconds
    while len(nodes := sorted(grid.get_node_ids())) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} nodes connected after {seconds:.0f} s")
        time.sleep(0.5)
    return nodes


def run_setup(
    grid: Grid,
    cfg: RunConfig,
    setup: Setup,
    *,
    observe: Observe = iter,
    timeout: float | None = None,
    wait_seconds: float = 300.0,
) -> dict:
    """Run ``setup`` on every node of ``grid``; returns the round-0 record (what was summed,
    by how many nodes, how long each part took). ``observe`` sees every reply."""
    start = time.perf_counter()
    nodes = wait_for_nodes(grid, cfg.data.num_clients, wait_seconds)
    shape = setup.shape(cfg)
    try:
        run = SecureSum(cfg)(
            grid,
            nodes,
            setup.name,
            shape.length,
            shape.bound,
            shape.frac_bits,
            observe=observe,
            timeout=timeout,
        )
    except ProtocolAbort as err:
        first = next(iter(sorted(err.failures.items())), None)
        why = f" (node {first[0]}: {first[1]})" if first is not None else ""
        raise SetupFailed(f"{setup.name}: the secure sum aborted: {err}{why}") from None
    missing = sorted(set(nodes) - set(run.clients))
    if missing:
        first = run.failures.get(missing[0], "not in the sum")
        raise SetupFailed(
            f"{setup.name}: {len(missing)} of {len(nodes)} nodes are not in the sum "
            f"(node {missing[0]}: {first}); the release needs every node"
        )
    summed = time.perf_counter() - start
    release = setup.release(cfg, run.total)
    release_id = secrets.token_hex(8)
    record = ArrayRecord({k: from_numpy(v) for k, v in release.items()})
    messages = [
        Message(
            RecordDict(
                {
                    ARRAYS: record,
                    CONFIG: ConfigRecord({SERVER_ROUND: 0, QUERY: setup.name, RELEASE: release_id}),
                }
            ),
            dst_node_id=node,
            message_type=MessageType.QUERY,
        )
        for node in nodes
    ]
    replies = list(observe(send_and_receive(grid, messages, timeout, cfg.engine.poll_interval)))
    failed = [r for r in replies if r.has_error()]
    if failed or len(replies) < len(nodes):
        why = failed[0].error.reason if failed else "no reply"
        raise SetupFailed(
            f"{setup.name}: {len(nodes) - len(replies) + len(failed)} of {len(nodes)} nodes "
            f"did not keep the release (first: {why})"
        )
    return {
        "setup": setup.name,
        "nodes": len(nodes),
        "sum-entries": shape.length,
        "sum-seconds": summed,
        "seconds": time.perf_counter() - start,
        "secagg-seconds": run.stage_seconds,
    }
