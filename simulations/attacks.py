"""Malicious clients for simulations: a Flower client mod that replaces their replies.

``attack.num-malicious`` clients, drawn from the run seed alone (:func:`malicious_clients`,
the same on every engine), send what ``attack.name`` says instead of their honest update;
every other client's reply passes through untouched, and the honest code path
(:mod:`clients.statistics`) knows nothing of attacks. An attack works on a client's
*values* (:func:`fedcore.robust.flat_values`: its update, not its example-weighted wire
vector) and keeps the weight the client claims. What each attack assumes it knows:

- ``sign-flip``: its own update, negated;
- ``gaussian``: its own update plus ``N(0, noise-std^2 I)`` (FLANDERS' Gaussian attack);
- ``scale``: its own update times ``attack.scale`` (a boosted update);
- ``label-flip``: its own data, trained on with labels ``y -> K - 1 - y``;
- ``alie``, ``ipm``, ``minmax``: the malicious clients collude, and each knows every
  colluder's benign update of the round (the first of them to train in a process computes
  them all once, at the round's global model, and caches them for the round), not the
  honest clients'; all colluders then send the same vector: A Little Is Enough's
  ``mean - z std`` (Baruch et al. 2019, :func:`alie_z`), inner-product manipulation's
  ``-epsilon mean`` (Xie et al. 2020), or min-max's ``mean + gamma p`` with ``p = -std``
  and the largest ``gamma`` that keeps it within the benign updates' largest pairwise
  distance of every one of them (Shejwalkar and Houmansadr 2021, :func:`minmax_gamma`).

Attacks replace plain replies (no secure aggregation, no DP: :mod:`fedcore.config.rules`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedcore import robust, seeding
from fedcore.arrays import from_numpy, to_numpy, to_numpy_dict
from fedcore.config import RunConfig
from fedcore.keys import ARRAYS, CONFIG, PARTITION_ID, SERVER_ROUND, STATISTICS
from fedcore.statistics import Spec, contribution, decode

COLLUDING = frozenset({"alie", "ipm", "minmax"})


def malicious_clients(cfg: RunConfig) -> frozenset[int]:
    """The partition ids of the malicious clients: the first ``attack.num-malicious`` of a
    permutation of all clients drawn from the run seed."""
    order = seeding.numpy_rng(cfg.seed, seeding.ATTACKS).permutation(cfg.data.num_clients)
    return frozenset(int(p) for p in order[: cfg.attack.num_malicious])


# -- the attacks, on flat value vectors ----------------------------------------------------
def sign_flip(update: np.ndarray) -> np.ndarray:
    return -update


def scaled(update: np.ndarray, factor: float) -> np.ndarray:
    return factor * update


def gaussian(update: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    return update + rng.normal(0.0, std, update.shape)


def flip_labels(y, num_classes: int):
    """Labels ``y -> K - 1 - y`` (every example's label changes when K > 1 is even)."""
    return num_classes - 1 - y


def alie_z(clients: int, malicious: int) -> float:
    """Baruch et al.'s ``z_max``: with ``s = floor(n / 2 + 1) - m`` more clients needed
    for a majority, ``z = Phi^-1((n - s) / n)``."""
    s = math.floor(clients / 2 + 1) - malicious
    p = (clients - s) / clients
    if not 0 < p < 1:
        raise ValueError(
            f"ALIE's z_max needs 0 < (n - s) / n < 1; n = {clients}, m = {malicious} give "
            f"{p:g}; set attack.alie-z"
        )
    return NormalDist().inv_cdf(p)


def alie(benign: np.ndarray, z: float) -> np.ndarray:
    """A Little Is Enough: the benign rows' coordinate-wise mean minus ``z`` stds."""
    return benign.mean(axis=0) - z * benign.std(axis=0)


def ipm(benign: np.ndarray, epsilon: float) -> np.ndarray:
    """Inner-product manipulation: ``-epsilon`` times the benign rows' mean."""
    return -epsilon * benign.mean(axis=0)


def _max_distance(point: np.ndarray, benign: np.ndarray) -> float:
    return float(np.linalg.norm(benign - point, axis=1).max())


def minmax_gamma(benign: np.ndarray, direction: np.ndarray, tolerance: float = 1e-6) -> float:
    """The largest ``gamma >= 0`` (to relative ``tolerance``) with ``mean + gamma direction``
    within the benign rows' largest pairwise distance of every row. The largest distance to
    the rows is convex in gamma and within that bound at 0 (the mean is no farther from a
    row than the farthest other row), so the feasible gammas are an interval from 0 and
    bisection finds its end."""
    mean = benign.mean(axis=0)
    limit = float(np.sqrt(robust.squared_distances(benign).clip(min=0).max()))
    if not np.any(direction):
        return 0.0

    def fits(gamma: float) -> bool:
        return _max_distance(mean + gamma * direction, benign) <= limit

    low, high = 0.0, 1.0
    while fits(high):
        low, high = high, 2 * high
    while high - low > tolerance * high:
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def minmax(benign: np.ndarray) -> np.ndarray:
    """Min-max with the inverse-std perturbation ``p = -std``."""
    direction = -benign.std(axis=0)
    return benign.mean(axis=0) + minmax_gamma(benign, direction) * direction


def crafted(cfg: RunConfig, benign: np.ndarray) -> np.ndarray:
    """What the colluders send, from their benign updates (one row each)."""
    a = cfg.attack
    if a.name == "alie":
        z = a.alie_z or alie_z(int(cfg.planned_cohort), a.num_malicious)
        return alie(benign, z)
    if a.name == "ipm":
        return ipm(benign, a.ipm_epsilon)
    return minmax(benign)


# -- the mod -------------------------------------------------------------------------------
def _wire(reply: Message) -> tuple[str, np.ndarray]:
    """The key of the reply's ArrayRecord and its wire vector."""
    (key,) = reply.content.array_records.keys()
    return key, to_numpy(reply.content.array_records[key][STATISTICS])


def reply_values(reply: Message, spec: Spec) -> np.ndarray:
    """A reply's flat values (its update)."""
    return robust.flat_values([decode(_wire(reply)[1], spec, 1)])[0]


def with_values(reply: Message, spec: Spec, new: np.ndarray) -> Message:
    """``reply`` with its values replaced by ``new``, its weights kept, in its wire dtype."""
    key, wire = _wire(reply)
    one = decode(wire, spec, 1)
    stats, offset = {}, 0
    for name, a in spec.arrays:
        if name in spec.weights:
            stats[name] = one[name]
            continue
        stats[name] = new[offset : offset + a.size].reshape(a.shape)
        offset += a.size
    reply.content.array_records[key][STATISTICS] = from_numpy(
        contribution(stats, spec).astype(wire.dtype)
    )
    return reply


def attack_mods(cfg: RunConfig) -> list[Mod]:
    """The client mod of ``cfg.attack`` (none without an attack)."""
    if cfg.attack.name == "none":
        return []
    from fedcore.tasks import get_algorithm, model_shape

    bad = malicious_clients(cfg)
    algo = get_algorithm(cfg.task)
    # this process's colluders' vector of the round, crafted once from their benign updates
    crafted_of_round: dict[int, np.ndarray] = {}

    def colluders(msg: Message, context: Context, call_next: ClientAppCallable, spec: Spec):
        """The vector every colluder sends this round."""
        server_round = int(msg.content.config_records[CONFIG].get(SERVER_ROUND, 0))
        if server_round not in crafted_of_round:
            crafted_of_round.clear()
            rows = []
            for pid in sorted(bad):
                node_config = {**context.node_config, PARTITION_ID: pid}
                ctx = dataclasses.replace(context, node_config=node_config, state=RecordDict())
                rows.append(reply_values(call_next(msg, ctx), spec))
            crafted_of_round[server_round] = crafted(cfg, np.stack(rows))
        return crafted_of_round[server_round]

    def label_flip(msg: Message, context: Context) -> Message:
        """The honest handler on an algorithm whose client hook sees mirrored labels (in
        place of the inner mods: the secure-aggregation mod, idle where attacks may run)."""
        from clients.statistics import handle_statistics

        classes = model_shape(algo, cfg).num_classes

        def client(state, data, ctx, rng):
            flipped = dataclasses.replace(data, y_train=flip_labels(data.y_train, classes))
            return algo.client(state, flipped, ctx, rng)

        return handle_statistics(msg, context, cfg, dataclasses.replace(algo, client=client))

    def attack_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        pid = int(context.node_config[PARTITION_ID])
        if msg.metadata.message_type != MessageType.TRAIN or pid not in bad:
            return call_next(msg, context)
        name = cfg.attack.name
        if name == "label-flip":
            return label_flip(msg, context)
        spec = algo.spec(cfg, to_numpy_dict(msg.content.array_records[ARRAYS]))
        if name in COLLUDING:
            sent = colluders(msg, context, call_next, spec)
            return with_values(call_next(msg, context), spec, sent)
        reply = call_next(msg, context)
        update = reply_values(reply, spec)
        server_round = int(msg.content.config_records[CONFIG].get(SERVER_ROUND, 0))
        rng = seeding.numpy_rng(cfg.seed, seeding.ATTACKS, server_round, pid)
        attacks: dict[str, Callable[[], np.ndarray]] = {
            "sign-flip": lambda: sign_flip(update),
            "scale": lambda: scaled(update, cfg.attack.scale),
            "gaussian": lambda: gaussian(update, cfg.attack.noise_std, rng),
        }
        return with_values(reply, spec, attacks[name]())

    return [attack_mod]
