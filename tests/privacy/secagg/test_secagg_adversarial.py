"""Secure aggregation against a misbehaving client and a configuration below the floor.

Each test plays the attack or the mistake: a client that sends a malformed or copied public key
or a masked input of the wrong length is dropped and the honest clients' sum still comes out;
settings under which one colluder could read another client's update are refused.
"""

import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flwr.app import Array, ConfigRecord, Message, MessageType, RecordDict

from fedcore.config import ConfigError, parse_config
from fedcore.keys import ARRAYS, CONFIG, PARTITION_ID, SECAGG, SECAGG_STAGE, SERVER_ROUND
from privacy.secagg import crypto
from privacy.secagg.protocol import (
    ProtocolViolation,
    PublicKeys,
    SecAggAbort,
    SecAggClient,
    SecAggServer,
)
from privacy.secagg.quantize import decode, encode, fixed_point

N = 6
LENGTH = 5


def play(keys_of=lambda i, honest: honest, masked_of=lambda i, y: y, n=N, threshold=0.5):
    """A full-graph round among clients 1..n in which client ``i`` advertises
    ``keys_of(i, its honest keys)`` and sends ``masked_of(i, its masked input)``; every client
    that the server keeps follows the protocol. The decoded sum, the inputs and the server."""
    fp = fixed_point(n, 1.0, 16)
    xs = {i: np.random.default_rng(i).uniform(-1, 1, LENGTH) for i in range(1, n + 1)}
    server = SecAggServer(7, fp, threshold, None, seed=3, input_length=LENGTH)
    clients = {i: SecAggClient(i, 7, fp, threshold) for i in xs}
    graph = server.collect_keys({i: keys_of(i, c.advertise()) for i, c in clients.items()})
    sent = {}
    for i in graph:
        try:
            sent[i] = clients[i].share_keys(server.roster, graph[i])
        except ProtocolViolation:  # a client that sees its own keys altered drops out
            assert keys_of(i, clients[i].advertise()) != clients[i].advertise()
    inbox = server.route_shares(sent)
    rng = np.random.default_rng(0)
    masked = {
        i: masked_of(i, clients[i].masked_input(encode(xs[i], fp, rng), inbox[i])) for i in inbox
    }
    survivors = server.collect_masked(masked)
    total = server.unmask({i: clients[i].unmask(survivors) for i in survivors})
    return decode(total, fp), xs, server


def assert_sum_of(total, xs, clients):
    plain = sum(xs[i] for i in clients)
    assert np.abs(total - plain).max() <= len(clients) / 2**16


@pytest.mark.parametrize(
    "bad_key",
    [b"\x01" * 31, b"\x01" * 33, bytes(32), "not bytes"],
    ids=["short", "long", "low-order-point", "not-bytes"],
)
def test_a_client_with_a_malformed_public_key_is_dropped_and_the_rest_summed(bad_key):
    def keys_of(i, honest):  # the channel key: every neighbour uses it at once
        return PublicKeys(bad_key, honest.mask, honest.seed_hash) if i == 3 else honest

    total, xs, server = play(keys_of)
    assert set(server.dropped) == {3} and "malformed" in server.dropped[3]
    assert_sum_of(total, xs, [1, 2, 4, 5, 6])


def test_a_client_that_copies_a_public_key_is_dropped_with_its_victim():
    """A copy cannot be told from the original, so both holders of the key go; the four
    others' sum still comes out (Bonawitz et al.'s clients would abort on equal keys)."""
    first: dict[int, PublicKeys] = {}

    def keys_of(i, honest):
        first.setdefault(i, honest)
        return PublicKeys(honest.channel, first[1].mask, honest.seed_hash) if i == 4 else honest

    total, xs, server = play(keys_of)
    assert set(server.dropped) == {1, 4}
    assert_sum_of(total, xs, [2, 3, 5, 6])


def test_a_client_whose_two_keys_are_equal_is_dropped():
    def keys_of(i, honest):
        return PublicKeys(honest.mask, honest.mask, honest.seed_hash) if i == 2 else honest

    total, xs, server = play(keys_of)
    assert set(server.dropped) == {2}
    assert_sum_of(total, xs, [1, 3, 4, 5, 6])


