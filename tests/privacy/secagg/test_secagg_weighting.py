"""What clients mask and how the server averages the sum: against the strategies' own means."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcore.arrays import to_record
from fedcore.config import parse_config
from fedcore.keys import ITEM_RATERS
from privacy.secagg.weighting import average_of_sum, rater_counts, weighted_input
from strategies.items import item_average

MF = {
    "task": "mf",
    "data": {"dataset": "ml-100k", "num-clients": 943, "partition": "natural"},
    "model": {"hidden": [2]},
    "evaluate": {"server": False},
    "secagg": {"mode": "full", "bound": 100.0, "max-weight": 1000},
}


@settings(max_examples=40, deadline=None)
@given(clients=st.integers(1, 6), items=st.integers(1, 7), seed=st.integers(0, 2**32 - 1))
def test_the_unmasked_sum_gives_the_per_item_average(clients, items, seed):
    """Summing what the clients mask and averaging the sum is the in-the-clear item average
    (with a server learning rate of 1), items no client rated included."""
    cfg = parse_config(MF)
    rng = np.random.default_rng(seed)
    current = {
        "item_factors": rng.normal(size=(items, 2)).astype(np.float32),
        "item_bias": rng.normal(size=items).astype(np.float32),
        "global_bias": np.array([3.5], np.float32),
    }
    model = to_record(current)
    updates, total = [], 0.0
    for _ in range(clients):
        counts = rng.integers(0, 3, items).astype(np.float64)
        new = {k: v + rng.normal(size=v.shape).astype(np.float32) for k, v in current.items()}
        weight = float(rng.integers(1, 500))
        update = np.concatenate([(new[k] - current[k]).ravel() for k in current]).astype(float)
        total = total + weighted_input(update, weight, cfg, model, counts)
        updates.append(({**new, ITEM_RATERS: counts}, weight))
    step, raters = average_of_sum(model, total, cfg)
    expected = item_average(current, updates)
    offset = 0
    for name, value in current.items():
        got = value + step[offset : offset + value.size].reshape(value.shape)
        np.testing.assert_allclose(got, expected[name], rtol=1e-5, atol=1e-5)
        offset += value.size
    np.testing.assert_array_equal(raters, sum(u[ITEM_RATERS] for u, _ in updates))


def test_without_counts_the_sum_gives_the_weighted_mean():
    cfg = parse_config({"secagg": {"mode": "full", "max-weight": 100}})
    model = to_record({"w": np.zeros(3, np.float32)})
    x = [np.array([0.5, -0.2, 0.1]), np.array([-0.1, 0.3, 0.0])]
    weights = [10.0, 30.0]
    total = sum(weighted_input(u, w, cfg) for u, w in zip(x, weights, strict=True))
    step, raters = average_of_sum(model, total, cfg)
    np.testing.assert_allclose(step, (10 * x[0] + 30 * x[1]) / 40)
    assert raters is None


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ([1.0, -1.0, 0.0], "whole numbers >= 0"),
        ([1.0, 0.5, 0.0], "whole numbers >= 0"),
        ([1.0, np.nan, 0.0], "whole numbers >= 0"),
        ([1.0, 2.0], "3 item rows need 3 rater counts"),
    ],
)
def test_bad_rater_counts_are_refused(counts, message):
    cfg = parse_config(MF)
    model = to_record(
        {"item_bias": np.zeros(3, np.float32), "global_bias": np.zeros(1, np.float32)}
    )
    with pytest.raises(ValueError, match=message):
        weighted_input(np.zeros(4), 1.0, cfg, model, np.array(counts))
    with pytest.raises(ValueError, match=message):
        rater_counts(np.array(counts), 3)


def test_a_sum_of_the_wrong_length_is_refused():
    cfg = parse_config(MF)
    model = to_record(
        {"item_bias": np.zeros(3, np.float32), "global_bias": np.zeros(1, np.float32)}
    )
    total = weighted_input(np.zeros(4), 1.0, cfg, model, np.ones(3))
    with pytest.raises(ValueError, match="9 entries, expected 8"):
        average_of_sum(model, np.concatenate([total, [0.0]]), cfg)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_diverged_update_is_refused_before_the_clip_could_hide_it(bad):
    """The clip to secagg.bound turned infinity into a plausible +-bound entry; NaN survived
    the clip and was cast to an arbitrary residue. Both are refused."""
    update = np.zeros(4)
    update[1] = bad
    with pytest.raises(ValueError, match="1 of 4 update entries are not finite"):
        weighted_input(update, 1.0, parse_config({"secagg": {"mode": "full"}}))
