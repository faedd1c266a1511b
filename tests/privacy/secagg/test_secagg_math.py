"""Fixed-point encoding, the modulus, and Shamir sharing against direct computation."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.secagg import shamir
from privacy.secagg.quantize import (
    OverflowConfigError,
    decode,
    encode,
    fixed_point,
    modulus_bits,
)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 30),
    length=st.integers(1, 40),
    frac_bits=st.integers(4, 24),
    seed=st.integers(0, 2**32 - 1),
)
def test_decoded_sum_is_within_the_quantization_bound(n, length, frac_bits, seed):
    fp = fixed_point(n, 1.0, frac_bits)
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-1, 1, (n, length))
    total = np.zeros(length, fp.dtype)
    for x in xs:
        total += encode(x, fp, rng)
    err = np.abs(decode(total, fp) - xs.sum(axis=0))
    assert err.max() <= fp.error_bound(n)


def test_stochastic_rounding_is_unbiased():
    fp = fixed_point(1, 1.0, 2)  # resolution 0.25: 0.1 rounds to 0 or 0.25
    x = np.full(200_000, 0.1)
    decoded = decode(encode(x, fp, np.random.default_rng(0)), fp)
    assert set(np.unique(decoded)) == {0.0, 0.25}
    assert decoded.mean() == pytest.approx(0.1, abs=2e-3)


def test_values_outside_the_bound_are_clipped():
    fp = fixed_point(1, 0.5, 8)
    decoded = decode(encode(np.array([-3.0, 3.0]), fp, np.random.default_rng(0)), fp)
    np.testing.assert_allclose(decoded, [-0.5, 0.5])


def test_modulus_grows_with_the_cohort_and_refuses_overflow():
    assert modulus_bits(100, 1.0, 16) == 32
    assert modulus_bits(100_000, 1.0, 16) == 64
    with pytest.raises(OverflowConfigError, match=r"1000 clients x \(bound 1e\+06 x 2\^40"):
        modulus_bits(1000, 1e6, 40)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), data=st.data())
def test_any_threshold_shares_reconstruct_the_secret(n, data):
    t = data.draw(st.integers(1, n))
    secret = os.urandom(32)
    shares = shamir.share(secret, t, list(range(1, n + 1)))
    chosen = data.draw(
        st.lists(st.sampled_from(sorted(shares)), min_size=t, max_size=t, unique=True)
    )
    assert shamir.reconstruct({x: shares[x] for x in chosen}, t) == secret


def test_fewer_shares_than_the_threshold_are_refused():
    shares = shamir.share(os.urandom(32), 3, [1, 2, 3, 4])
    with pytest.raises(ValueError, match="cannot reconstruct"):
        shamir.reconstruct({1: shares[1], 2: shares[2]}, 3)


def test_threshold_minus_one_shares_are_uniform_whatever_the_secret():
    """With t - 1 shares, every secret is equally likely: the first limb of a share at one
    point spreads over the field the same way for two very different secrets."""
    for secret in (bytes(32), b"\xff" * 32):
        firsts = np.array([shamir.share(secret, 2, [1, 2])[1][0] for _ in range(4000)])
        counts = np.histogram(firsts, bins=8, range=(0, shamir.PRIME))[0]
        assert counts.min() > 400  # expected 500 per bin


def test_share_bytes_round_trip_and_reject_out_of_field_values():
    s = shamir.share(os.urandom(32), 2, [1, 2])[1]
    np.testing.assert_array_equal(shamir.from_bytes(shamir.to_bytes(s)), s)
    with pytest.raises(ValueError, match="outside the field"):
        shamir.from_bytes(b"\xff" * shamir.SHARE_BYTES)


class _Source:
    """Stands in for ``os`` in :mod:`shamir`: ``urandom`` returns the queued byte strings."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    def urandom(self, size: int) -> bytes:
        chunk = self.chunks.pop(0)
        return (chunk * (size // len(chunk) + 1))[:size]


def test_shamir_coefficients_at_or_above_p_are_redrawn_not_reduced(monkeypatch):
    """All-ones random words are 2^31 - 1 = p once cut to 31 bits (and 3 mod p as 64 bits): a
    reduction would map them into the field, biasing it; rejection sampling draws again."""
    monkeypatch.setattr(shamir, "os", _Source(b"\xff" * 8, (5).to_bytes(4, "little")))
    np.testing.assert_array_equal(shamir._random_field((2, 3)), np.full((2, 3), 5))


_WORDS = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([2**31 - 1, 2**32 - 1, 0, 2**31]))


@settings(max_examples=60, deadline=None)
@given(words=st.lists(_WORDS, min_size=1, max_size=40), count=st.integers(1, 6))
def test_shamir_coefficients_are_the_random_words_below_p_in_order(words, count):
    """Against a brute-force reference: the field elements are exactly the 31-bit random words
    that are below p, in the order drawn (uniform on GF(p) when the words are)."""
    words = words + [1] * count  # enough acceptable words to finish
    stream = b"".join(w.to_bytes(4, "little") for w in words)
    reference = [w & (2**31 - 1) for w in words if w & (2**31 - 1) < shamir.PRIME][:count]

    class Stream:
        at = 0

        def urandom(self, size):
            out = stream[self.at : self.at + size]
            self.at += size
            return out.ljust(size, b"\x01")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(shamir, "os", Stream())
        assert shamir._random_field((count,)).tolist() == reference


def test_an_encoding_beyond_float64_precision_is_refused():
    """bound x 2^f above 2^52: float64's spacing reaches 1 and the stochastic-rounding dither
    is rounded away, so encoding would be biased; exactly 2^52 is still allowed."""
    assert modulus_bits(1, 2.0**12, 40) == 64  # 2^52
    with pytest.raises(ValueError, match="2\\^52"):
        modulus_bits(1, 2.0**12 + 1, 40)
    from privacy.secagg.quantize import FixedPoint

    with pytest.raises(ValueError, match="2\\^52"):
        FixedPoint(2.0**13, 40, 64)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_input_is_refused_not_encoded_as_garbage(bad):
    """NaN has no fixed-point value: cast to an integer it becomes an arbitrary residue that
    the sum would carry silently into the model. Infinity is refused too: clipping it to the
    bound would hide a diverged client behind a plausible update."""
    fp = fixed_point(3, 1.0, 16)
    x = np.zeros(5)
    x[2] = bad
    with pytest.raises(ValueError, match="1 of 5 entries are not finite"):
        encode(x, fp, np.random.default_rng(0))
