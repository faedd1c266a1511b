"""Federated collaborative filtering: user state stays home, per-item aggregation, learning."""

import numpy as np
import pytest
import torch
from flwr.app import Context, Message
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcore.apps import make_client_app
from fedcore.config import ConfigError, parse_config
from fedcore.keys import STATISTICS
from fedcore.server import run_server
from fedcore.statistics import StatisticsError, contribution, decode
from fedcore.tasks import checked_task, get_task
from fedcore.tasks.mf import ALGORITHM, SHARED, MfClientData, load_mf_data
from privacy.secagg.encoding import statistics_bound
from privacy.secagg.quantize import decode as quantize_decode
from privacy.secagg.quantize import encode, fixed_point
from simulations.engines.inprocess import InProcessGrid, run_inprocess

MF = {
    "task": "mf",
    "data": {"dataset": "ml-100k", "num-clients": 943, "partition": "natural"},
    "model": {"hidden": [8]},
    "train": {"rounds": 3, "local-epochs": 10, "lr": 0.1, "momentum": 0.5, "weight-decay": 0.05},
    "evaluate": {"server": False},
}


SILOS = MF | {  # 20 silos of users: the same code path, a faster run
    "data": {"dataset": "ml-100k", "num-clients": 20, "partition": "iid"},
    "train": MF["train"] | {"rounds": 2},
}
# clear-evaluation: the tests read the clients' test error (a simulation-only opt-in)
LOCAL_DP = {
    "dp": "local",
    "clip-norm": 0.5,
    "target-epsilon": 8.0,
    "delta": 1e-5,
    "clear-evaluation": True,
}


def _run(raw: dict) -> tuple[dict[str, np.ndarray], list[dict]]:
    rounds = []
    arrays = run_inprocess(parse_config(raw), rounds.append)
    return {k: v.numpy() for k, v in arrays.items()}, rounds


def _run_spied(raw: dict) -> tuple[list[tuple[Message, Message, Context]], list[dict]]:
    """Run ``raw`` with an outermost client mod that keeps every (message, reply, context)."""
    cfg = parse_config(raw)
    sent, rounds = [], []

    def spy(msg: Message, context: Context, call_next) -> Message:
        reply = call_next(msg, context)
        sent.append((msg, reply, context))
        return reply

    with InProcessGrid(cfg, client_app=make_client_app(cfg, [spy])) as grid:
        run_server(grid, cfg, on_round=rounds.append)
    return sent, rounds


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(0, 2**31),
    st.sampled_from([1.0, 0.7]),
    st.booleans(),
)
def test_the_item_mean_of_the_statistics_equals_a_brute_force_loop(
    clients, items, seed, lr, secure
):
    """Each client's wire vector, summed (in the clear, or in fixed point mod 2^k as secure
    aggregation sums it) and decoded, then the server hook; against a loop over clients and
    items (rows nobody rated keep their value, the counts are summed exactly)."""
    rng = np.random.default_rng(seed)
    secagg = {"mode": "full", "bound": 100.0, "max-weight": 1000, "frac-bits": 32}
    cfg = parse_config(
        MF | {"strategy": {"server-lr": lr}} | ({"secagg": secagg} if secure else {})
    )
    current = {
        "item_factors": rng.normal(size=(items, 2)),
        "item_bias": rng.normal(size=items),
        "global_bias": np.array([3.5]),
    }
    spec = ALGORITHM.spec(cfg, current)
    updates = []
    for _ in range(clients):
        u = {k: v + rng.normal(size=v.shape) for k, v in current.items()}
        raters = rng.integers(0, 3, items).astype(float)
        u["item_factors"][raters == 0] = current["item_factors"][raters == 0]  # untouched
        u["item_bias"][raters == 0] = current["item_bias"][raters == 0]
        updates.append((u, raters, float(rng.integers(1, 50))))
    vectors = [
        contribution(
            {k: u[k] - current[k] for k in SHARED} | {"item-raters": r, "ratings": np.array(w)},
            spec,
        )
        for u, r, w in updates
    ]
    if secure:
        fp = fixed_point(clients, statistics_bound(spec.bound, cfg), cfg.secagg.frac_bits)
        total = quantize_decode(sum(encode(v, fp, rng) for v in vectors), fp)
    else:
        total = sum(vectors)
    summed = decode(total, spec, clients)
    raters = sum(r for _, r, _ in updates)
    np.testing.assert_array_equal(summed["item-raters"], raters)  # exact, also in fixed point
    got, _ = ALGORITHM.server(current, summed, cfg)
    atol = 1e-6 if secure else 1e-12
    for item in range(items):
        raters = sum(r[item] for _, r, _ in updates)
        for name in ("item_factors", "item_bias"):
            step = sum(r[item] * (u[name][item] - current[name][item]) for u, r, _ in updates)
            expected = current[name][item] + (lr * step / raters if raters else 0)
            np.testing.assert_allclose(got[name][item], expected, atol=atol)
    weights = sum(w for _, _, w in updates)
    mu_step = sum(w * (u["global_bias"] - current["global_bias"]) for u, _, w in updates)
    expected = current["global_bias"] + lr * mu_step / weights
    np.testing.assert_allclose(got["global_bias"], expected, atol=atol)


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ([1.0, -1.0, 0.0], "negative"),
        ([1.0, 0.5, 0.0], "not whole"),
        ([1.0, np.nan, 0.0], "not finite"),
        ([1.0, 2.0], "shape"),
        ([1.0, 1001.0, 0.0], "beyond its bound"),
    ],
)
def test_bad_rater_counts_are_refused(counts, message):
    secagg = {"mode": "full", "bound": 100.0, "max-weight": 1000}
    cfg = parse_config(MF | {"secagg": secagg})
    current = {
        "item_factors": np.zeros((3, 2)),
        "item_bias": np.zeros(3),
        "global_bias": np.zeros(1),
    }
    stats = {k: np.zeros_like(v) for k, v in current.items()}
    stats |= {"item-raters": np.array(counts), "ratings": np.array(5.0)}
    with pytest.raises(StatisticsError, match=message):
        contribution(stats, ALGORITHM.spec(cfg, current))


