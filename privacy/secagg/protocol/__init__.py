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

from privacy.secagg.floor import threshold
from privacy.secagg.protocol.client import SecAggClient
from privacy.secagg.protocol.common import (
    CIPHERTEXT_BYTES,
    MalformedInput,
    ProtocolViolation,
    PublicKeys,
    SecAggAbort,
    check_public_keys,
)
from privacy.secagg.protocol.driver import secure_sum
from privacy.secagg.protocol.server import SecAggServer
from privacy.secagg.protocol.state import client_from_state, client_state

__all__ = [
    "CIPHERTEXT_BYTES",
    "MalformedInput",
    "ProtocolViolation",
    "PublicKeys",
    "SecAggAbort",
    "SecAggClient",
    "SecAggServer",
    "check_public_keys",
    "client_from_state",
    "client_state",
    "secure_sum",
    "threshold",
]
