"""What both sides share: the wire sizes, the errors, the public keys and the pair masks."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from privacy.secagg import crypto, shamir

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
