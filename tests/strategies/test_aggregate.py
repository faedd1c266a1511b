"""Client metrics: their weighted mean against a brute-force reference, and their spread.

(The streaming mean of model updates these tests covered is gone with the model-update path;
the mean of the clients' statistics is tested against brute force in tests/test_statistics.py.)"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.aggregate import MetricMean, spread

finite = st.floats(-1e3, 1e3, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.dictionaries(st.sampled_from("abc"), finite), st.floats(0.1, 1e4)),
        min_size=1,
        max_size=8,
    )
)
def test_metric_mean_averages_each_name_over_the_clients_that_sent_it(replies):
    mean = MetricMean()
    for values, weight in replies:
        mean.add(values, weight)
    got = mean.result()
    for name in "abc":
        sent = [(v[name], w) for v, w in replies if name in v]
        if not sent:
            assert name not in got
            continue
        expected = sum(x * w for x, w in sent) / sum(w for _, w in sent)
        assert got[name] == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_metric_is_refused(bad):
    with pytest.raises(ValueError, match="'loss' is not finite"):
        MetricMean.scalars({"loss": bad, "num-examples": 3}, skip="num-examples")


def test_scalars_leave_out_lists_and_the_weight():
    assert MetricMean.scalars({"a": 1, "l": [1, 2], "num-examples": 3}, "num-examples") == {
        "a": 1.0
    }


def test_spread_reports_worst_tenth():
    values = [
        0.1,
        0.9,
        0.8,
        0.7,
        0.6,
        0.5,
        0.4,
        0.3,
        0.2,
        1.0,
        0.95,
        0.85,
        0.75,
        0.65,
        0.55,
        0.45,
        0.35,
        0.25,
        0.15,
        0.05,
    ]
    s = spread(values)
    assert s["worst10"] == pytest.approx((0.05 + 0.1) / 2)
    assert s["min"] == 0.05
    assert s["mean"] == pytest.approx(np.mean(values))
    assert s["std"] == pytest.approx(np.std(values))
