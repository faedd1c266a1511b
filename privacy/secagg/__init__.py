"""Secure aggregation (Bonawitz et al. 2017, with the SecAgg+ graph of Bell et al. 2020).

The server learns the sum of the cohort's quantized updates and nothing else: each client
adds pairwise masks that cancel in the sum and a self mask the server removes only for
clients whose masked input it received. Pure parts: :mod:`quantize` (fixed point and the
modulus), :mod:`shamir` (t-of-n sharing), :mod:`crypto` (X25519, HKDF, AES-CTR masks,
AES-GCM), :mod:`graph` (who pairs with whom), :mod:`floor` (the settings below which the
threat model fails), :mod:`protocol` (the client and server state machines).
:mod:`mod` and :mod:`aggregator` run the protocol over Flower messages.
"""
