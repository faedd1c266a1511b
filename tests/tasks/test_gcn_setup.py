"""FedGCN's pre-communication as the task's setup, run over the Grid by the secure-sum service.

The run's release must equal the in-process reference (:func:`gcn.precommunicate`), each node
must compute its share from its own part of the graph, its vector must cross the Grid only
masked, and a setup that cannot reach every node must fail the run with the reason.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from clients.handlers import ClientInputError
from clients.queries import handle_query
from fedcore.apps import make_client_app
from fedcore.config import parse_config, to_run_config
from fedcore.datasets import resolve_data_dir
from fedcore.datasets.planetoid import load_planetoid
from fedcore.keys import (
    ARRAYS,
    CONFIG,
    PARTITION_ID,
    QUERY,
    SECAGG_STAGE,
    SERVER_ROUND,
    SETUP_KEPT,
    STATISTICS,
)
from fedcore.server import RunFailed, run_server
from fedcore.setup_round import SetupFailed, run_setup
from fedcore.tasks import gcn, get_task
from fedcore.tasks.gcn.setup import release_noise_std
from simulations.engines.inprocess import InProcessGrid, deliver


@pytest.fixture(scope="module")
def cora():
    return load_planetoid("cora", resolve_data_dir(None))


def _cfg(**graph):
    return parse_config(
        {
            "task": "gcn",
            "seed": 3,
            "data": {"dataset": "cora", "num-clients": 3, "partition": "louvain"},
            "model": {"hidden": [16]},
            "graph": {"mode": "precomm", "hops": 2, **graph},
            "privacy": {"seeded-noise": True},
            "train": {"rounds": 1},
        }
    )


def _recording_app(cfg, contexts: dict):
    def record(msg: Message, context: Context, call_next) -> Message:
        contexts[context.node_id] = context
        return call_next(msg, context)

    return make_client_app(cfg, mods=[record])


@pytest.mark.parametrize("graph", [{"precomm-epsilon": 0.0}, {}, {"precomm-features": False}])
def test_the_release_over_the_grid_equals_the_in_process_reference(cora, graph):
    cfg = _cfg(**graph)
    contexts: dict[int, Context] = {}
    seen: list[Message] = []

    def observe(replies):
        for reply in replies:
            seen.append(reply)
            yield reply

    with InProcessGrid(cfg, client_app=_recording_app(cfg, contexts)) as grid:
        record = run_setup(grid, cfg, get_task("gcn").setup, observe=observe)
    assert record["nodes"] == 3
    # no reply of any stage carries a node's vector: only keys, ciphertexts, masked sums
    assert not any(STATISTICS in r.content.array_records.get(ARRAYS, {}) for r in seen)

    data = gcn.load_graph_data(cfg)
    parts = [part.nodes for part in data.clients]
    ax, d = gcn.precommunicate(
        cora,
        parts,
        cfg.seed,
        clip=cfg.graph.feature_clip,
        noise_multiplier=gcn.precomm_noise_multiplier(cfg),
        seeded_noise=True,
        features=cfg.graph.precomm_features,
    )
    std = release_noise_std(cfg)
    for context in contexts.values():
        part = data.clients[context.node_config[PARTITION_ID]]
        kept = context.state[SETUP_KEPT]
        want_x, want_d = gcn.kept_rows(part, ax, d, 2, cfg.graph.feature_clip, std)
        np.testing.assert_array_equal(kept["degree"].numpy(), want_d)
        # each node rounds its own encoding: the sum differs by < 1 unit of 2^-12 per node
        np.testing.assert_allclose(kept["x"].numpy(), want_x, atol=3 * 2**-12)


def test_a_node_computes_its_share_from_its_own_part_alone(cora):
    """Scramble every foreign node's features: the node's share must not change."""
    cfg = _cfg(**{"precomm-epsilon": 0.0})
    graph = cora
    nodes = gcn.load_graph_data(cfg).clients[0].nodes
    own = np.zeros(graph.num_nodes, bool)
    own[nodes] = True
    scrambled = graph.x.copy()
    scrambled[~own] = np.random.default_rng(1).permutation(graph.x[~own])
    shares = [
        get_task("gcn").setup.share(cfg, gcn.graph_part(g, nodes), 0)
        for g in (graph, dataclasses.replace(graph, x=scrambled))
    ]
    np.testing.assert_array_equal(shares[0], shares[1])


def _query(stage: str | None) -> Message:
    config = {SERVER_ROUND: 0, QUERY: "gcn-precomm"}
    if stage is not None:
        config[SECAGG_STAGE] = stage
    return Message(
        RecordDict({CONFIG: ConfigRecord(config)}), dst_node_id=1, message_type=MessageType.QUERY
    )


def _context(cfg) -> Context:
    return Context(1, 1, {PARTITION_ID: 0}, RecordDict(), to_run_config(cfg))


def test_a_server_asking_for_a_share_outright_is_refused():
    """A curious server sends the query without the secure-sum stage, or with the stage but
    straight to the handler (past the masking mod): the node answers neither."""
    cfg = _cfg()
    for stage in (None, "input"):
        with pytest.raises(ClientInputError, match="only sent masked"):
            handle_query(_query(stage), _context(cfg), cfg)
    reply = deliver(make_client_app(cfg), _query(None), _context(cfg))  # as the engine does
    assert reply.has_error() and "only sent masked" in reply.error.reason


def test_a_node_without_the_release_refuses_to_train():
    from clients.handlers import partition_data

    with pytest.raises(ClientInputError, match="has not received the release"):
        partition_data(_context(_cfg()), _cfg())


def test_a_node_that_drops_out_of_the_setup_fails_the_run_with_the_reason():
    cfg = _cfg()

    def silent_on_queries(msg: Message, context: Context, call_next) -> Message:
        if msg.metadata.message_type == MessageType.QUERY and context.node_id % 3 == 1:
            raise ClientInputError("this node is gone")
        return call_next(msg, context)

    app = make_client_app(cfg, mods=[silent_on_queries])
    with InProcessGrid(cfg, client_app=app) as grid, pytest.raises(RunFailed, match="gcn-precomm"):
        run_server(grid, cfg)


def test_a_server_asking_for_the_sum_twice_gets_no_second_share():
    """The release's noise is accounted once; a curious server that runs the secure sum
    again would average fresh noise away. The second time, every node refuses."""
    cfg = _cfg()
    with InProcessGrid(cfg) as grid:
        run_setup(grid, cfg, get_task("gcn").setup)
        with pytest.raises(SetupFailed, match="already sent its vector"):
            run_setup(grid, cfg, get_task("gcn").setup)
