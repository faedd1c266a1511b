"""Fuzzing the second boundary: client replies as the server receives them (issue 17).

A round of five honest replies, then one forged reply (a missing or extra record, a wrong
shape or dtype, NaN or inf, a huge array or value, a forged weight or metric) put among
them, driven through the run's real strategy (``build_strategy`` then ``configure_train``
and ``aggregate_train``). The invariant: the forged reply is rejected with a reason and the
aggregate (model and metrics) is exactly the honest replies' aggregate; the model stays
finite. ``benchmarks/fuzz.py`` runs :data:`replies` with many more examples.
"""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcore import optimizers
from fedcore.arrays import from_numpy
from fedcore.config import parse_config
from fedcore.keys import ARRAYS, METRICS, NUM_EXAMPLES, STATISTICS
from fedcore.statistics import clip_l2, contribution
from fedcore.tasks.fedavg import SERVER, STEPS
from simulations.engines.inprocess import InProcessGrid
from strategies import build_strategy

MAX_EXAMPLES = 200
CLIENTS = 5
STATE = {"w": np.zeros((3, 4), np.float32), "b": np.zeros(4, np.float32)}
# The strategies a reply meets: plain FedAvg (unbounded updates, weighted by examples), a
# server optimizer, client-side clipping under client-level DP (a norm check), and a robust
# aggregator (each update decoded alone).
CONFIGS = {
    "fedavg": {},
    "fedadam": {"strategy": {"name": "fedadam"}},
    "dp-client-clipping": {
        "privacy": {
            "dp": "client",
            "clipping": "client",
            "clip-norm": 1.0,
            "noise-multiplier": 1.0,
            "seeded-noise": True,
        },
        "evaluate": {"fraction": 0.0},
    },
    "fedmedian": {"strategy": {"name": "fedmedian"}},
}


@functools.cache
def configured(name: str):
    """The strategy of config ``name`` after ``configure_train`` of round 1 (copied for each
    aggregation: a strategy keeps state between rounds), its messages and honest replies."""
    cfg = parse_config({"data": {"num-clients": CLIENTS}} | CONFIGS[name])
    strategy = build_strategy(cfg)
    with InProcessGrid(cfg) as grid:
        msgs = list(strategy.configure_train(1, _state(cfg), ConfigRecord(), grid))
        grid.push_messages(msgs)
    rng = np.random.default_rng(0)
    spec = strategy._spec
    wires = []
    for i, _ in enumerate(msgs):
        update = {n: rng.normal(0, 0.05, a.shape) for n, a in spec.arrays if n not in spec.weights}
        weights = {n: np.array(float(3 + i)) for n in spec.weights}
        wire = contribution(update | weights, spec)
        wires.append(clip_l2(wire, cfg.privacy.clip_norm) if cfg.privacy.dp != "off" else wire)
    return strategy, msgs, wires


def _state(cfg) -> ArrayRecord:
    """The model and, for a server optimizer, its buffers (zero), as FedAvg's init lays
    them out."""
    buffers = optimizers.buffers(cfg.strategy) if cfg.strategy.name in optimizers.OPTIMIZERS else ()
    state = STATE | {
        f"{SERVER}{b}/{k}": np.zeros_like(v) for b in buffers for k, v in STATE.items()
    }
    state |= {STEPS: np.zeros((), np.float32)} if buffers else {}
    return ArrayRecord({k: Array(v) for k, v in state.items()})


def reply(msg: Message, wire: object, metrics: dict | None = None) -> Message:
    records = {ARRAYS: ArrayRecord({STATISTICS: from_numpy(np.asarray(wire))})}
    records[METRICS] = MetricRecord({NUM_EXAMPLES: 4, "loss": 0.5} if metrics is None else metrics)
    return Message(RecordDict(records), reply_to=msg)


def aggregate(strategy, replies: list[Message]):
    fresh = copy.deepcopy(strategy)
    arrays, metrics = fresh.aggregate_train(1, iter(replies))
    return arrays, metrics, fresh.last_failures


# --- the forgeries --------------------------------------------------------------------------

_DTYPES = (np.int64, np.int32, np.uint8, np.float16, np.complex128, np.bool_)


@st.composite
def forged_wire(draw, honest: np.ndarray):
    """A wire vector no honest client sends: wrong length or rank, dtype, non-finite, huge."""
    kind = draw(
        st.sampled_from(["length", "rank", "dtype", "nonfinite", "huge", "empty", "scalar"])
    )
    if kind == "length":
        size = draw(st.one_of(st.integers(0, 3 * honest.size), st.just(1_000_003)))
        if size == honest.size:
            size += 1
        return np.zeros(size) + draw(st.floats(-1, 1))
    if kind == "rank":
        return np.tile(honest, (draw(st.integers(1, 3)), 1))
    if kind == "dtype":
        return honest.astype(draw(st.sampled_from(_DTYPES)))
    if kind == "nonfinite":
        out = honest.copy()
        at = draw(st.lists(st.integers(0, honest.size - 1), min_size=1, max_size=4))
        out[at] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return out
    if kind == "huge":  # finite: past any bound, or past what float64 sums and divides
        out = honest.copy()
        out[draw(st.integers(0, honest.size - 1))] = draw(
            st.sampled_from([1e300, -1e300, 1.7e308, np.finfo(np.float64).max])
        )
        return out
    if kind == "empty":
        return np.zeros(0)
    return np.float64(draw(st.floats(-1, 1)))


