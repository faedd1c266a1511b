"""What clients mask for a model update and how the server averages the sum.

(The recommender's per-item weighting moved onto typed statistics: tests/tasks/test_mf.py and
tests/test_statistics.py check it against brute-force loops.)"""

import numpy as np
import pytest

from fedcore.arrays import to_record
from fedcore.config import parse_config
from privacy.secagg.weighting import average_of_sum, weighted_input


def test_without_counts_the_sum_gives_the_weighted_mean():
    cfg = parse_config({"secagg": {"mode": "full", "max-weight": 100}})
    model = to_record({"w": np.zeros(3, np.float32)})
    x = [np.array([0.5, -0.2, 0.1]), np.array([-0.1, 0.3, 0.0])]
    weights = [10.0, 30.0]
    total = sum(weighted_input(u, w, cfg) for u, w in zip(x, weights, strict=True))
    step = average_of_sum(model, total, cfg)
    np.testing.assert_allclose(step, (10 * x[0] + 30 * x[1]) / 40)


def test_a_sum_of_the_wrong_length_is_refused():
    cfg = parse_config({"secagg": {"mode": "full"}})
    model = to_record(
        {"item_bias": np.zeros(3, np.float32), "global_bias": np.zeros(1, np.float32)}
    )
    total = weighted_input(np.zeros(4), 1.0, cfg)
    with pytest.raises(ValueError, match="6 entries, expected 5"):
        average_of_sum(model, np.concatenate([total, [0.0]]), cfg)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_diverged_update_is_refused_before_the_clip_could_hide_it(bad):
    """The clip to secagg.bound turned infinity into a plausible +-bound entry; NaN survived
    the clip and was cast to an arbitrary residue. Both are refused."""
    update = np.zeros(4)
    update[1] = bad
    with pytest.raises(ValueError, match="1 of 4 update entries are not finite"):
        weighted_input(update, 1.0, parse_config({"secagg": {"mode": "full"}}))
