"""One round run in this process, every client honest: the sum of ``inputs``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from privacy.secagg.protocol.client import SecAggClient
from privacy.secagg.protocol.server import SecAggServer
from privacy.secagg.quantize import FixedPoint


def secure_sum(
    inputs: Mapping[int, np.ndarray],
    fp: FixedPoint,
    threshold_fraction: float = 0.5,
    degree: int | None = None,
    round_id: int = 0,
    seed: int = 0,
    insecure_demo: bool = False,
) -> np.ndarray:
    """The protocol run among ``inputs``' owners in one process, with no dropouts: the sum of
    the encoded inputs mod 2^k, computed only from masked vectors and revealed shares. For a
    one-off secure sum outside the Flower rounds (e.g. FedGCN's neighbour pre-communication)."""
    ids = sorted(inputs)
    length = len(inputs[ids[0]]) if ids else 0
    server = SecAggServer(round_id, fp, threshold_fraction, degree, seed, length, insecure_demo)
    clients = {i: SecAggClient(i, round_id, fp, threshold_fraction, insecure_demo) for i in ids}
    graph_ = server.collect_keys({i: clients[i].advertise() for i in ids})
    inbox = server.route_shares({i: clients[i].share_keys(server.roster, graph_[i]) for i in ids})
    survivors = server.collect_masked(
        {i: clients[i].masked_input(inputs[i], inbox[i]) for i in ids}
    )
    return server.unmask({i: clients[i].unmask(survivors) for i in survivors})
