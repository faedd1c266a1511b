"""The protocol's state machines: sum under dropouts, privacy of the masked view, tampering."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.secagg import crypto
from privacy.secagg.protocol import (
    ProtocolViolation,
    SecAggAbort,
    SecAggClient,
    SecAggServer,
    client_from_state,
    client_state,
)
from privacy.secagg.quantize import decode, encode, fixed_point


def run_round(
    xs,
    degree=None,
    drop_before_sharing=(),
    drop_before_masking=(),
    drop_before_unmask=(),
    threshold=0.5,
    tamper=None,
):
    """One round among clients 1..n with the given dropouts; the decoded sum and survivors."""
    n = len(xs)
    fp = fixed_point(n, 1.0, 16)
    ids = list(range(1, n + 1))
    server = SecAggServer(7, fp, threshold, degree, seed=3)
    clients = {i: SecAggClient(i, 7, fp, threshold) for i in ids}
    graph = server.collect_keys({i: clients[i].advertise() for i in ids})
    sent = {
        i: clients[i].share_keys(server.roster, graph[i])
        for i in ids
        if i not in drop_before_sharing
    }
    inbox = server.route_shares(sent)
    if tamper == "ciphertext":
        receiver = next(v for v, box in inbox.items() if box)
        sender = next(iter(inbox[receiver]))
        blob = bytearray(inbox[receiver][sender])
        blob[-1] ^= 1
        inbox[receiver][sender] = bytes(blob)
    rng = np.random.default_rng(0)
    masked = {
        i: clients[i].masked_input(encode(xs[i - 1], fp, rng), inbox[i])
        for i in sent
        if i not in drop_before_masking
    }
    survivors = server.collect_masked(masked)
    revealed = {i: clients[i].unmask(survivors) for i in survivors if i not in drop_before_unmask}
    if tamper == "share":
        holder = next(iter(revealed))
        owner, (kind, share) = next(iter(revealed[holder].items()))
        revealed[holder][owner] = (kind, (share + 1) % 2**31)
    return decode(server.unmask(revealed), fp), survivors, fp


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(3, 12),
    length=st.integers(1, 30),
    sparse=st.booleans(),
    data=st.data(),
)
def test_masked_sum_equals_the_plain_sum_of_the_survivors(n, length, sparse, data):
    xs = np.random.default_rng(n * length).uniform(-1, 1, (n, length))
    ids = list(range(1, n + 1))
    fate = data.draw(
        st.lists(st.sampled_from(["ok", "share", "mask", "unmask"]), min_size=n, max_size=n)
    )
    drops = {
        k: {i for i, f in zip(ids, fate, strict=True) if f == k}
        for k in ("share", "mask", "unmask")
    }
    try:
        total, survivors, fp = run_round(
            xs, 4 if sparse else None, drops["share"], drops["mask"], drops["unmask"]
        )
    except (SecAggAbort, ProtocolViolation):
        return  # too many dropouts: the round aborts (checked below), never a wrong sum
    assert survivors == {i for i in ids if fate[i - 1] in ("ok", "unmask")}
    plain = sum(xs[i - 1] for i in survivors)
    assert np.abs(total - plain).max() <= fp.error_bound(len(survivors))


def test_sparse_graph_dropout_after_sharing_is_recovered():
    """Degree 6: t = 4 of 7 holders and unmasking needs t + 1 = 5, so two dropouts next to
    one client are still recovered."""
    xs = np.random.default_rng(1).uniform(-1, 1, (10, 50))
    total, survivors, fp = run_round(xs, degree=6, drop_before_masking={2, 9})
    assert survivors == set(range(1, 11)) - {2, 9}
    assert np.abs(total - sum(xs[i - 1] for i in survivors)).max() <= fp.error_bound(8)


def test_too_many_dropouts_abort_the_round():
    xs = np.zeros((6, 4))
    with pytest.raises(SecAggAbort, match="cannot unmask"):
        run_round(xs, drop_before_unmask={1, 2, 3, 4})


def keys_shared(fp):
    """Three clients after key advertisement and share distribution: (server, clients, inbox)."""
    server = SecAggServer(1, fp, 0.5, None, 0)
    clients = {i: SecAggClient(i, 1, fp, 0.5) for i in (1, 2, 3)}
    graph = server.collect_keys({i: c.advertise() for i, c in clients.items()})
    inbox = server.route_shares(
        {i: c.share_keys(server.roster, graph[i]) for i, c in clients.items()}
    )
    return server, clients, inbox


def test_a_client_never_reveals_both_shares_of_a_peer():
    fp = fixed_point(3, 1.0, 8)
    _, clients, inbox = keys_shared(fp)
    for i, c in clients.items():
        c.masked_input(np.zeros(2, fp.dtype), inbox[i])
    first = clients[1].unmask({1, 2, 3})
    assert {kind for kind, _ in first.values()} == {"b"}
    with pytest.raises(ProtocolViolation, match="already revealed"):
        clients[1].unmask({1, 2})  # a second request could get the s-share of 3 as well


def test_server_view_of_a_client_is_independent_of_its_input():
    """The masked input looks uniform mod 2^32 whether the input is all zeros or all at the
    bound: its top byte fills 256 bins evenly in both cases."""
    fp = fixed_point(3, 1.0, 16)
    for value in (0.0, 1.0):
        _, clients, inbox = keys_shared(fp)
        x = encode(np.full(51_200, value), fp, np.random.default_rng(0))
        y = clients[1].masked_input(x, inbox[1])
        counts = np.bincount((y >> 24).astype(np.int64), minlength=256)
        chi2 = ((counts - 200) ** 2 / 200).sum()
        assert chi2 < 350  # 255 degrees of freedom: p < 1e-4 beyond this


def test_tampered_ciphertext_is_rejected():
    with pytest.raises(crypto.TamperedError):
        run_round(np.zeros((4, 3)), tamper="ciphertext")


def test_tampered_share_aborts_instead_of_unmasking_garbage():
    with pytest.raises(SecAggAbort, match="do not match its commitment"):
        run_round(np.zeros((4, 3)), tamper="share")


def test_client_state_survives_a_round_trip_through_bytes_at_every_stage():
    """A deployed client saves its state after each stage and may restore it in a fresh
    process: the round completes through the saved state, and a restored client that already
    revealed its shares still refuses to reveal again."""
    fp = fixed_point(3, 1.0, 8)
    server, clients, inbox = keys_shared(fp)

    def restore(client):
        state = client_state(client)
        assert isinstance(state, bytes)
        return client_from_state(state)

    restored = {i: restore(c) for i, c in clients.items()}
    masked = {i: c.masked_input(np.full(4, i, fp.dtype), inbox[i]) for i, c in restored.items()}
    restored = {i: restore(c) for i, c in restored.items()}
    survivors = server.collect_masked(masked)
    total = server.unmask({i: restored[i].unmask(survivors) for i in survivors})
    np.testing.assert_array_equal(total, np.full(4, 6, fp.dtype))
    with pytest.raises(ProtocolViolation, match="already revealed"):
        restore(restored[1]).unmask(survivors)


@pytest.mark.parametrize("cut", [1, 10, 200, -1])
def test_a_damaged_client_state_is_refused(cut):
    _, clients, _ = keys_shared(fixed_point(3, 1.0, 8))
    state = client_state(clients[1])
    with pytest.raises(ValueError, match="malformed secure-aggregation client state"):
        client_from_state(state[:cut])
