"""A client's side of one round, as a state machine free of any transport."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from privacy.secagg import crypto, floor, shamir
from privacy.secagg.floor import threshold
from privacy.secagg.protocol.common import (
    _CHANNEL,
    _MASK,
    _SHARE,
    ProtocolViolation,
    PublicKeys,
    _apply_pair_mask,
    _associated,
)
from privacy.secagg.quantize import FixedPoint


@dataclass
class SecAggClient:
    """One client's side of one round."""

    cid: int
    round_id: int
    fp: FixedPoint
    threshold_fraction: float
    insecure_demo: bool = False
    _c_raw: bytes = field(default_factory=crypto.new_private_bytes, repr=False)
    _s_raw: bytes = field(default_factory=crypto.new_private_bytes, repr=False)
    _b: bytes = field(default_factory=lambda: os.urandom(shamir.SECRET_BYTES), repr=False)
    _public: PublicKeys | None = field(default=None, repr=False)
    _roster: dict[int, PublicKeys] = field(default_factory=dict, repr=False)
    _neighbours: list[int] = field(default_factory=list)
    _received: dict[int, tuple[shamir.Share, shamir.Share]] = field(
        default_factory=dict, repr=False
    )
    _u2: set[int] = field(default_factory=set)
    _channels: dict[int, bytes] = field(default_factory=dict, repr=False)
    _unmasked: bool = False

    # The private keys are kept raw and loaded only by the stage that uses them: a deployed
    # client rebuilds this object from its saved state for every message.
    @functools.cached_property
    def _c_sk(self) -> crypto.X25519PrivateKey:
        return crypto.load_private(self._c_raw)

    @functools.cached_property
    def _s_sk(self) -> crypto.X25519PrivateKey:
        return crypto.load_private(self._s_raw)

    def _channel(self, peer: int) -> bytes:
        """The pair's share-encryption key (computed once per peer)."""
        if peer not in self._channels:
            self._channels[peer] = crypto.agree(
                self._c_sk,
                self.advertise().channel,
                self._roster[peer].channel,
                _CHANNEL,
                self.round_id,
            )
        return self._channels[peer]

    def advertise(self) -> PublicKeys:
        """The public keys (derived once: each is a scalar multiplication)."""
        if self._public is None:
            self._public = PublicKeys(
                crypto.public_key(self._c_sk),
                crypto.public_key(self._s_sk),
                crypto.digest(self._b),
            )
        return self._public

    def share_keys(
        self, roster: Mapping[int, PublicKeys], neighbours: list[int], cid: int | None = None
    ) -> dict[int, bytes]:
        """Encrypted shares of ``s_sk`` and ``b`` for each neighbour, keyed by receiver
        (``cid``: this client's id in the roster, if the server assigns it only now)."""
        if cid is not None:
            self.cid = cid
        if roster.get(self.cid) != self.advertise():
            raise ProtocolViolation("the roster does not hold this client's keys under its id")
        if not set(neighbours) <= set(roster) - {self.cid}:
            raise ProtocolViolation("the roster must hold this client and its neighbours")
        self._roster, self._neighbours = dict(roster), sorted(neighbours)
        holders = sorted([*self._neighbours, self.cid])
        t = threshold(len(holders), self.threshold_fraction)
        if not self.insecure_demo:
            if len(holders) < floor.MIN_COHORT:
                raise ProtocolViolation(
                    f"{len(holders)} holders of this client's secrets are below the floor of "
                    f"{floor.MIN_COHORT}: a sum with one other client reveals it"
                )
            try:
                floor.check_threshold(len(holders), t)
            except floor.BelowFloorError as err:
                raise ProtocolViolation(str(err)) from None
        xs = holders  # client ids are the Shamir x-coordinates (ids are 1..n, never 0)
        s_shares = shamir.share(self._s_raw, t, xs)
        b_shares = shamir.share(self._b, t, xs)
        self._received[self.cid] = (s_shares[self.cid], b_shares[self.cid])
        out = {}
        for v in self._neighbours:
            plain = _SHARE.pack(
                self.cid, v, shamir.to_bytes(s_shares[v]), shamir.to_bytes(b_shares[v])
            )
            out[v] = crypto.encrypt(
                self._channel(v), plain, _associated(self.round_id, self.cid, v)
            )
        return out

    def masked_input(self, x: np.ndarray, ciphertexts: Mapping[int, bytes]) -> np.ndarray:
        """``x`` (already encoded mod 2^k) plus the self mask and the pair masks with every
        neighbour whose shares arrived (``U2``); the shares are decrypted and kept."""
        if x.dtype != self.fp.dtype:
            raise ValueError(f"input must be encoded as {np.dtype(self.fp.dtype)}, got {x.dtype}")
        senders, s_bytes, b_bytes = [], [], []
        for u, blob in ciphertexts.items():
            if u not in self._neighbours:
                raise ProtocolViolation(f"client {u} is not a neighbour of client {self.cid}")
            plain = crypto.decrypt(self._channel(u), blob, _associated(self.round_id, u, self.cid))
            sender, receiver, s_share, b_share = _SHARE.unpack(plain)
            if (sender, receiver) != (u, self.cid):
                raise crypto.TamperedError(f"share addressed {sender}->{receiver}, not {u}->me")
            senders.append(u)
            s_bytes.append(s_share)
            b_bytes.append(b_share)
        s_all = shamir.many_from_bytes(b"".join(s_bytes), len(senders))
        b_all = shamir.many_from_bytes(b"".join(b_bytes), len(senders))
        for k, u in enumerate(senders):
            self._received[u] = (s_all[k], b_all[k])
        self._u2 = set(ciphertexts) | {self.cid}
        expand = crypto.MaskExpander(len(x), self.fp.dtype)
        y = x + expand(self._b)
        for v in sorted(self._u2 - {self.cid}):
            seed = crypto.agree(
                self._s_sk, self.advertise().mask, self._roster[v].mask, _MASK, self.round_id
            )
            _apply_pair_mask(y, expand, seed, self.cid, v)
        return y

    def unmask(self, survivors: set[int]) -> dict[int, tuple[str, shamir.Share]]:
        """For each peer in ``U2`` (self included): ``("b", share)`` if it survived, else
        ``("s", share)``. Refused if asked twice, or if a survivor never shared its keys."""
        if self._unmasked:
            raise ProtocolViolation("shares were already revealed for this round")
        holders = [*self._neighbours, self.cid]
        t = threshold(len(holders), self.threshold_fraction)
        need = floor.min_survivors(t, self.insecure_demo)
        if len(survivors & set(holders)) < need:
            # Bonawitz et al.: with fewer survivors than the threshold, revealing shares of
            # the dropped could let the server unmask a survivor; the floor asks one more, so
            # an honest neighbour's pair mask still hides this client from t - 1 colluders.
            raise ProtocolViolation(
                f"only {len(survivors & set(holders))} of this client's holders survive, "
                f"{need} are needed"
            )
        self._unmasked = True
        out = {}
        for v in sorted(self._u2):
            s_share, b_share = self._received[v]
            out[v] = ("b", b_share) if v in survivors else ("s", s_share)
        return out
