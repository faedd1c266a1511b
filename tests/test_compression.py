"""Compressors of a wire vector against brute-force references, and their decoding of
malformed messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedcore.compression import (
    HEADER,
    Compressed,
    CompressionError,
    decode,
    from_arrays,
    qsgd,
    randk,
    sign,
    stochastic_round,
    to_arrays,
    topk,
    with_error_feedback,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

vectors = arrays(
    np.float64,
    st.integers(0, 80),
    elements=st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False, width=64),
)
nonempty = arrays(
    np.float64,
    st.integers(1, 80),
    elements=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False, width=64),
)
fractions = st.floats(0.01, 1.0)
blocks = st.integers(0, 20)


@st.composite
def compressed(draw, vector=vectors):
    """A compressed vector of any method with random parameters."""
    v = draw(vector)
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    method = draw(st.sampled_from(["qsgd", "topk", "randk", "sign"]))
    if method == "qsgd":
        return qsgd(v, draw(st.integers(1, 16)), draw(blocks), rng)
    if method == "topk":
        return topk(v, draw(fractions))
    if method == "randk":
        return randk(v, draw(fractions), rng)
    return sign(v, draw(blocks))


def _block_ranges(size: int, block: int) -> list[range]:
    """Each block's entries, by a plain loop (the reference for the vectorized scales)."""
    width = block or max(size, 1)
    return [range(start, min(start + width, size)) for start in range(0, size, width)]


def _k(size: int, fraction: float) -> int:
    return min(size, max(1, math.ceil(fraction * size)))


# --- round trips -------------------------------------------------------------------------


@FAST
@given(compressed())
def test_wire_form_round_trips(c):
    back = from_arrays(to_arrays(c), size=c.size)
    assert (back.method, back.size, back.bits, back.block) == (c.method, c.size, c.bits, c.block)
    np.testing.assert_array_equal(decode(back), decode(c))
    assert decode(c).dtype == np.float64 and decode(c).shape == (c.size,)


def test_from_arrays_refuses_a_size_other_than_the_expected_one():
    wire = to_arrays(topk(np.arange(10.0), 0.2))
    with pytest.raises(CompressionError, match="expected 11"):
        from_arrays(wire, size=11)


# --- exactness ---------------------------------------------------------------------------


@FAST
@given(nonempty, fractions)
def test_topk_keeps_exactly_the_k_largest_magnitudes(v, fraction):
    c = topk(v, fraction)
    k = _k(v.size, fraction)
    kept = c.arrays["indices"].astype(np.int64)
    assert kept.size == k and np.unique(kept).size == k
    assert c.arrays["indices"].dtype == np.uint16
    np.testing.assert_array_equal(np.sort(np.abs(v[kept])), np.sort(np.abs(v))[v.size - k :])
    decoded = decode(c)
    np.testing.assert_array_equal(decoded[kept], v[kept].astype(np.float32))
    assert np.count_nonzero(np.delete(decoded, kept)) == 0


@FAST
@given(nonempty, fractions, st.integers(0, 2**32))
def test_randk_keeps_k_distinct_entries_exactly(v, fraction, seed):
    c = randk(v, fraction, np.random.default_rng(seed))
    kept = c.arrays["indices"].astype(np.int64)
    assert kept.size == _k(v.size, fraction) and np.unique(kept).size == kept.size
    decoded = decode(c)
    np.testing.assert_array_equal(decoded[kept], v[kept].astype(np.float32))
    assert np.count_nonzero(np.delete(decoded, kept)) == 0


def test_randk_draws_every_entry_alike():
    rng = np.random.default_rng(7)
    counts = np.zeros(10)
    for _ in range(2000):
        counts[randk(np.ones(10), 0.2, rng).arrays["indices"]] += 1
    # each entry is kept with probability 0.2: 400 +- 4 standard deviations (17.9)
    assert np.abs(counts - 400).max() < 4 * math.sqrt(2000 * 0.2 * 0.8)


@FAST
@given(nonempty, blocks)
def test_sign_decodes_signs_and_block_mean_magnitudes(v, block):
    decoded = decode(sign(v, block))
    for entries in _block_ranges(v.size, block):
        scale = np.float32(sum(abs(v[i]) for i in entries) / len(entries))
        for i in entries:
            assert decoded[i] == (scale if v[i] >= 0 else -scale)


@FAST
@given(nonempty, st.integers(1, 16), blocks, st.integers(0, 2**32))
def test_qsgd_decodes_onto_its_block_grid_within_one_level(v, bits, block, seed):
    c = qsgd(v, bits, block, np.random.default_rng(seed))
    decoded = decode(c)
    scales = c.arrays["scales"]
    for b, entries in enumerate(_block_ranges(v.size, block)):
        top = max(abs(v[i]) for i in entries)
        s = float(scales[b])
        assert s >= top and (s == 0 or np.nextafter(scales[b], np.float32(0)) < top)
        for i in entries:
            if bits == 1:
                assert decoded[i] in (s, -s)
                continue
            levels = 2 ** (bits - 1) - 1
            level = decoded[i] * levels / s if s else 0.0
            assert abs(level - round(level)) < 1e-6 and abs(round(level)) <= levels
            assert abs(decoded[i] - v[i]) <= s / levels * (1 + 1e-9)


