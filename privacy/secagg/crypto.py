"""The cryptographic primitives of secure aggregation, all from ``cryptography``.

- Key agreement: X25519, the shared secret run through HKDF-SHA256 whose info is a label, the
  round and both public keys, so the share-encryption key and the mask seed of a pair are
  independent, and a key pair reused in another round or with another peer key gives
  unrelated keys.
- Masks: the AES-256-CTR keystream of a 32-byte seed, read as integers mod 2^k. Each round
  uses fresh keys, so a zero nonce never repeats under one key.
- Share transport: AES-256-GCM, with the round and the (sender, receiver) pair as associated
  data, so a ciphertext moved to another pair or round fails to decrypt.
"""

from __future__ import annotations

import os
import struct

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
_NONCE = bytes(16)


class TamperedError(ValueError):
    """A ciphertext or share failed authentication: it was altered or misrouted."""


def new_private_bytes() -> bytes:
    """A fresh X25519 private key as its raw 32 bytes (any 32 random bytes are one: X25519
    clamps the scalar when it is used)."""
    return os.urandom(KEY_BYTES)


def load_private(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def public_key(private: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of a private key."""
    return private.public_key().public_bytes(*_RAW)


def check_public_key(raw: object) -> None:
    """:class:`TamperedError` unless ``raw`` is a usable X25519 public key: 32 bytes, and not
    a low-order point (whose shared secret is all zeros whatever the private key)."""
    if not isinstance(raw, bytes) or len(raw) != KEY_BYTES:
        raise TamperedError(f"a public key is {KEY_BYTES} bytes")
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError as err:
        raise TamperedError(f"invalid public key: {err}") from None


def pair_info(label: bytes, round_id: int, key_a: bytes, key_b: bytes) -> bytes:
    """The HKDF info of a pair key: the label, the round and both public keys (in byte
    order, so both ends write the same)."""
    low, high = sorted((key_a, key_b))
    return label + struct.pack(">Q", round_id) + low + high


def agree(
    private: X25519PrivateKey, own_public: bytes, peer_public: bytes, label: bytes, round_id: int
) -> bytes:
    """A 32-byte key both ends derive alike: HKDF-SHA256 of the X25519 shared secret, bound
    to the round and to both public keys (:func:`pair_info`)."""
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as err:
        raise TamperedError(f"invalid public key: {err}") from None
    info = pair_info(label, round_id, own_public, peer_public)
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


class MaskExpander:
    """Expands 32-byte seeds into masks of ``length`` integers mod 2^k: the AES-256-CTR
    keystream (the encryption of zeros) written straight into one reused buffer."""

    def __init__(self, length: int, dtype: type[np.unsignedinteger]) -> None:
        size = length * np.dtype(dtype).itemsize
        self._zeros = bytes(size)
        self._out = bytearray(size + 15)  # update_into needs a block of slack
        self._view = np.frombuffer(self._out, dtype=dtype, count=length)
        self._view.flags.writeable = False

    def __call__(self, seed: bytes) -> np.ndarray:
        """The mask of ``seed``; a read-only view, overwritten by the next call."""
        Cipher(algorithms.AES(seed), modes.CTR(_NONCE)).encryptor().update_into(
            self._zeros, self._out
        )
        return self._view


def digest(data: bytes) -> bytes:
    """SHA-256 of ``data``: a commitment to a secret."""
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize()


def encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """AES-256-GCM: a random 12-byte nonce followed by the ciphertext and tag."""
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def decrypt(key: bytes, blob: bytes, associated: bytes) -> bytes:
    """The plaintext of :func:`encrypt`'s output; :class:`TamperedError` if it was altered."""
    if len(blob) < 12 + 16:
        raise TamperedError("ciphertext too short")
    try:
        return AESGCM(key).decrypt(blob[:12], blob[12:], associated)
    except InvalidTag:
        raise TamperedError("ciphertext failed authentication") from None