@pytest.mark.parametrize(
    "tamper",
    [lambda y: y[:-1], lambda y: np.append(y, y[:1]), lambda y: y.astype(np.int64), lambda y: y[0]],
    ids=["short", "long", "dtype", "scalar"],
)
def test_a_wrong_length_masked_input_is_dropped_and_its_masks_recovered(tamper):
    """The malformed input is left out like a client that dropped after sharing its keys: its
    pair masks are removed with the others' shares and the honest sum is exact."""
    total, xs, server = play(masked_of=lambda i, y: tamper(y) if i == 5 else y)
    assert set(server.dropped) == {5} and "masked input" in server.dropped[5]
    assert_sum_of(total, xs, [1, 2, 3, 4, 6])


def test_a_malformed_unmasking_reply_is_ignored_not_fatal():
    fp = fixed_point(N, 1.0, 16)
    server = SecAggServer(1, fp, 0.5, None, seed=0, input_length=2)
    clients = {i: SecAggClient(i, 1, fp, 0.5) for i in range(1, N + 1)}
    graph = server.collect_keys({i: c.advertise() for i, c in clients.items()})
    inbox = server.route_shares(
        {i: c.share_keys(server.roster, graph[i]) for i, c in clients.items()}
    )
    masked = {i: c.masked_input(np.full(2, i, fp.dtype), inbox[i]) for i, c in clients.items()}
    survivors = server.collect_masked(masked)
    revealed = {i: clients[i].unmask(survivors) for i in survivors}
    owner = next(iter(revealed[2]))
    revealed[2][owner] = ("s", revealed[2][owner][1])  # the wrong kind of share
    total = server.unmask(revealed)
    np.testing.assert_array_equal(total, np.full(2, sum(range(1, N + 1)), fp.dtype))
    assert set(server.dropped) == {2}


# -- the floor -----------------------------------------------------------------------------


def test_a_cohort_of_two_is_refused_by_the_server():
    fp = fixed_point(2, 1.0, 8)
    server = SecAggServer(1, fp, 0.5, None, seed=0)
    clients = {i: SecAggClient(i, 1, fp, 0.5) for i in (1, 2)}
    with pytest.raises(SecAggAbort, match="at least 3"):
        server.collect_keys({i: c.advertise() for i, c in clients.items()})


def test_a_threshold_of_one_is_refused_by_the_server_and_the_client():
    """t = 1 makes every Shamir share the secret itself."""
    fp = fixed_point(4, 1.0, 8)
    clients = {i: SecAggClient(i, 1, fp, 0.2) for i in range(1, 5)}  # t = int(0.2 * 4) + 1 = 1
    keys = {i: c.advertise() for i, c in clients.items()}
    with pytest.raises(SecAggAbort, match="below the floor"):
        SecAggServer(1, fp, 0.2, None, seed=0).collect_keys(keys)
    with pytest.raises(ProtocolViolation, match="below the floor"):
        clients[1].share_keys(keys, [2, 3, 4])


def test_a_threshold_of_half_the_holders_is_refused_by_the_client():
    fp = fixed_point(4, 1.0, 8)
    clients = {i: SecAggClient(i, 1, fp, 0.25) for i in range(1, 5)}  # t = 2 of 4: not > half
    keys = {i: c.advertise() for i, c in clients.items()}
    with pytest.raises(ProtocolViolation, match="exceed half"):
        clients[1].share_keys(keys, [2, 3, 4])


def test_a_sum_with_only_t_survivors_is_not_unmasked():
    """4 clients, t = 3: with 3 survivors of whom t - 1 = 2 collude, the sum would be the third
    client's input. Bonawitz et al. would unmask it; the floor asks t + 1."""
    fp = fixed_point(4, 1.0, 8)
    server = SecAggServer(1, fp, 0.5, None, seed=0, input_length=2)
    clients = {i: SecAggClient(i, 1, fp, 0.5) for i in range(1, 5)}
    graph = server.collect_keys({i: c.advertise() for i, c in clients.items()})
    inbox = server.route_shares(
        {i: c.share_keys(server.roster, graph[i]) for i, c in clients.items()}
    )
    masked = {i: clients[i].masked_input(np.zeros(2, fp.dtype), inbox[i]) for i in (1, 2, 3)}
    with pytest.raises(SecAggAbort, match=r"below the 4 \(t \+ 1, share threshold t = 3 of 4\)"):
        server.collect_masked(masked)
    with pytest.raises(ProtocolViolation, match="4 are needed"):
        clients[1].unmask({1, 2, 3})


