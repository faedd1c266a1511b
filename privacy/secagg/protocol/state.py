"""A client's state between the messages of a round, as bytes (a ClientApp keeps it in its
Context between calls)."""

from __future__ import annotations

import struct

import numpy as np

from privacy.secagg import crypto, shamir
from privacy.secagg.protocol.client import SecAggClient
from privacy.secagg.protocol.common import PublicKeys
from privacy.secagg.quantize import FixedPoint

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