def test_user_factors_never_leave_the_client():
    """Every message a client sends is inspected: one wire vector of the spec the server
    computes (the shared arrays' update, the item counts and the number of ratings, nothing
    of the users' factors), and the user's factors sit in its Context.state."""
    sent, _ = _run_spied(MF | {"train": MF["train"] | {"rounds": 1}})
    assert sent
    cfg = parse_config(MF)
    trained = 0
    for msg, reply, context in sent:
        if reply.has_error() or msg.metadata.message_type != "train":
            continue
        trained += 1
        spec = ALGORITHM.spec(cfg, {k: v.numpy() for k, v in msg.content["arrays"].items()})
        assert spec.names == (*SHARED, "item-raters", "ratings")
        (record,) = reply.content.array_records.values()
        assert set(record) == {STATISTICS}
        assert tuple(record[STATISTICS].shape) == (spec.size,)
        local = context.state.array_records["local-model"]
        assert set(local) == {"users", "user_bias"}
    assert trained == 943


def test_a_short_federated_run_beats_the_global_mean():
    cfg = parse_config(MF)
    rounds = []
    with InProcessGrid(cfg) as grid:
        run_server(grid, cfg, on_round=rounds.append)
    from fedcore.tasks.mf import load_mf_data

    data = load_mf_data(cfg)
    train_mean = data.report["mean_rating"]
    baseline = float(np.sqrt(np.mean((data.y_test.numpy() - train_mean) ** 2)))
    rmse = [r["client-eval"]["mse"] ** 0.5 for r in rounds]
    assert rmse[-1] < baseline and rmse[-1] < rmse[0]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"evaluate": {"server": True}}, "evaluate.server = false"),
        ({"secagg": {"mode": "full"}, "privacy": LOCAL_DP}, "not both"),
        ({"privacy": LOCAL_DP | {"dp": "sample"}}, "user-level DP"),
        ({"data": {"dataset": "ml-100k", "num-clients": 943, "partition": "dirichlet"}}, "natural"),
    ],
)
def test_mf_misconfiguration_is_refused(settings, message):
    raw = dict(MF)
    for key, value in settings.items():
        raw[key] = raw.get(key, {}) | value
    with pytest.raises(ConfigError, match=message):  # the task's own rules
        checked_task(parse_config(raw))


@pytest.mark.parametrize("mode", ["full", "sparse"])
def test_secure_aggregation_gives_the_plain_item_average(mode):
    """Dense item updates and rater counts are masked; the unmasked per-item mean is the plain
    one within the fixed-point resolution (2^-32 with weights over 10^4), the updates clipped
    to a bound they never reach."""
    secagg = {"mode": mode, "degree": 4, "bound": 5.0, "frac-bits": 32, "max-weight": 10_000}
    plain, plain_rounds = _run(SILOS)
    secure, secure_rounds = _run(SILOS | {"secagg": secagg})
    for name in plain:
        np.testing.assert_allclose(secure[name], plain[name], atol=1e-5)
    rmse = [r[-1]["client-eval"]["mse"] ** 0.5 for r in (plain_rounds, secure_rounds)]
    assert rmse[1] == pytest.approx(rmse[0], abs=1e-4)
    assert secure_rounds[-1]["train-failures"] == []