def test_an_insecure_demo_runs_below_the_floor():
    from privacy.secagg.protocol import secure_sum

    fp = fixed_point(2, 1.0, 8)
    inputs = {1: np.full(3, 1, fp.dtype), 2: np.full(3, 2, fp.dtype)}
    np.testing.assert_array_equal(secure_sum(inputs, fp, insecure_demo=True), np.full(3, 3))
    with pytest.raises(SecAggAbort):
        secure_sum(inputs, fp)


BASE = {"data": {"num-clients": 10}, "model": {"hidden": [8]}}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"secagg": {"mode": "full", "threshold": 0.2}}, "more than half"),
        ({"secagg": {"mode": "full"}, "data": {"num-clients": 2}}, "cohort of 2"),
        ({"secagg": {"mode": "full"}, "train": {"fraction": 0.2}}, "cohort of 2"),
        ({"secagg": {"mode": "sparse", "degree": 1}}, "secagg.degree = 1"),
        ({"secagg": {"mode": "sparse", "degree": 2}}, "secagg.degree = 2"),
        ({"secagg": {"mode": "full", "threshold": 0.95}}, "no sum could be released"),
        ({"secagg": {"mode": "full", "bound": 8192.0, "frac-bits": 40}}, "2\\^52"),
    ],
    ids=["threshold", "cohort", "fraction", "degree-1", "degree-2", "t+1>n", "precision"],
)
def test_settings_below_the_floor_are_refused_at_parse_time(settings, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(BASE | settings)


@pytest.mark.parametrize(
    "settings",
    [
        {"secagg": {"mode": "full", "threshold": 0.2}},
        {"secagg": {"mode": "full"}, "data": {"num-clients": 2}},
        {"secagg": {"mode": "sparse", "degree": 1}},
    ],
)
def test_insecure_demo_lets_a_simulation_go_below_the_floor(settings):
    settings["secagg"]["insecure-demo"] = True
    parse_config(BASE | settings)


def test_a_deployed_node_refuses_an_insecure_demo():
    from flwr.app import Context

    from fedcore.keys import DATA_PATH
    from privacy.secagg.mod import SecAggClientError, secagg_mod
    from simulations.engines.inprocess import InProcessGrid

    cfg = parse_config(BASE | {"secagg": {"mode": "full", "insecure-demo": True}})
    mod = secagg_mod(lambda context: cfg)
    with InProcessGrid(cfg):  # Flower's Message needs the identity a Grid sets up
        msg = Message(
            RecordDict({CONFIG: ConfigRecord({SERVER_ROUND: 1, SECAGG_STAGE: "train"})}),
            dst_node_id=1,
            message_type=MessageType.TRAIN,
        )
    node = {PARTITION_ID: 0, DATA_PATH: "/data/client-0.npz"}
    context = Context(run_id=1, node_id=1, node_config=node, state=RecordDict(), run_config={})
    with pytest.raises(SecAggClientError, match="insecure-demo"):
        mod(msg, context, lambda m, c: pytest.fail("the node trained"))


def test_a_deployed_server_refuses_an_insecure_demo():
    from flwr.superlink.grid.http_grid import HttpGrid

    from privacy.secagg.aggregator import SecureAggregator
    from strategies import build_strategy

    cfg = parse_config(BASE | {"secagg": {"mode": "full", "insecure-demo": True}})
    grid = HttpGrid.__new__(HttpGrid)  # the Grid a SuperLink gives a ServerApp; never used
    with pytest.raises(ConfigError, match="deployed run"):
        SecureAggregator(cfg, build_strategy(cfg).sum_format()).send_and_receive(grid, [], None, 1)


# -- over Flower: a malformed reply is a dropout, not an aborted round -------------------------


def _flower_round(cfg, tamper_node=None, stage=None, tamper=None, skip_node=None):
    """One secure round over the in-process Grid, the reply of partition ``tamper_node`` at
    ``stage`` passed through ``tamper``; the replies and the partition of each node."""
    from fedcore import seeding
    from fedcore.apps import make_client_app
    from fedcore.arrays import to_record
    from fedcore.tasks import get_algorithm, server_data
    from privacy.secagg.aggregator import SecureAggregator
    from simulations.engines.inprocess import InProcessGrid
    from strategies import build_strategy

    def tamper_mod(msg, context, call_next):
        reply = call_next(msg, context)
        here = msg.content[CONFIG].get(SECAGG_STAGE)
        if context.node_config[PARTITION_ID] == tamper_node and here == stage:
            tamper(reply.content[SECAGG])
        return reply

    algorithm = get_algorithm(cfg.task)
    rng = seeding.numpy_rng(cfg.seed, seeding.MODEL_INIT)
    arrays = to_record(algorithm.init(cfg, server_data(algorithm, cfg), rng))
    with InProcessGrid(cfg, client_app=make_client_app(cfg, [tamper_mod])) as grid:
        nodes = sorted(grid.get_node_ids())
        partition = {node: i for i, node in enumerate(nodes)}
        messages = [
            Message(
                RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord({SERVER_ROUND: 1})}),
                dst_node_id=node,
                message_type=MessageType.TRAIN,
            )
            for node in nodes
            if partition[node] != skip_node
        ]
        aggregator = SecureAggregator(cfg, build_strategy(cfg).sum_format())
        replies = aggregator.send_and_receive(grid, messages, arrays, 1)
    return replies, partition


