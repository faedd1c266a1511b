"""Counts enter secure aggregation's encoding as whole units: summed exactly, at a range that
keeps FedAvg's updates on the 32-bit modulus (its example counts reach 10^4)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcore.arrays import to_record
from fedcore.config import parse_config
from fedcore.statistics import INTEGER, ArraySpec, Spec, contribution
from privacy.secagg.encoding import from_encoding, statistics_bound, to_encoding, wire_bound
from privacy.secagg.quantize import decode, encode, fixed_point
from strategies import build_strategy

CFG = parse_config({"secagg": {"mode": "full"}})


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_counts_are_summed_exactly_and_reals_within_the_fixed_point_bound(clients, seed):
    rng = np.random.default_rng(seed)
    spec = Spec.of(
        {
            "x": ArraySpec((3, 2), bound=2.0, weight="n"),
            "n": ArraySpec((3,), INTEGER, bound=10_000),
            "hist": ArraySpec((4,), INTEGER, bound=50),
        }
    )
    stats = [
        {
            "x": rng.uniform(-2, 2, (3, 2)),
            "n": rng.integers(0, 10_001, 3).astype(float),
            "hist": rng.integers(0, 51, 4).astype(float),
        }
        for _ in range(clients)
    ]
    wires = [contribution(s, spec) for s in stats]
    fp = fixed_point(clients, statistics_bound(wire_bound(spec, CFG), CFG), 20)
    total = sum(encode(to_encoding(w, spec, CFG), fp, rng) for w in wires)
    got = from_encoding(decode(total.astype(fp.dtype), fp), spec, CFG)
    exact = np.sum(wires, axis=0)
    counts = np.r_[np.zeros(6), np.ones(3 + 4)].astype(bool)
    np.testing.assert_array_equal(got[counts], exact[counts])  # not one unit off
    assert np.abs(got[~counts] - exact[~counts]).max() <= fp.error_bound(clients)


def test_fedavgs_update_keeps_the_32_bit_modulus():
    """The example count (bound secagg.max-weight = 10^4) costs 10^4 x 2^-20 of range, not
    10^4: a cohort of 100 sums in 2^32, as the update alone would."""
    strategy = build_strategy(CFG)
    spec = strategy.spec_of(to_record({"w": np.zeros(5, np.float32)}))
    assert spec["examples"].bound == 10_000
    fp = fixed_point(100, strategy.sum_format().input_bound(to_record({"w": np.zeros(5)})), 20)
    assert fp.bits == 32


@pytest.mark.parametrize("dp", ["client", "distributed"])
def test_under_client_level_dp_counts_stay_real(dp):
    """Client-level DP clips and noises the counts, so they are not whole: no scaling."""
    privacy = {"dp": dp, "clip-norm": 1.0, "noise-multiplier": 1.0, "clipping": "client"}
    cfg = parse_config(
        {"secagg": {"mode": "full"}, "privacy": privacy, "evaluate": {"fraction": 0.0}}
    )
    spec = Spec.of({"n": ArraySpec((2,), INTEGER, bound=10)})
    wire = np.array([0.3, 0.7])
    assert wire_bound(spec, cfg) == 10
    np.testing.assert_array_equal(to_encoding(wire, spec, cfg), wire)
