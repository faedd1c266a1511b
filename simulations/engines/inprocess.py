"""The ``inprocess`` engine: a Flower ``Grid`` that hands messages to ClientApp handlers in
this process (or in a few pinned worker processes), with no SuperLink, Ray or polling.

Replies are produced lazily, in the order the strategy sent the messages, so the strategy's
streaming aggregation holds one update at a time and the result does not depend on the
number of workers. Each node keeps its own ``Context`` (and so its ``state``) for the whole
run, on the worker that owns it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from typing import TYPE_CHECKING

import torch
from flwr.app import ArrayRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from clients.handlers import ClientInputError
from clients.policy import PolicyViolation
from clients.privacy import BudgetExhausted, charge
from fedcore.checkpoint import Checkpoint, pack_node_state, unpack_node_state
from fedcore.config import RunConfig, to_run_config
from fedcore.keys import NUM_PARTITIONS, PARTITION_ID
from fedcore.server import RoundRecord, ServerState, run_server
from privacy.ledger import DpEvent
from privacy.secagg.crypto import TamperedError
from privacy.secagg.mod import SecAggClientError
from privacy.secagg.protocol import ProtocolViolation
from simulations.faults import InjectedFault, simulation_client_app

if TYPE_CHECKING:
    from simulations.engines import OnRelease, OnState

RUN_ID = 1
FIRST_NODE_ID = 10_000  # clear of Flower's SUPERLINK_NODE_ID
BATCH = 8  # messages a worker process takes per task


def node_ids(num_nodes: int) -> list[int]:
    return [FIRST_NODE_ID + p for p in range(num_nodes)]


def charge_nodes(states: dict[int, bytes], events: list[DpEvent]) -> dict[int, bytes]:
    """Checkpointed node states with each client's ``events`` (releases of rounds a resumed
    run reruns) added to that client's node's ledger (:func:`clients.privacy.charge`)."""
    states = dict(states)
    for client in sorted({e.client for e in events}):
        nid = FIRST_NODE_ID + client
        state = unpack_node_state(states[nid]) if nid in states else RecordDict()
        charge(state, [e for e in events if e.client == client])
        states[nid] = pack_node_state(state)
    return states


def make_contexts(cfg: RunConfig, ids: Iterable[int]) -> dict[int, Context]:
    """One Context per node, as a SuperNode would hold it (partition id in the node config)."""
    run_config = to_run_config(cfg)
    return {
        nid: Context(
            run_id=RUN_ID,
            node_id=nid,
            state=RecordDict(),
            run_config=run_config,
            node_config={PARTITION_ID: nid - FIRST_NODE_ID, NUM_PARTITIONS: cfg.data.num_clients},
        )
        for nid in ids
    }


# The ways a client legitimately fails or declines: its reply is an error, as in Flower, and
# the round goes on with the others. Anything else a ClientApp raises is a bug in this process
# (simulated clients run our own code): it propagates and fails the run with its traceback.
# (Flower's runtimes turn every exception into an error reply and log its traceback; there
# the failure policy fails the run once rounds stop aggregating.)
CLIENT_FAILURES: tuple[type[Exception], ...] = (
    InjectedFault,  # faults.client-failure-rate
    ClientInputError,  # a message or node setup the client cannot use
    BudgetExhausted,  # the client's privacy budget declines the round
    PolicyViolation,  # the node's privacy policy refuses the run
    SecAggClientError,  # a secure-aggregation message it cannot or must not answer
    ProtocolViolation,  # a server request that would reveal too much
    TamperedError,  # a peer's key or ciphertext that fails authentication
)


def deliver(app: ClientApp, msg: Message, context: Context) -> Message:
    """Run the ClientApp on one message; a client failure (:data:`CLIENT_FAILURES`) becomes
    an error reply, as in Flower; any other exception propagates."""
    try:
        return app(msg, context)
    except CLIENT_FAILURES as err:
        return Message(
            Error(
                code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(err).__name__}: {err}"
            ),
            reply_to=msg,
        )


def _own_records(content: RecordDict) -> RecordDict:
    """A copy of ``content`` whose records are new objects (the arrays themselves are shared:
    they are not edited in place)."""
    copy = RecordDict()
    for name, record in content.items():
        own = type(record)()  # filled item by item: ArrayRecord(dict) would copy the arrays
        for key, value in record.items():
            own[key] = value
        copy[name] = own
    return copy


class InProcessGrid(Grid):
    """A Grid whose nodes are ClientApp calls in this process or in pinned worker processes.

    Args:
        cfg: the run; one node per client partition.
        client_app: the ClientApp to serve (default: fedcore's, with the scenario's faults);
            for the single-process case only (an app holds closures, which do not pickle).
        app_factory: a module-level function ``cfg -> ClientApp`` that each process calls to
            build its app (default: fedcore's); what a custom app needs with ``workers > 1``.
        workers: worker processes; node ``i`` always runs on worker ``i % workers``.
        threads: torch threads per worker process.

    ``send_and_receive`` returns a one-shot iterator that delivers lazily, in send order, so
    the server can aggregate each reply as it arrives and drop it (materialise it with
    ``list`` to read it twice). Each message reaches its client with records of its own, as
    over a real transport: a mod that edits its message cannot change another node's.
    """

    polls = False  # replies are produced as the server reads them (fedcore.exchange)

    def __init__(
        self,
        cfg: RunConfig,
        *,
        client_app: ClientApp | None = None,
        app_factory: Callable[[RunConfig], ClientApp] = simulation_client_app,
        workers: int = 1,
        threads: int = 1,
    ) -> None:
        if workers > 1 and client_app is not None:
            raise ValueError("a custom client_app runs in-process only; pass app_factory")
        self._app = client_app or (app_factory(cfg) if workers == 1 else None)
        self._ids = node_ids(cfg.data.num_clients)
        self._id_set = set(self._ids)
        self._run = Run.create_empty(RUN_ID)
        self._pending: dict[str, Message] = {}
        self._counter = 0
        self._contexts: dict[int, Context] = {}
        self._pools: list[ProcessPoolExecutor] = []
        if workers == 1:
            self._contexts = make_contexts(cfg, self._ids)
        for w in range(workers if workers > 1 else 0):
            self._pools.append(
                ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=get_context("spawn"),
                    initializer=_worker_init,
                    initargs=(cfg, self._ids[w::workers], threads, app_factory),
                )
            )
        # start the workers now, side by side (a pool starts its process on its first task):
        # their imports and data are the run's set-up, not its first round's
        for ready in [pool.submit(_worker_ready) for pool in self._pools]:
            ready.result()

    # -- Grid interface -------------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            if msg.metadata.dst_node_id not in self._id_set:
                raise ValueError(f"no node {msg.metadata.dst_node_id} in this grid")
            self._counter += 1
            msg.metadata.__dict__["_message_id"] = f"m{self._counter}"
            self._pending[msg.metadata.message_id] = msg
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return list(self._replies([self._pending.pop(i) for i in message_ids]))

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        ids = self.push_messages(messages)
        return self._replies([self._pending.pop(i) for i in ids])

    # -- delivery -------------------------------------------------------------------------
    def _replies(self, messages: list[Message]) -> Iterator[Message]:
        if not self._pools:
            for msg in messages:
                msg.content = _own_records(msg.content)
                yield deliver(self._app, msg, self._contexts[msg.metadata.dst_node_id])
            return
        # A worker takes up to BATCH consecutive messages of its nodes per task: one task per
        # message spent more time in the pool's queue and pickling than in small ClientApps.
        tasks: list[list[Future]] = [[] for _ in self._pools]
        batches: list[list[Message]] = [[] for _ in self._pools]
        slots = []  # each message's (worker, task, position), in send order

        def submit(worker: int) -> None:
            tasks[worker].append(self._pools[worker].submit(_worker_deliver, batches[worker]))
            batches[worker] = []

        for msg in messages:
            worker = (msg.metadata.dst_node_id - FIRST_NODE_ID) % len(self._pools)
            batches[worker].append(msg)
            slots.append((worker, len(tasks[worker]), len(batches[worker]) - 1))
            if len(batches[worker]) == BATCH:
                submit(worker)
        for worker, batch in enumerate(batches):
            if batch:
                submit(worker)
        for worker, task, position in slots:
            replies = tasks[worker][task].result()
            if position == len(replies) - 1:  # its last reply: the task lets go of them all
                tasks[worker][task] = None
            yield replies[position]

    # -- checkpoints --------------------------------------------------------------------
    def node_states(self) -> dict[int, bytes]:
        """Every node's ``Context.state`` that holds anything, serialized, by node id."""
        if not self._pools:
            return _pack_states(self._contexts)
        states: dict[int, bytes] = {}
        for pool in self._pools:
            states.update(pool.submit(_worker_node_states).result())
        return states

    def restore_node_states(self, states: dict[int, bytes]) -> None:
        """Give the nodes the states a checkpoint kept (before any message is delivered)."""
        unknown = set(states) - self._id_set
        if unknown:
            raise ValueError(
                f"the checkpoint holds states of nodes {sorted(unknown)[:5]} that "
                "this run does not have"
            )
        if not self._pools:
            _unpack_states(self._contexts, states)
            return
        for w, pool in enumerate(self._pools):
            mine = {n: s for n, s in states.items() if (n - FIRST_NODE_ID) % len(self._pools) == w}
            pool.submit(_worker_restore, mine).result()

    def close(self) -> None:
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)
        self._pools = []

    def __enter__(self) -> InProcessGrid:
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = RUN_ID
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# A worker process serves the nodes it was given for the whole run; this is its state.
_WORKER: dict = {}