@FAST
@given(nonempty, st.integers(0, 2**32))
def test_qsgd_at_16_bits_is_nearly_exact(v, seed):
    decoded = decode(qsgd(v, 16, 0, np.random.default_rng(seed)))
    # the float32 scale: max |v| rounded up (an absolute 2^-149 below float32's normals)
    scale = np.abs(v).max() * (1 + 2.0**-23) + 2.0**-149
    assert np.abs(decoded - v).max() <= scale / 32767


@pytest.mark.parametrize("block", [0, 3])
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_qsgd_is_unbiased(bits, block):
    v = np.array([0.9, -0.35, 0.02, 0.0, -1.0, 0.61, 0.3, -0.07, 0.5, -0.11])
    rng, draws = np.random.default_rng(bits * 10 + block), 3000
    mean = sum(decode(qsgd(v, bits, block, rng)) for _ in range(draws)) / draws
    blocks_of_v = [np.abs(v[list(r)]) for r in _block_ranges(v.size, block)]
    s = np.concatenate([np.full(b.size, b.max()) for b in blocks_of_v])
    # the variance of one entry: at most s^2 (1 bit: s^2 - v^2), s^2 / (4 L^2) otherwise
    sd = s if bits == 1 else s / (2 * (2 ** (bits - 1) - 1))
    standard_error = sd / math.sqrt(draws)
    assert (np.abs(mean - v) <= 4 * standard_error + 1e-12).all(), (mean - v) / standard_error


def test_stochastic_round_is_unbiased_and_within_one():
    x = np.array([-2.75, -0.5, 0.0, 0.1, 3.0, 7.9])
    rng, draws = np.random.default_rng(3), 4000
    rounded = np.stack([stochastic_round(x, rng) for _ in range(draws)])
    assert rounded.dtype == np.int64
    assert ((rounded == np.floor(x)) | (rounded == np.floor(x) + 1)).all()
    assert (rounded[:, [2, 4]] == x[[2, 4]]).all()
    assert (np.abs(rounded.mean(axis=0) - x) <= 4 * 0.5 / math.sqrt(draws)).all()


@pytest.mark.parametrize("x", [np.array([np.nan]), np.array([1e19]), np.array([-np.inf])])
def test_stochastic_round_refuses_what_int64_cannot_hold(x):
    with pytest.raises(CompressionError):
        stochastic_round(x, np.random.default_rng(0))


# --- error feedback ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "compress",
    [
        lambda v, rng: topk(v, 0.1),
        lambda v, rng: randk(v, 0.1, rng),
        lambda v, rng: sign(v, 7),
        lambda v, rng: qsgd(v, 2, 0, rng),
    ],
    ids=["topk", "randk", "sign", "qsgd"],
)
def test_error_feedback_loses_nothing_over_the_steps(compress):
    rng = np.random.default_rng(11)
    inputs = rng.normal(size=(30, 50))
    residual, sent = None, np.zeros(50)
    for vector in inputs:
        c, residual = with_error_feedback(vector, residual, lambda u: compress(u, rng))
        sent += decode(c)
    np.testing.assert_allclose(sent + residual, inputs.sum(axis=0), rtol=0, atol=1e-9)
    # and the residual stays bounded: what is left out is sent later
    assert np.abs(residual).max() < 30


def test_error_feedback_refuses_a_residual_of_another_length():
    with pytest.raises(CompressionError, match="residual"):
        with_error_feedback(np.ones(5), np.zeros(4), lambda u: topk(u, 0.5))


# --- bytes on the wire -------------------------------------------------------------------


@pytest.mark.parametrize("size", [1000, 1001])
@pytest.mark.parametrize("block", [0, 64])
@pytest.mark.parametrize("bits", range(1, 17))
def test_qsgd_costs_its_bits_per_entry_plus_the_scales(bits, block, size):
    c = qsgd(np.linspace(-1, 1, size), bits, block, np.random.default_rng(0))
    stored = bits if bits <= 4 else 8 if bits <= 8 else 16
    scales = 4 * (1 if block == 0 else math.ceil(size / block))
    assert c.nbytes() == math.ceil(size * stored / 8) + scales
    if bits in (1, 2, 4, 8, 16):
        assert c.nbytes() <= size * bits / 8 + 1 + scales


@pytest.mark.parametrize(("size", "index_bytes"), [(65536, 2), (65537, 4)])
def test_topk_costs_k_values_and_indices(size, index_bytes):
    c = topk(np.arange(size, dtype=np.float64), 0.001)
    assert c.nbytes() == math.ceil(0.001 * size) * (4 + index_bytes)


