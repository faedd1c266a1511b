"""Fuzzing the second boundary under secure aggregation: forged protocol messages (issue 17).

Six clients run one round of the protocol's state machines (``SecAggClient``,
``SecAggServer``); client 3 forges its message at one stage: its public keys (malformed,
duplicated from another client, not keys at all), its ciphertexts (wrong addressees, sizes,
types), its masked input (wrong dtype, shape, type) or its unmasking reply (shares of clients
it does not hold, wrong kinds, shapes, dtypes, values). An honest client that receives
something it must refuse drops out, as it would. The invariant: the server drops the forger
with a reason or aborts the round (:class:`SecAggAbort`); it never raises anything else and
never releases a sum other than the exact sum of the inputs of the clients it kept.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privacy.secagg import crypto, shamir
from privacy.secagg.protocol import (
    ProtocolViolation,
    PublicKeys,
    SecAggAbort,
    SecAggClient,
    SecAggServer,
)
from privacy.secagg.protocol.common import CIPHERTEXT_BYTES
from privacy.secagg.quantize import decode, encode, fixed_point

MAX_EXAMPLES = 100
N, LENGTH, FORGER = 6, 5, 3
STAGES = ("keys", "shares", "masked", "unmask")
# what an honest client refuses to go on with: it drops out of the round
_REFUSED = (ProtocolViolation, crypto.TamperedError, ValueError)


def _junk() -> st.SearchStrategy:
    """Values of the wrong type for any protocol field."""
    return st.one_of(
        st.none(),
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.text(max_size=4),
        st.lists(st.integers(0, 9), max_size=3),
        st.binary(max_size=40),
    )


@st.composite
def forged_keys(draw, honest: PublicKeys, other: PublicKeys):
    kind = draw(st.sampled_from(["bytes", "junk-field", "copy", "not-keys", "seed"]))
    if kind == "bytes":
        return PublicKeys(draw(st.binary(max_size=40)), honest.mask, honest.seed_hash)
    if kind == "junk-field":
        return PublicKeys(honest.channel, draw(_junk()), honest.seed_hash)
    if kind == "copy":  # another client's key, or one of its own twice
        return draw(
            st.sampled_from(
                [
                    PublicKeys(other.channel, honest.mask, honest.seed_hash),
                    PublicKeys(honest.channel, other.mask, honest.seed_hash),
                    PublicKeys(honest.channel, honest.channel, honest.seed_hash),
                ]
            )
        )
    if kind == "seed":
        return PublicKeys(honest.channel, honest.mask, draw(st.binary(max_size=40)))
    return draw(_junk())


@st.composite
def forged_ciphertexts(draw, honest: dict[int, bytes]):
    kind = draw(st.sampled_from(["size", "addressee", "drop", "junk-value", "not-a-mapping"]))
    out = dict(honest)
    victim = draw(st.sampled_from(sorted(honest)))
    if kind == "size":
        size = draw(st.integers(0, 2 * CIPHERTEXT_BYTES).filter(lambda s: s != CIPHERTEXT_BYTES))
        out[victim] = bytes(size)
    elif kind == "addressee":
        out[draw(st.sampled_from([FORGER, 99, -1, "1"]))] = out[victim]
    elif kind == "drop":
        del out[victim]
    elif kind == "junk-value":
        out[victim] = draw(_junk().filter(lambda v: not isinstance(v, bytes)))
    else:
        return draw(_junk())
    return out


@st.composite
def forged_masked(draw, honest: np.ndarray):
    kind = draw(st.sampled_from(["dtype", "length", "rank", "junk"]))
    if kind == "dtype":
        dtype = draw(st.sampled_from([np.float64, np.int32, np.uint32, np.int64, np.uint8]))
        return honest.astype(dtype) if np.dtype(dtype) != honest.dtype else honest.astype(np.int8)
    if kind == "length":
        size = draw(st.integers(0, 3 * LENGTH).filter(lambda s: s != LENGTH))
        return np.zeros(size, honest.dtype)
    if kind == "rank":
        return np.tile(honest, (2, 1))
    return draw(_junk())


@st.composite
def forged_reveal(draw, honest: dict):
    kind = draw(st.sampled_from(["owner", "kind", "shape", "dtype", "value", "pair", "junk"]))
    out = dict(honest)
    owner = draw(st.sampled_from(sorted(honest)))
    tag, share = honest[owner]
    if kind == "owner":  # a share of a client it holds none of
        out[draw(st.sampled_from([99, -1, "x"]))] = (tag, share)
    elif kind == "kind":
        out[owner] = ({"b": "s", "s": "b"}.get(tag, "b") if draw(st.booleans()) else "z", share)
    elif kind == "shape":
        out[owner] = (tag, np.zeros(draw(st.integers(0, 2 * shamir.LIMBS)), np.uint64))
    elif kind == "dtype":
        junk = draw(st.sampled_from([np.full(shamir.LIMBS, "a"), np.full(shamir.LIMBS, -1.5)]))
        out[owner] = (tag, junk)
    elif kind == "value":  # right shape, wrong field elements: a tampered share
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        out[owner] = (tag, rng.integers(0, shamir.PRIME, shamir.LIMBS, dtype=np.uint64))
    elif kind == "pair":
        out[owner] = draw(_junk())
    else:
        return draw(_junk())
    return out


def play(stage: str, forge) -> None:
    """One round in which client :data:`FORGER` sends ``forge(honest message)`` at
    ``stage``; checks the invariant of the module docstring."""
    fp = fixed_point(N, 1.0, 16)
    xs = {i: np.random.default_rng(i).uniform(-1, 1, LENGTH) for i in range(1, N + 1)}
    server = SecAggServer(7, fp, 0.5, None, seed=3, input_length=LENGTH)
    clients = {i: SecAggClient(i, 7, fp, 0.5) for i in xs}
    try:
        keys = {i: c.advertise() for i, c in clients.items()}
        if stage == "keys":
            keys[FORGER] = forge(keys[FORGER], keys[1])
        graph = server.collect_keys(keys)
        sent = {}
        for i in graph:
            try:
                sent[i] = clients[i].share_keys(server.roster, graph[i])
            except _REFUSED:
                continue
        if stage == "shares" and FORGER in sent:
            sent[FORGER] = forge(sent[FORGER])
        inbox = server.route_shares(sent)
        rng = np.random.default_rng(0)
        masked = {}
        for i in inbox:
            try:
                masked[i] = clients[i].masked_input(encode(xs[i], fp, rng), inbox[i])
            except _REFUSED:
                continue
        if stage == "masked" and FORGER in masked:
            masked[FORGER] = forge(masked[FORGER])
        survivors = server.collect_masked(masked)
        revealed = {}
        for i in survivors:
            try:
                revealed[i] = clients[i].unmask(survivors)
            except _REFUSED:
                continue
        if stage == "unmask" and FORGER in revealed:
            revealed[FORGER] = forge(revealed[FORGER])
        total = server.unmask(revealed)
    except SecAggAbort:
        return
    if stage != "unmask":  # the forger is dropped, or never got past the stage
        assert FORGER not in server.u3 or stage == "keys", server.dropped
    plain = sum(xs[i] for i in server.u3)
    assert np.abs(decode(total, fp) - plain).max() <= len(server.u3) / 2**16


FORGERIES = {
    "keys": forged_keys,
    "shares": forged_ciphertexts,
    "masked": forged_masked,
    "unmask": forged_reveal,
}


def check_secagg(data: st.DataObject) -> None:
    """Draw a stage, play a round in which the forger's message at that stage is drawn
    from the honest one (which exists only mid-round, hence ``data``)."""
    stage = data.draw(st.sampled_from(STAGES), label="stage")
    play(stage, lambda *honest: data.draw(FORGERIES[stage](*honest), label="forged"))


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.data())
def test_a_forged_protocol_message_is_dropped_or_aborts_never_a_wrong_sum(data):
    check_secagg(data)


# --- what fuzzing found ---------------------------------------------------------------------


def test_ciphertexts_or_shares_not_keyed_by_client_drop_the_sender_not_crash_the_server():
    """The state machine raised TypeError (``set(None)``) and AttributeError (``.items()``)
    on them; the Flower service parses messages first, so only a direct caller met it."""
    for stage, forged in (("shares", None), ("unmask", [1, 2])):
        fp = fixed_point(N, 1.0, 16)
        server = SecAggServer(7, fp, 0.5, None, seed=3, input_length=LENGTH)
        clients = {i: SecAggClient(i, 7, fp, 0.5) for i in range(1, N + 1)}
        graph = server.collect_keys({i: c.advertise() for i, c in clients.items()})
        sent = {i: clients[i].share_keys(server.roster, graph[i]) for i in graph}
        if stage == "shares":
            sent[FORGER] = forged
            server.route_shares(sent)
            assert "not keyed" in server.dropped[FORGER]
            continue
        inbox = server.route_shares(sent)
        rng = np.random.default_rng(0)
        masked = {
            i: clients[i].masked_input(encode(np.zeros(LENGTH), fp, rng), inbox[i]) for i in inbox
        }
        survivors = server.collect_masked(masked)
        revealed = {i: clients[i].unmask(survivors) for i in survivors}
        revealed[FORGER] = forged
        assert np.abs(decode(server.unmask(revealed), fp)).max() <= N / 2**16
        assert "not keyed" in server.dropped[FORGER]