def _worker_init(
    cfg: RunConfig, ids: list[int], threads: int, app_factory: Callable[[RunConfig], ClientApp]
) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(app=app_factory(cfg), contexts=make_contexts(cfg, ids))


def _worker_ready() -> None:
    """A task that returns once the worker has started (its initializer has run)."""


def _worker_node_states() -> dict[int, bytes]:
    return _pack_states(_WORKER["contexts"])


def _worker_restore(states: dict[int, bytes]) -> None:
    _unpack_states(_WORKER["contexts"], states)


def _pack_states(contexts: dict[int, Context]) -> dict[int, bytes]:
    return {nid: pack_node_state(c.state) for nid, c in contexts.items() if _holds(c.state)}


def _unpack_states(contexts: dict[int, Context], states: dict[int, bytes]) -> None:
    for nid, data in states.items():
        contexts[nid].state = unpack_node_state(data)


def _holds(state: RecordDict) -> bool:
    return bool(state.array_records or state.config_records or state.metric_records)


def _worker_deliver(messages: list[Message]) -> list[Message]:
    app, contexts = _WORKER["app"], _WORKER["contexts"]
    return [deliver(app, msg, contexts[msg.metadata.dst_node_id]) for msg in messages]


def run_inprocess(
    cfg: RunConfig,
    on_round: Callable[[RoundRecord], None],
    resume: Checkpoint | None = None,
    on_state: OnState | None = None,
    on_release: OnRelease | None = None,
) -> ArrayRecord:
    """Run ``cfg`` with the ServerApp's round loop on an :class:`InProcessGrid`
    (``resume``: from that checkpoint, nodes' states included)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(cfg.engine.threads)
    try:
        with InProcessGrid(cfg, workers=cfg.engine.workers, threads=cfg.engine.threads) as grid:
            if resume is not None:
                grid.restore_node_states(resume.nodes or {})
            hook = None if on_state is None else (lambda s: on_state(s, grid.node_states))
            return run_server(
                grid,
                cfg,
                on_round=on_round,
                start=ServerState.of(resume),
                on_state=hook,
                on_release=on_release,
            )
    finally:
        torch.set_num_threads(previous)