def test_sign_costs_one_bit_per_entry_plus_the_scales():
    assert sign(np.ones(1000), 100).nbytes() == 125 + 4 * 10


# --- malformed input ---------------------------------------------------------------------


def _mutations(wire: dict[str, np.ndarray], method: str) -> list[dict[str, np.ndarray]]:
    """Ways of breaking a valid message, each of which decode must refuse."""
    names = [k for k in wire if k != HEADER]
    out = []
    for name in names:
        a = wire[name]
        out.append({k: v for k, v in wire.items() if k != name})  # missing
        out.append(wire | {name: a.astype(np.float64 if a.dtype != np.float64 else np.int32)})
        out.append(wire | {name: np.concatenate([a, a[:1]]) if a.size else np.zeros(1, a.dtype)})
        out.append(wire | {name: a.reshape(1, -1)})
        out.append(wire | {name: a.tolist()})
    out.append(wire | {"extra": np.zeros(1)})
    header = wire[HEADER]
    out.append(wire | {HEADER: header.astype(np.int32)})
    out.append(wire | {HEADER: header[:3]})
    out.append(wire | {HEADER: np.array([9, *header[1:]], np.int64)})
    out.append(wire | {HEADER: np.array([header[0], -1, *header[2:]], np.int64)})
    out.append({k: v for k, v in wire.items() if k != HEADER})
    if method in ("qsgd", "sign"):
        for bad in (np.nan, np.inf, -1.0):
            out.append(wire | {"scales": np.full_like(wire["scales"], bad)})
    if method == "qsgd":
        out.append(wire | {HEADER: np.array([*header[:2], 17, header[3]], np.int64)})
    if method in ("topk", "randk"):
        indices, values = wire["indices"], wire["values"]
        size = int(header[1])
        out.append(wire | {"indices": np.full_like(indices, size)})
        out.append(wire | {"values": np.full_like(values, np.nan)})
        if indices.size > 1:
            out.append(wire | {"indices": np.full_like(indices, indices[0])})
        out.append(wire | {HEADER: np.array([*header[:2], 3, 0], np.int64)})
    return out


@FAST
@given(compressed(nonempty))
def test_a_broken_message_raises_compression_error(c):
    for broken in _mutations(to_arrays(c), c.method):
        with pytest.raises(CompressionError):
            decode(from_arrays(broken))


@pytest.mark.parametrize(
    ("bits", "bad_level"),
    [
        (2, np.uint8(255)),
        (3, np.uint8(255)),
        (4, np.uint8(255)),
        (8, np.int8(-128)),
        (16, np.int16(-32768)),
    ],
)
def test_qsgd_levels_out_of_range_raise(bits, bad_level):
    wire = to_arrays(qsgd(np.linspace(-1, 1, 16), bits, 0, np.random.default_rng(0)))
    levels = wire["levels"].copy()
    levels[0] = bad_level
    with pytest.raises(CompressionError, match="levels"):
        from_arrays(wire | {"levels": levels})


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["levels", "scales", "indices", "values", "signs", "x"]),
        arrays(
            st.sampled_from([np.uint8, np.int8, np.int16, np.uint16, np.uint32, np.float32]),
            st.integers(0, 12),
        ),
        max_size=3,
    ),
    st.integers(0, 5),
    st.integers(-2, 40),
    st.integers(-1, 17),
    st.integers(-1, 5),
)
def test_garbage_is_refused_or_decodes_to_a_finite_vector(rest, code, size, bits, block):
    wire = rest | {HEADER: np.array([code, size, bits, block], np.int64)}
    try:
        c = from_arrays(wire)
    except CompressionError:
        return
    decoded = decode(c)
    assert decoded.shape == (size,) and np.isfinite(decoded).all()


def test_decode_refuses_a_malformed_compressed():
    with pytest.raises(CompressionError, match="unknown compression method"):
        decode(Compressed("zip", 3, {}))
    with pytest.raises(CompressionError, match="missing"):
        decode(Compressed("sign", 3, {"scales": np.ones(1, np.float32)}))


@pytest.mark.parametrize(
    "call",
    [
        lambda: qsgd(np.array([np.nan]), 4, 0, np.random.default_rng(0)),
        lambda: qsgd(np.ones((2, 2)), 4, 0, np.random.default_rng(0)),
        lambda: qsgd(np.ones(3), 0, 0, np.random.default_rng(0)),
        lambda: qsgd(np.ones(3), 17, 0, np.random.default_rng(0)),
        lambda: qsgd(np.ones(3), 4, -1, np.random.default_rng(0)),
        lambda: qsgd(np.array([1e39]), 4, 0, np.random.default_rng(0)),
        lambda: topk(np.ones(3), 0.0),
        lambda: randk(np.ones(3), 1.5, np.random.default_rng(0)),
        lambda: sign(np.array([np.inf]), 0),
    ],
)
def test_compressors_refuse_bad_input(call):
    with pytest.raises(CompressionError):
        call()