_BAD_COUNTS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -1, -1e9]),
    st.lists(st.integers(0, 9), min_size=1, max_size=3),
)


@st.composite
def forgery(draw, msg: Message, honest: np.ndarray) -> Message:
    """One forged reply to ``msg`` whose honest wire vector would be ``honest``."""
    target = draw(st.sampled_from(["wire", "weight", "count", "metric", "records"]))
    if target == "wire":
        return reply(msg, draw(forged_wire(honest)))
    if target == "weight":  # a negative number of examples on the wire
        out = honest.copy()
        out[-1] = -draw(st.floats(1, 1e6))
        return reply(msg, out)
    if target == "count":
        return reply(msg, honest, {NUM_EXAMPLES: draw(_BAD_COUNTS), "loss": 0.5})
    if target == "metric":
        bad = draw(st.sampled_from([math.nan, math.inf, -math.inf]))  # (lists are not read)
        return reply(msg, honest, {NUM_EXAMPLES: 4, "loss": bad})
    content = RecordDict()
    layout = draw(st.sampled_from(["none", "other-key", "two-records", "metrics-only"]))
    if layout == "other-key":
        content[ARRAYS] = ArrayRecord({"forged": from_numpy(honest)})
    elif layout == "two-records":
        content[ARRAYS] = ArrayRecord({STATISTICS: from_numpy(honest)})
        content["more"] = ArrayRecord({STATISTICS: from_numpy(honest)})
    if layout != "none":
        content[METRICS] = MetricRecord({NUM_EXAMPLES: 4})
    return Message(content, reply_to=msg)


@st.composite
def replies(draw) -> tuple[str, int, Message]:
    """(config name, the forged reply's position, the forged reply)."""
    name = draw(st.sampled_from(sorted(CONFIGS)))
    _, msgs, wires = configured(name)
    slot = draw(st.integers(0, CLIENTS - 1))
    honest = wires[slot]
    forged = draw(forgery(msgs[slot], honest))
    return name, slot, forged


def _unbounded_but_finite(strategy, forged: Message) -> bool:
    """Whether ``forged`` holds a finite wire vector of the right shape that an unbounded
    spec (plain FedAvg: Flower's clips nothing) may legally carry: a huge update."""
    try:
        vector = forged.content[ARRAYS][STATISTICS].numpy()
    except KeyError:
        return False
    spec = strategy._spec
    return (
        vector.dtype == np.float64
        and vector.shape == (spec.size,)
        and bool(np.isfinite(vector).all())
        and not math.isfinite(spec.bound)
        and forged.content[METRICS][NUM_EXAMPLES] == 4
    )


def check_reply(case: tuple[str, int, Message]) -> None:
    """The forged reply is rejected with a reason, and the rest aggregate as without it;
    only a huge but finite update, which an unbounded spec allows, may be accepted, and then
    the model stays finite."""
    name, slot, forged = case
    strategy, msgs, wires = configured(name)
    honest = [reply(m, w) for i, (m, w) in enumerate(zip(msgs, wires, strict=True)) if i != slot]
    expected, expected_metrics, none = aggregate(strategy, honest)
    assert none == []
    with np.errstate(over="ignore", invalid="ignore"):  # (the finite check below judges)
        got, metrics, failures = aggregate(strategy, [*honest[:slot], forged, *honest[slot:]])
    if not failures and _unbounded_but_finite(strategy, forged):
        bad = [k for k in got if not np.isfinite(got[k].numpy()).all()]
        assert not bad, f"accepted, and the state's {bad} are not finite"
        return
    assert len(failures) == 1 and failures[0].strip(), failures
    assert metrics == expected_metrics
    assert set(got) == set(expected)
    for k in expected:
        a, b = got[k].numpy(), expected[k].numpy()
        assert np.isfinite(a).all(), f"{k} is not finite"
        np.testing.assert_array_equal(a, b, err_msg=k)


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(replies())
def test_a_forged_reply_is_rejected_and_the_honest_aggregate_unchanged(case):
    check_reply(case)


# --- what fuzzing found ---------------------------------------------------------------------


def test_a_huge_finite_update_is_rejected_not_fedadams_moments_made_inf():
    """Plain FedAvg bounds no update entry; one reply holding 1e300 (finite, so it passed
    every check) made FedAdam's first and second moments inf for the rest of the run."""
    strategy, msgs, wires = configured("fedadam")
    huge = wires[0].copy()
    huge[0] = 1e300
    replies_ = [reply(msgs[0], huge)] + [
        reply(m, w) for m, w in zip(msgs[1:], wires[1:], strict=True)
    ]
    got, _, failures = aggregate(strategy, replies_)
    assert len(failures) == 1 and "beyond 1e+100" in failures[0]
    assert all(np.isfinite(got[k].numpy()).all() for k in got)