@pytest.mark.parametrize(
    ("stage", "tamper"),
    [
        ("train", lambda r: r.__setitem__("mask", b"\x07" * 31)),
        ("train", lambda r: r.__delitem__("channel")),
        ("masked-input", lambda r: r.__setitem__("masked", Array(r["masked"].numpy()[:-1]))),
    ],
    ids=["short-key", "missing-key", "short-masked-input"],
)
def test_over_flower_a_malformed_client_is_dropped_and_the_honest_sum_released(stage, tamper):
    cfg = parse_config(
        {"data": {"num-clients": 6}, "model": {"hidden": [8]}, "train": {"local-epochs": 1}}
        | {"secagg": {"mode": "full"}}
    )
    replies, partition = _flower_round(cfg, tamper_node=2, stage=stage, tamper=tamper)
    aggregate, *errors = replies
    assert not aggregate.has_error()
    (error,) = errors
    assert partition[error.metadata.src_node_id] == 2
    assert "malformed" in error.error.reason
    honest, _ = _flower_round(cfg, skip_node=2)  # the same round without client 2 at all
    for name in aggregate.content[ARRAYS]:
        np.testing.assert_allclose(
            aggregate.content[ARRAYS][name].numpy(), honest[0].content[ARRAYS][name].numpy()
        )


# -- Shamir, encoding and key derivation ---------------------------------------------------


def test_a_masked_input_is_not_the_key_derivation_of_another_round():
    """The same key pairs in two rounds give different pair masks: the round is in the HKDF
    info. (Fresh keys are drawn every round; the binding makes a reused key harmless.)"""
    fp = fixed_point(3, 1.0, 8)
    raw = {i: (bytes([i]) * 32, bytes([i + 10]) * 32, bytes([i + 20]) * 32) for i in (1, 2, 3)}

    def masked(round_id):
        clients = {
            i: SecAggClient(i, round_id, fp, 0.5, _c_raw=c, _s_raw=s, _b=b)
            for i, (c, s, b) in raw.items()
        }
        keys = {i: c.advertise() for i, c in clients.items()}
        sent = {i: c.share_keys(keys, [j for j in keys if j != i]) for i, c in clients.items()}
        inbox = {v: {u: sent[u][v] for u in sent if u != v} for v in clients}
        return clients[1].masked_input(np.zeros(4, fp.dtype), inbox[1]).copy()

    assert not np.array_equal(masked(1), masked(2))


def test_the_pair_key_binds_the_label_the_round_and_both_public_keys():
    a, b = crypto.load_private(bytes([5]) * 32), crypto.load_private(bytes([6]) * 32)
    pa, pb = crypto.public_key(a), crypto.public_key(b)
    info = crypto.pair_info(b"label", 9, pa, pb)
    assert pa in info and pb in info and struct.pack(">Q", 9) in info
    assert info == crypto.pair_info(b"label", 9, pb, pa)  # both ends write the same
    key = crypto.agree(a, pa, pb, b"label", 9)
    assert key == crypto.agree(b, pb, pa, b"label", 9)
    expected = HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(
        a.exchange(crypto.X25519PublicKey.from_public_bytes(pb))
    )
    assert key == expected
    assert key != crypto.agree(a, pa, pb, b"label", 10)
    other = crypto.public_key(crypto.load_private(bytes([7]) * 32))
    assert key != crypto.agree(a, other, pb, b"label", 9)  # a different own key in the info
