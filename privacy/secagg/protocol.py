"""The secure aggregation protocol as two state machines, free of any transport.

Bonawitz et al. 2017 ("Practical Secure Aggregation for Privacy-Preserving Machine Learning"),
honest-but-curious variant, with an optional sparse graph (SecAgg+, Bell et al. 2020):

1. ``advertise``: each client makes two X25519 key pairs, ``c`` (share encryption) and ``s``
   (pairwise masks), and sends the public halves. The server fixes the roster ``U1`` and the
   neighbour graph.
2. ``share_keys``: each client Shamir-shares its mask key ``s_sk`` and a fresh self-mask seed
   ``b`` among its neighbours and itself (t of them reconstruct), encrypts each neighbour's
   pair of shares under the pair's ``c`` key, and the server relays the ciphertexts. ``U2``:
   the clients whose shares went out.
3. ``masked_input``: each client sends ``y = x + PRG(b) + sum_v +-PRG(s_uv) mod 2^k`` over its
   neighbours in ``U2``. ``U3``: the clients whose ``y`` arrived.
4. ``unmask``: each survivor reveals, for each neighbour, the share of ``b`` if that neighbour
   is in ``U3`` and the share of ``s_sk`` if it dropped after step 2, never both for one peer.
   The server removes the self masks of ``U3`` and the pair masks of the dropped, and is left
   with ``sum(x)`` over ``U3``.

Fewer than a client's threshold of shares anywhere aborts the round with
:class:`SecAggAbort`: no sum is better than a wrong one. So does a round below the security
floor of :mod:`privacy.secagg.floor` (cohort, threshold, surviving neighbours), unless the
round is an insecure demo. A client whose message is malformed (a public key that is not a
distinct X25519 key, a ciphertext or masked input of the wrong size) is dropped from the round
as if it had gone silent, the way Bonawitz et al.'s server ignores what does not follow the
protocol: its honest neighbours' sum is still recovered. The server's ``dropped`` says why.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from privacy.secagg import crypto, floor, graph, shamir
from privacy.secagg.floor import threshold
from privacy.secagg.quantize import FixedPoint

_SHARE = struct.Struct(
    f">II{shamir.SHARE_BYTES}s{shamir.SHARE_BYTES}s"
)  # sender, receiver, share of s_sk, share of b
_MASK, _CHANNEL = b"fedcore secagg mask", b"fedcore secagg channel"
_NONCE_TAG = 12 + 16  # AES-GCM's nonce and tag around each encrypted pair of shares
CIPHERTEXT_BYTES = _NONCE_TAG + _SHARE.size


class SecAggAbort(RuntimeError):
    """The round cannot be completed safely (too few clients or shares); nothing is released."""


class ProtocolViolation(ValueError):
    """A request a client must refuse (it would reveal more than the protocol allows)."""


class MalformedInput(ValueError):
    """A client's message the server cannot use (a public key of the wrong length, a low-order
    or duplicate key, a ciphertext or masked input of the wrong size): the client is dropped."""


@dataclass(frozen=True)
class PublicKeys:
    """What a client advertises: two public keys and a commitment to its self-mask seed,
    against which the server checks every reconstructed secret."""

    channel: bytes  # c_pk: share encryption
    mask: bytes  # s_pk: pairwise masks
    seed_hash: bytes  # SHA-256 of the self-mask seed b


def check_public_keys(keys: object) -> PublicKeys:
    """``keys`` if it is a :class:`PublicKeys` of two usable X25519 keys and a 32-byte seed
    commitment; :class:`MalformedInput` naming what is wrong otherwise."""
    if not isinstance(keys, PublicKeys):
        raise MalformedInput(f"expected public keys, got {type(keys).__name__}")
    try:
        crypto.check_public_key(keys.channel)
        crypto.check_public_key(keys.mask)
    except crypto.TamperedError as err:
        raise MalformedInput(str(err)) from None
    if not isinstance(keys.seed_hash, bytes) or len(keys.seed_hash) != crypto.KEY_BYTES:
        raise MalformedInput(f"a seed commitment is {crypto.KEY_BYTES} bytes")
    return keys


def _associated(round_id: int, sender: int, receiver: int) -> bytes:
    return struct.pack(">QII", round_id, sender, receiver)


def _apply_pair_mask(
    y: np.ndarray, expand: crypto.MaskExpander, seed: bytes, own: int, peer: int, sign: int = 1
) -> None:
    """Apply in place the pair mask as ``own`` does (added by the smaller id of the pair,
    subtracted by the other), or undo it with ``sign = -1``."""
    if (own < peer) == (sign > 0):
        y += expand(seed)
    else:
        y -= expand(seed)


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
            need = floor.min_survivors(
                threshold(len(holders), self.threshold_fraction), self.insecure_demo
            )
            if len(holders & survivors) < need:
                raise SecAggAbort(
                    f"client {u}: only {len(holders & survivors)} of its {len(holders)} holders "
                    f"sent masked inputs; {need} are needed before its input is unmasked"
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
                    f"client {u}: {len(got)} of {t} needed shares arrived; cannot unmask"
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


_KEYS = struct.Struct("32s32s32s")  # channel, mask, seed hash
_HEADER = struct.Struct(">IIdIId??")  # cid, round, bound, frac-bits, bits, threshold,
# insecure demo, unmasked
_LENGTH = struct.Struct(">I")
_ID = np.dtype(">u4")


def _packed_keys(keys: PublicKeys) -> bytes:
    return _KEYS.pack(keys.channel, keys.mask, keys.seed_hash)


def _ids(values) -> bytes:
    return np.asarray(list(values), _ID).tobytes()


def _from_ids(data: bytes) -> list[int]:
    return np.frombuffer(data, _ID).tolist()


def _shares_bytes(shares: list[shamir.Share]) -> bytes:
    """Shares as :func:`shamir.to_bytes` writes them, concatenated, in one conversion."""
    if not shares:
        return b""
    return shamir.to_bytes(np.stack(shares))


def client_state(client: SecAggClient) -> bytes:
    """A client's state as one byte string, for a Flower ``ConfigRecord`` in the node's
    ``Context.state``: a deployed ClientApp may run each message in a fresh process. One
    length-prefixed field after another (ids as big-endian uint32, keys, shares and channel
    keys concatenated), so Flower checks one value instead of every id and key."""
    ids, received, channels = (
        sorted(client._roster),
        sorted(client._received),
        sorted(client._channels),
    )
    fp = client.fp
    fields = [
        _HEADER.pack(
            client.cid,
            client.round_id,
            fp.bound,
            fp.frac_bits,
            fp.bits,
            client.threshold_fraction,
            client.insecure_demo,
            client._unmasked,
        ),
        client._c_raw,
        client._s_raw,
        client._b,
        _packed_keys(client.advertise()),
        _ids(ids),
        b"".join(_packed_keys(client._roster[i]) for i in ids),
        _ids(client._neighbours),
        _ids(received),
        _shares_bytes([client._received[i][0] for i in received]),
        _shares_bytes([client._received[i][1] for i in received]),
        _ids(channels),
        b"".join(client._channels[i] for i in channels),
        _ids(sorted(client._u2)),
    ]
    return b"".join(_LENGTH.pack(len(f)) + f for f in fields)


def _fields(blob: bytes, count: int) -> list[bytes]:
    out, at = [], 0
    while at < len(blob):
        (size,) = _LENGTH.unpack_from(blob, at)
        out.append(blob[at + _LENGTH.size : at + _LENGTH.size + size])
        at += _LENGTH.size + size
    if len(out) != count or at != len(blob):
        raise ValueError(f"expected {count} fields")
    return out


def client_from_state(blob: bytes) -> SecAggClient:
    """The client :func:`client_state` saved; ValueError if ``blob`` is not such a state."""
    try:
        fields = _fields(bytes(blob), 14)  # in client_state's order
        header, c_sk, s_sk, b, public = fields[:5]
        roster_ids, roster_keys, neighbours = fields[5:8]
        received_ids, received_s, received_b = fields[8:11]
        channel_ids, channel_keys, u2 = fields[11:]
        cid, round_id, bound, frac_bits, bits, fraction, insecure, unmasked = _HEADER.unpack(header)
        ids = _from_ids(received_ids)
        client = SecAggClient(
            cid,
            round_id,
            FixedPoint(bound, frac_bits, bits),
            fraction,
            insecure,
            _c_raw=c_sk,
            _s_raw=s_sk,
            _b=b,
            _public=PublicKeys(*_KEYS.unpack(public)),
        )
        keys = _KEYS.iter_unpack(roster_keys)
        client._roster = {
            i: PublicKeys(*k) for i, k in zip(_from_ids(roster_ids), keys, strict=True)
        }
        s_shares = shamir.many_from_bytes(received_s, len(ids))
        b_shares = shamir.many_from_bytes(received_b, len(ids))
        channels = _from_ids(channel_ids)
        if len(channel_keys) != crypto.KEY_BYTES * len(channels):
            raise ValueError("channel keys do not match their ids")
        if {len(c_sk), len(s_sk), len(b)} != {crypto.KEY_BYTES}:
            raise ValueError("a private key or seed is not 32 bytes")
        client._neighbours = _from_ids(neighbours)
        client._u2 = set(_from_ids(u2))
    except (struct.error, ValueError) as err:
        raise ValueError(f"malformed secure-aggregation client state: {err}") from None
    client._received = {i: (s_shares[k], b_shares[k]) for k, i in enumerate(ids)}
    key = crypto.KEY_BYTES
    client._channels = {i: channel_keys[key * k : key * (k + 1)] for k, i in enumerate(channels)}
    client._unmasked = unmasked
    return client


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
