"""The server's side of one round, as a state machine free of any transport."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from privacy.secagg import crypto, floor, graph, shamir
from privacy.secagg.floor import threshold
from privacy.secagg.protocol.common import (
    _MASK,
    CIPHERTEXT_BYTES,
    MalformedInput,
    PublicKeys,
    SecAggAbort,
    _apply_pair_mask,
    check_public_keys,
)
from privacy.secagg.quantize import FixedPoint


@dataclass
class SecAggServer:
    """The server's side of one round: routes messages and unmasks the sum.

    Args:
        fp: the round's fixed-point encoding (the modulus bounds the cohort size).
        threshold_fraction: a client's secrets need more than this fraction of its holders.
        degree: neighbours per client (SecAgg+), or None for the complete graph.
        seed: the public seed of the neighbour graph.
        input_length: the length of every masked input (None: the most common length).
        insecure_demo: lift the security floor (:mod:`privacy.secagg.floor`).

    ``dropped`` maps each client dropped for a malformed message to the reason.
    """

    round_id: int
    fp: FixedPoint
    threshold_fraction: float
    degree: int | None
    seed: int
    input_length: int | None = None
    insecure_demo: bool = False
    roster: dict[int, PublicKeys] = field(default_factory=dict)
    graph: dict[int, list[int]] = field(default_factory=dict)
    u2: set[int] = field(default_factory=set)
    _sum: np.ndarray | None = None
    u3: set[int] = field(default_factory=set)
    dropped: dict[int, str] = field(default_factory=dict)

    def _need(self, have: int, stage: str) -> None:
        least = 2 if self.insecure_demo else floor.MIN_COHORT
        if have < least:
            raise SecAggAbort(f"{stage}: {have} clients left, at least {least} needed")

    def _drop(self, client: int, stage: str, err: MalformedInput) -> None:
        self.dropped[client] = f"{stage}: malformed, dropped: {err}"

    def collect_keys(self, keys: Mapping[int, object]) -> dict[int, list[int]]:
        """Fix ``U1`` (the clients whose keys are valid and distinct from every other key)
        and the neighbour graph; returns each client's neighbours."""
        valid: dict[int, PublicKeys] = {}
        for u, k in keys.items():
            try:
                valid[u] = check_public_keys(k)
            except MalformedInput as err:
                self._drop(u, "advertise keys", err)
        owners: dict[bytes, set[int]] = {}
        for u, k in valid.items():
            owners.setdefault(k.channel, set()).add(u)
            owners.setdefault(k.mask, set()).add(u)
        for u, k in list(valid.items()):
            # a copy cannot be told from its original: every holder of a key used twice goes
            # (a client whose two keys are equal included, as Bonawitz et al. require)
            if len(owners[k.channel] | owners[k.mask]) > 1 or k.channel == k.mask:
                self._drop(u, "advertise keys", MalformedInput("a public key is not unique"))
                del valid[u]
        self._need(len(valid), "advertise keys")
        self.roster = valid
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.round_id]))
        self.graph = graph.neighbours(list(valid), self.degree, rng)
        if not self.insecure_demo:
            for u, peers in self.graph.items():
                holders = len(peers) + 1
                try:
                    floor.check_threshold(holders, threshold(holders, self.threshold_fraction))
                except floor.BelowFloorError as err:
                    raise SecAggAbort(f"client {u}: {err}") from None
        return self.graph

    def route_shares(self, sent: Mapping[int, Mapping[int, object]]) -> dict[int, dict[int, bytes]]:
        """Fix ``U2`` (the clients of ``U1`` that sent one well-sized ciphertext to each of
        their neighbours); each receiver's ciphertexts, keyed by sender."""
        valid: dict[int, Mapping[int, object]] = {}
        for u, blobs in sent.items():
            try:
                if u not in self.graph:
                    raise MalformedInput("not in the round's roster")
                if not isinstance(blobs, Mapping):  # (the service parses one; fuzzed here)
                    raise MalformedInput("ciphertexts are not keyed by their receivers")
                if set(blobs) != set(self.graph[u]):
                    raise MalformedInput("ciphertexts are not addressed to its neighbours")
                sizes = [len(b) if isinstance(b, bytes) else -1 for b in blobs.values()]
                if any(size != CIPHERTEXT_BYTES for size in sizes):
                    raise MalformedInput(f"a ciphertext is not {CIPHERTEXT_BYTES} bytes")
            except MalformedInput as err:
                self._drop(u, "share keys", err)
                continue
            valid[u] = blobs
        self._need(len(valid), "share keys")
        self.u2 = set(valid)
        inbox: dict[int, dict[int, bytes]] = {v: {} for v in self.u2}
        for u, blobs in valid.items():
            for v, blob in blobs.items():
                if v in inbox:
                    inbox[v][u] = blob
        return inbox

    def _expected_length(self, masked: Mapping[int, object]) -> int:
        if self.input_length is not None:
            return self.input_length
        lengths = [np.shape(y) for y in masked.values() if np.ndim(y) == 1]
        if not lengths:
            return -1
        return max(set(lengths), key=lengths.count)[0]

    def collect_masked(self, masked: Mapping[int, object]) -> set[int]:
        """Fix ``U3`` (the clients of ``U2`` whose masked input has the round's dtype and
        length) and add their masked inputs; returns ``U3`` for the unmasking request.
        :class:`SecAggAbort` if the sum is below the floor: some client in it has fewer than
        ``t + 1`` of its holders in it."""
        length = self._expected_length(masked)
        valid: dict[int, np.ndarray] = {}
        for u, y in masked.items():
            try:
                if u not in self.u2:
                    raise MalformedInput("it did not share its keys")
                if not isinstance(y, np.ndarray) or y.dtype != self.fp.dtype:
                    raise MalformedInput(f"a masked input must be {np.dtype(self.fp.dtype)}")
                if y.shape != (length,):
                    raise MalformedInput(f"masked input of shape {y.shape}, not ({length},)")
            except MalformedInput as err:
                self._drop(u, "masked input", err)
                continue
            valid[u] = y
        self._need(len(valid), "masked input")
        survivors = set(valid)
        for u in sorted(survivors):
            holders = {u, *self.graph[u]}
            t = threshold(len(holders), self.threshold_fraction)
            need = floor.min_survivors(t, self.insecure_demo)
            if len(holders & survivors) < need:
                rule = "t" if self.insecure_demo else "t + 1"
                raise SecAggAbort(
                    f"masked input: {len(holders & survivors)} of client {u}'s {len(holders)} "
                    f"holders (itself and its neighbours) sent masked inputs, below the {need} "
                    f"({rule}, share threshold t = {t} of {len(holders)}) needed to unmask it"
                )
        total = np.zeros(length, self.fp.dtype)
        for y in valid.values():
            total += y
        self._sum, self.u3 = total, survivors
        return self.u3

    def _reconstruct(self, owner: int, kind: str, got: dict[int, shamir.Share], t: int) -> bytes:
        """The secret, checked against what its owner advertised: a tampered or wrong share
        aborts the round instead of unmasking garbage."""
        try:
            secret = shamir.reconstruct(got, t)
        except ValueError:  # the shares are no sharing of a 32-byte secret
            secret = None
        keys = self.roster[owner]
        ok = secret is not None and (
            crypto.digest(secret) == keys.seed_hash
            if kind == "b"
            else crypto.public_key(crypto.load_private(secret)) == keys.mask
        )
        if not ok:
            raise SecAggAbort(f"client {owner}: the shares do not match its commitment")
        return secret

    def _check_revealed(self, holder: int, given: Mapping[int, object]) -> None:
        if holder not in self.u3:
            raise MalformedInput("it was not asked to unmask")
        if not isinstance(given, Mapping):
            raise MalformedInput("its shares are not keyed by their owners")
        owners = ({holder, *self.graph[holder]}) & self.u2
        for owner, item in given.items():
            if owner not in owners:
                raise MalformedInput(f"it holds no share of client {owner}")
            if not isinstance(item, tuple) or len(item) != 2:
                raise MalformedInput(f"its share of client {owner} is not a (kind, share) pair")
            kind, value = item
            expected = "b" if owner in self.u3 else "s"
            if kind != expected:
                raise MalformedInput(f"it revealed a {kind}-share of client {owner}")
            if np.shape(value) != (shamir.LIMBS,):
                raise MalformedInput(f"its share of client {owner} is not {shamir.LIMBS} limbs")

    def unmask(self, revealed: Mapping[int, Mapping[int, tuple[str, shamir.Share]]]) -> np.ndarray:
        """The sum of the inputs of ``U3`` (still encoded mod 2^k); a holder whose reply is
        malformed is ignored (:class:`SecAggAbort` if too few shares are left)."""
        shares: dict[tuple[str, int], dict[int, shamir.Share]] = {}
        for holder, given in revealed.items():
            try:
                self._check_revealed(holder, given)
            except MalformedInput as err:
                self._drop(holder, "unmask", err)
                continue
            for owner, (kind, value) in given.items():
                shares.setdefault((kind, owner), {})[holder] = value
        total = self._sum.copy()
        expand = crypto.MaskExpander(len(total), self.fp.dtype)
        for u in sorted(self.u2):
            holders = len(self.graph[u]) + 1
            t = threshold(holders, self.threshold_fraction)
            kind = "b" if u in self.u3 else "s"
            got = shares.get((kind, u), {})
            if len(got) < t:
                raise SecAggAbort(
                    f"unmask: {len(got)} of client {u}'s {holders} holders revealed a share of "
                    f"its {'self-mask seed' if kind == 'b' else 'mask key'}, below its share "
                    f"threshold t = {t} ({len(revealed)} of the {len(self.u3)} clients in the "
                    "sum replied); cannot unmask"
                )
            secret = self._reconstruct(u, kind, got, t)
            if kind == "b":
                total -= expand(secret)
                continue
            mask_key = crypto.load_private(secret)
            for v in self.graph[u]:  # u dropped after sharing: remove v's mask with u
                if v in self.u3:
                    seed = crypto.agree(
                        mask_key, self.roster[u].mask, self.roster[v].mask, _MASK, self.round_id
                    )
                    _apply_pair_mask(total, expand, seed, v, u, sign=-1)
        return total
