"""Seeded generators derived from (run seed, stream, ...), so no code touches a global RNG.

Each use of randomness has its own stream. A client's generator depends only on the run seed,
the round and the client's partition id, so one worker or many, in-process or on Ray, draw the
same numbers for the same client.
"""

from __future__ import annotations

import numpy as np
import torch

PARTITION = 1
MODEL_INIT = 2
CLIENT_TRAIN = 3
SAMPLING = 4
FAULTS = 5
DP_NOISE = 6
SECAGG = 7


def numpy_rng(seed: int, stream: int, *keys: int) -> np.random.Generator:
    """A numpy generator for ``stream`` under ``seed``, further keyed by ``keys``."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, *keys]))


def torch_generator(seed: int, stream: int, *keys: int) -> torch.Generator:
    """A CPU torch generator seeded from the same derivation as :func:`numpy_rng`."""
    state = np.random.SeedSequence([seed, stream, *keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def client_generator(seed: int, server_round: int, partition_id: int) -> torch.Generator:
    """The generator one client uses for one round of local training."""
    return torch_generator(seed, CLIENT_TRAIN, server_round, partition_id)