def test_user_level_dp_releases_only_noised_item_updates():
    """Local DP: each client's release is its clipped, noised model update, without the rater
    counts (they would say which items its users rated) or any un-noised statistic of its
    ratings (the loss, how many there are, the training time); the ledger accounts every
    round."""
    sent, rounds = _run_spied(SILOS | {"privacy": LOCAL_DP})
    sent = [
        reply
        for msg, reply, _ in sent
        if msg.metadata.message_type == "train" and not reply.has_error()
    ]
    assert len(sent) == 2 * 20
    model_size = 1682 * 8 + 1682 + 1  # item factors, item biases, global bias: no counts
    for reply in sent:
        assert set(reply.content["arrays"]) == {STATISTICS}
        assert tuple(reply.content["arrays"][STATISTICS].shape) == (model_size,)
        metrics = reply.content["metrics"]
        assert set(metrics) == {"num-examples", "epsilon"}
        assert metrics["num-examples"] == 1
    events = [e for r in rounds for e in r["privacy-events"]]
    assert len(events) == 2 * 20 and {e["neighbouring"] for e in events} == {"local"}
    assert np.isfinite(rounds[-1]["client-eval"]["mse"])


def test_distributed_user_level_dp_masks_noised_updates_without_counts():
    """Distributed DP: each client clips its item update and adds its share of the noise
    under secure aggregation, and sends no rater counts; the server's view is the noised sum."""
    privacy = {
        "dp": "distributed",
        "clip-norm": 0.5,
        "noise-multiplier": 1.0,
        "clear-evaluation": True,
    }
    sent, rounds = _run_spied(
        SILOS | {"secagg": {"mode": "full", "bound": 5.0}, "privacy": privacy}
    )
    sent = [reply for _, reply, _ in sent if not reply.has_error()]
    masked = [r for r in sent if "secagg" in r.content.array_records]
    assert len(masked) == 2 * 20
    model_size = 1682 * 8 + 1682 + 1  # item factors, item biases, global bias
    for reply in masked:  # the model's update only; no rater counts, no weight
        (vector,) = reply.content.array_records["secagg"].values()
        assert tuple(vector.shape) == (model_size,)
    assert all("arrays" not in r.content.array_records for r in sent)
    trained = [r for r in sent if "metrics" in r.content.metric_records and "secagg" in r.content]
    assert len(trained) == 2 * 20  # the training stage: its metrics say nothing of the ratings
    for reply in trained:  # (its epsilon against the server depends on its rounds only)
        assert dict(reply.content["metrics"]).keys() == {"num-examples", "epsilon"}
        assert reply.content["metrics"]["num-examples"] == 1
    for r in rounds:  # the released sum's event, and each client's own un-amplified one
        clients = [e["client"] for e in r["privacy-events"]]
        assert clients.count(None) == 1 and sorted(c for c in clients if c is not None) == list(
            range(20)
        )
    assert rounds[-1]["train-failures"] == []
    assert np.isfinite(rounds[-1]["client-eval"]["mse"])


def test_client_level_dp_applies_the_server_rate_after_the_noise():
    """The server noises the mean of the clipped updates, then applies its learning rate: the
    step at rate 2 is twice the step at rate 1, noise included (applied before the noise, the
    rate would scale the sensitivity the noise is calibrated to)."""
    privacy = {"dp": "client", "clip-norm": 0.5, "noise-multiplier": 1.0, "seeded-noise": True}
    raw = SILOS | {
        "train": SILOS["train"] | {"rounds": 1},
        "evaluate": {"server": False, "fraction": 0.0},
        "privacy": privacy,
    }
    cfg = parse_config(raw)
    algorithm = get_task("mf")
    start = algorithm.init(cfg, algorithm.load_data(cfg), None)
    steps = []
    for rate in (1.0, 2.0):
        final, _ = _run(raw | {"strategy": {"server-lr": rate}})
        steps.append({k: final[k] - start[k] for k in final})
    for name, step in steps[0].items():
        assert np.abs(step).max() > 1e-3  # the noise alone moves every array
        np.testing.assert_allclose(steps[1][name], 2 * step, atol=1e-5)


def test_more_silos_than_users_are_refused():
    silos = {"dataset": "ml-100k", "num-clients": 944, "partition": "iid"}
    with pytest.raises(ConfigError, match="empty"):
        load_mf_data(parse_config(MF | {"data": silos}))


def test_a_user_rating_an_item_twice_is_refused():
    x = torch.tensor([[0, 3], [0, 5], [0, 3]])
    data = MfClientData(x, torch.tensor([4.0, 2.0, 5.0]), x[:0], torch.zeros(0), num_users=1)
    with pytest.raises(ValueError, match="rated item 3 more than once"):
        data.index  # noqa: B018 (a property that builds the client's rating matrix)


def test_the_tasks_own_rules_refuse_before_the_run_directory(tmp_path):
    import fedcore

    raw = MF | {"data": {"dataset": "ml-100k", "num-clients": 10, "partition": "dirichlet"}}
    with pytest.raises(ConfigError, match="natural"):
        fedcore.simulate(raw, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
