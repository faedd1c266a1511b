"""Seeded generators derived from (run seed, stream, ...), so no code touches a global RNG.

Each use of randomness has its own stream. A client's generator depends only on the run seed,
the round and the client's partition id, so one worker or many, in-process or on Ray, draw the
same numbers for the same client. The one exception is DP noise, which comes from the
operating system's CSPRNG unless a run asks for seeded noise (:func:`noise_rng`).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where a generator is made: a deployed node's
    import torch  # secure-aggregation stages run in processes that never need it

PARTITION = 1
MODEL_INIT = 2
CLIENT_TRAIN = 3
SAMPLING = 4
FAULTS = 5
DP_NOISE = 6
SECAGG = 7
DP_BATCHES = 8
ATTACKS = 9  # simulations: who is malicious, an attack's own noise
ROBUST_BUCKETS = 10  # the server's bucketing permutation (fedcore.robust)
COMPRESSION = 11  # a compressor's own randomness (stochastic rounding, random-k)


def numpy_rng(seed: int, stream: int, *keys: int) -> np.random.Generator:
    """A numpy generator for ``stream`` under ``seed``, further keyed by ``keys``."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, *keys]))


def torch_generator(seed: int, stream: int, *keys: int) -> torch.Generator:
    """A CPU torch generator seeded from the same derivation as :func:`numpy_rng`."""
    import torch

    state = np.random.SeedSequence([seed, stream, *keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def secret_rng(seeded: bool, seed: int, stream: int, *keys: int) -> np.random.Generator:
    """A generator for randomness a privacy guarantee rests on, seeded from the OS CSPRNG
    unless ``seeded`` (experiments only): noise that anyone who knows the run seed can
    regenerate can be subtracted, and sampling they can recompute amplifies nothing."""
    if seeded:
        return numpy_rng(seed, stream, *keys)
    return np.random.default_rng(secrets.randbits(128))


def secret_generator(seeded: bool, seed: int, stream: int, *keys: int) -> torch.Generator:
    """The torch counterpart of :func:`secret_rng`."""
    import torch

    if seeded:
        return torch_generator(seed, stream, *keys)
    return torch.Generator().manual_seed(secrets.randbits(63))


def noise_rng(seeded: bool, seed: int, *keys: int) -> np.random.Generator:
    """The generator of DP noise (:func:`secret_rng` on its own stream)."""
    return secret_rng(seeded, seed, DP_NOISE, *keys)


def noise_generator(seeded: bool, seed: int, *keys: int) -> torch.Generator:
    """The torch generator of DP-SGD's per-step noise."""
    return secret_generator(seeded, seed, DP_NOISE, *keys)


def batch_generator(seeded: bool, seed: int, server_round: int, partition_id: int):
    """The generator of one client's DP-SGD Poisson batches in one round: secret, since the
    accountant's amplification by subsampling assumes nobody can tell which examples a step
    used."""
    return secret_generator(seeded, seed, DP_BATCHES, server_round, partition_id)


def client_generator(seed: int, server_round: int, partition_id: int) -> torch.Generator:
    """The generator one client uses for one round of local training."""
    return torch_generator(seed, CLIENT_TRAIN, server_round, partition_id)
