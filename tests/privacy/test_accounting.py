"""Epsilon from a ledger against Opacus accountants stepped directly, and calibration."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import PRVAccountant, RDPAccountant

from privacy.accounting import ORDERS, calibrate_noise, epsilon, epsilon_curve, would_exceed
from privacy.ledger import DpEvent, PrivacyLedger

DELTA = 1e-5

# Small noise multipliers push the best RDP order to the largest one; Opacus warns, and the
# bound is still valid.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Optimal order is the largest alpha", "ignore::RuntimeWarning"
)


def sgd_event(z=1.0, q=0.01, steps=10, round=1, client=0, **changes):
    fields = dict(
        mechanism="dp-sgd",
        noise_multiplier=z,
        sample_rate=q,
        steps=steps,
        clip_norm=1.0,
        sampling="poisson",
        neighbouring="example",
        round=round,
        client=client,
    )
    return DpEvent.gaussian(**(fields | changes))


def stepped(accountant, *runs):
    """Opacus' accountant stepped one DP-SGD step at a time, as its optimizer hook does."""
    for z, q, steps in runs:
        for _ in range(steps):
            accountant.step(noise_multiplier=z, sample_rate=q)
    return accountant.get_epsilon(DELTA)


@settings(max_examples=10, deadline=None)
@given(z=st.floats(0.5, 3.0), q=st.floats(0.001, 0.5), steps=st.integers(1, 50))
def test_rdp_epsilon_equals_directly_stepped_opacus_accountant(z, q, steps):
    got = epsilon([sgd_event(z, q, steps)], DELTA, "rdp")
    assert got == pytest.approx(stepped(RDPAccountant(), (z, q, steps)), rel=1e-6)


@pytest.mark.parametrize(
    ("z", "q", "steps"), [(1.0, 0.01, 50), (1.5, 0.1, 20), (3.0, 0.05, 10), (2.0, 1.0, 1)]
)
def test_prv_epsilon_equals_directly_stepped_opacus_accountant(z, q, steps):
    got = epsilon([sgd_event(z, q, steps)], DELTA, "prv")
    assert got == pytest.approx(stepped(PRVAccountant(), (z, q, steps)), rel=1e-3)


def test_events_split_across_rounds_equal_one_event_with_all_steps():
    split = [sgd_event(steps=10, round=1), sgd_event(steps=15, round=2)]
    assert epsilon(split, DELTA) == pytest.approx(epsilon([sgd_event(steps=25)], DELTA), 1e-12)


@pytest.mark.parametrize(("accountant", "direct"), [("rdp", RDPAccountant), ("prv", PRVAccountant)])
def test_two_events_compose_like_the_accountant_stepped_with_both(accountant, direct):
    first, second = sgd_event(1.0, 0.02, 20), sgd_event(1.5, 0.05, 30, round=2)
    both = epsilon([first, second], DELTA, accountant)
    assert both > epsilon([first], DELTA, accountant)
    assert both > epsilon([second], DELTA, accountant)
    expected = stepped(direct(), (1.0, 0.02, 20), (1.5, 0.05, 30))
    assert both == pytest.approx(expected, rel=1e-6 if accountant == "rdp" else 1e-3)


def test_full_batch_gaussian_release_is_the_plain_gaussian_mechanism():
    release = sgd_event(2.0, 1.0, 1, mechanism="gaussian", sampling="none", neighbouring="client")
    assert epsilon([release], DELTA) == pytest.approx(stepped(RDPAccountant(), (2.0, 1.0, 1)))


@pytest.mark.parametrize(
    ("target", "q", "steps", "accountant"),
    [
        (1.0, 0.01, 1000, "rdp"),
        (8.0, 0.004, 6000, "rdp"),
        (2.0, 0.1, 100, "rdp"),
        (2.0, 0.1, 100, "prv"),
    ],
)
def test_calibrated_noise_lands_within_one_percent_below_target(target, q, steps, accountant):
    z = calibrate_noise(target, DELTA, q, steps, accountant)
    got = epsilon([sgd_event(z, q, steps)], DELTA, accountant)
    assert 0.99 * target <= got <= target


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("target_epsilon", (0.0, DELTA, 0.01, 100)),
        ("delta", (1.0, 1.0, 0.01, 100)),
        ("sample_rate", (1.0, DELTA, 0.0, 100)),
        ("steps", (1.0, DELTA, 0.01, 0)),
        ("accountant", (1.0, DELTA, 0.01, 100, "gdp")),
    ],
)
def test_calibrate_noise_rejects_invalid_input_naming_it(name, args):
    with pytest.raises(ValueError, match=name):
        calibrate_noise(*args)


def test_would_exceed_flags_the_round_that_crosses_the_budget_and_not_the_one_before():
    rounds = [sgd_event(steps=20, round=r) for r in range(1, 11)]
    eps = [epsilon(rounds[:r], DELTA) for r in range(1, 11)]
    crossing = 5  # the budget sits between the epsilon after round 5 and after round 6
    budget = (eps[crossing - 1] + eps[crossing]) / 2
    before = PrivacyLedger(tuple(rounds[: crossing - 1]))
    assert would_exceed(before, [rounds[crossing - 1]], budget, DELTA) == (False, eps[crossing - 1])
    exceeds, after = would_exceed(
        before.record(rounds[crossing - 1]), [rounds[crossing]], budget, DELTA
    )
    assert exceeds
    assert after == eps[crossing]


def test_epsilon_curve_is_cumulative_epsilon_per_round():
    ledger = PrivacyLedger().record(*(sgd_event(steps=10, round=r) for r in (1, 2, 3)))
    curve = epsilon_curve(ledger, DELTA)
    assert list(curve) == [1, 2, 3]
    assert curve[3] == epsilon(ledger.events, DELTA)
    assert curve[1] < curve[2] < curve[3]


def test_epsilon_curve_rejects_events_of_two_clients():
    ledger = PrivacyLedger().record(sgd_event(client=0), sgd_event(client=1))
    with pytest.raises(ValueError, match="one client"):
        epsilon_curve(ledger, DELTA)


def test_mixing_example_and_client_neighbouring_raises():
    with pytest.raises(ValueError, match="neighbouring"):
        epsilon([sgd_event(), sgd_event(neighbouring="client")], DELTA)


def test_sampling_none_with_sample_rate_below_one_raises():
    with pytest.raises(ValueError, match="sample_rate"):
        epsilon([sgd_event(q=0.5, sampling="none")], DELTA)


def client_event(z=1.0, q=0.1, steps=50, sampling="poisson", population=None, **changes):
    """One server-side DP-FedAvg release per round protecting whole clients."""
    fields = dict(mechanism="gaussian", neighbouring="client", client=None, round=1)
    return sgd_event(z, q, steps, sampling=sampling, population=population, **(fields | changes))


def flower_epsilon(sampling, z, sample_size, population, rounds, orders=None):
    """Flower's own accountant (flwr.serverapp.RdpAccountant) for the same releases."""
    from flwr.serverapp import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        RdpAccountant,
        SamplingMethod,
    )

    method = SamplingMethod(sampling)
    relation = (
        NeighboringRelation.REPLACE_ONE
        if method is SamplingMethod.WITHOUT_REPLACEMENT
        else NeighboringRelation.ADD_OR_REMOVE_ONE
    )
    accountant = RdpAccountant(PrivacyConfig(DELTA, population, relation, method), orders=orders)
    accountant.compose(GaussianPrivacyEvent(z, sample_size, population), rounds)
    return accountant.get_epsilon(DELTA)


@pytest.mark.parametrize("z", [0.8, 1.1, 3.0])
def test_client_level_without_sampling_equals_flowers_accountant(z):
    """The case Flower's DP strategies account (no amplification): the same epsilon."""
    ours = epsilon([client_event(z, q=1.0, sampling="none")], DELTA)
    assert ours == pytest.approx(flower_epsilon("no-amplification", z, 100, 100, 50), rel=1e-9)


def test_client_level_poisson_matches_flowers_accountant():
    """Poisson client sampling: Opacus' and dp-accounting's RDP series agree to 0.1%."""
    ours = epsilon([client_event(1.1, q=0.1)], DELTA)
    assert ours == pytest.approx(flower_epsilon("poisson", 1.1, 10, 100, 50), rel=1e-3)
    assert ours < 7  # the anchor: about 6, against 50+ without amplification


def test_fixed_size_sampling_uses_the_without_replacement_bound_at_twice_the_sensitivity():
    """m of N without replacement is replace-one: dp-accounting's bound at noise z / 2."""
    ours = epsilon([client_event(2.0, q=0.1, sampling="fixed-size", population=100)], DELTA)
    flower = flower_epsilon("without-replacement", 1.0, 10, 100, 50, orders=ORDERS)
    assert ours == pytest.approx(flower, rel=1e-9)


def test_fixed_size_sampling_needs_rdp():
    with pytest.raises(NotImplementedError, match="fixed-size"):
        epsilon([client_event(sampling="fixed-size", population=100)], DELTA, "prv")


def test_fixed_size_and_poisson_events_do_not_mix():
    with pytest.raises(ValueError, match="mix replace-one"):
        epsilon([client_event(sampling="fixed-size", population=100), client_event()], DELTA)


def test_local_dp_is_a_gaussian_at_twice_the_sensitivity():
    local = sgd_event(2.0, q=1.0, steps=5, sampling="none", neighbouring="local")
    central = sgd_event(1.0, q=1.0, steps=5, sampling="none", neighbouring="client")
    assert epsilon([local], DELTA) == pytest.approx(epsilon([central], DELTA), rel=1e-12)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_empty_ledger_has_zero_epsilon(accountant):
    assert epsilon(PrivacyLedger().events, DELTA, accountant) == 0.0


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5])
def test_delta_outside_open_unit_interval_raises(delta):
    with pytest.raises(ValueError, match="delta"):
        epsilon([sgd_event()], delta)


@pytest.mark.parametrize(
    "sampling, neighbouring, q, population",
    [("fixed-size", "client", 0.1, 100), ("none", "local", 1.0, None)],
)
def test_calibration_covers_fixed_size_and_local_dp(sampling, neighbouring, q, population):
    z = calibrate_noise(2.0, DELTA, q, 30, "rdp", sampling, neighbouring, population)
    event = client_event(z, q, 30, sampling, population, neighbouring=neighbouring)
    assert 0.99 * 2.0 <= epsilon([event], DELTA) <= 2.0


def test_orders_are_opacus_defaults():
    from opacus.accountants import RDPAccountant

    from privacy.accounting import ORDERS

    assert list(ORDERS) == list(RDPAccountant.DEFAULT_ALPHAS)


@pytest.mark.parametrize(
    "fields",
    [
        dict(
            mechanism="dp-sgd",
            sample_rate=0.01,
            steps=50,
            sampling="poisson",
            neighbouring="example",
        ),
        dict(
            mechanism="gaussian", sample_rate=1.0, steps=1, sampling="none", neighbouring="client"
        ),
        dict(
            mechanism="gaussian",
            sample_rate=0.1,
            steps=1,
            sampling="fixed-size",
            neighbouring="client",
            population=100,
        ),
        dict(mechanism="gaussian", sample_rate=1.0, steps=1, sampling="none", neighbouring="local"),
    ],
)
def test_every_ledger_event_is_a_dp_accounting_event_tree(fields):
    """Composing the ledger's trees in dp_accounting's own RDP accountant gives fedcore's
    epsilon: the ledger says nothing dp_accounting cannot."""
    events = [
        DpEvent.gaussian(noise_multiplier=1.1, clip_norm=1.0, round=r, client=0, **fields)
        for r in range(1, 11)
    ]
    assert len({e.relation for e in events}) == 1
    accountant = dp_accounting_rdp(events[0].relation)
    for event in events:
        accountant.compose(event.dp_event)
    # to 1e-6: Opacus' series for the Poisson curve and dp_accounting's differ in the 9th digit
    assert accountant.get_epsilon(1e-5) == pytest.approx(epsilon(events, 1e-5), rel=1e-6)


def dp_accounting_rdp(relation):
    from dp_accounting import privacy_accountant
    from dp_accounting.rdp import RdpAccountant

    names = {"add-or-remove-one": "ADD_OR_REMOVE_ONE", "replace-one": "REPLACE_ONE"}
    relation = getattr(privacy_accountant.NeighboringRelation, names[relation])
    return RdpAccountant(orders=list(ORDERS), neighboring_relation=relation)


def count_event(build, z=2.0, steps=5, round=1):
    return build("count table", z, steps, 1.0, "record", round, None)


@pytest.mark.parametrize("z", [0.5, 2.0, 10.0])
def test_laplace_counts_compose_as_dp_accountings_laplace(z):
    """A Laplace release of scale z * L1 sensitivity is (1 / z)-DP; its RDP (Mironov 2017,
    Proposition 6) comes from dp_accounting, five rounds of five releases each."""
    events = [count_event(DpEvent.laplace, z, round=r) for r in range(1, 6)]
    accountant = dp_accounting_rdp("add-or-remove-one")
    for event in events:
        accountant.compose(event.dp_event)
    ours = epsilon(events, DELTA)
    # pure DP composes by addition at delta 0: the smaller of the two bounds holds
    assert ours == pytest.approx(min(accountant.get_epsilon(DELTA), 25 / z), rel=1e-12)
    assert epsilon(events, DELTA, "prv") == ours  # no Gaussian: the pure bound, any accountant


@pytest.mark.parametrize("z", [0.5, 2.0, 10.0])
def test_discrete_gaussian_counts_are_zcdp_at_one_over_two_z_squared(z):
    """Canonne, Kamath and Steinke 2020: rho = 1 / (2 z^2) per release; composed rho adds,
    and the (epsilon, delta) conversion is at most Bun and Steinke's rho + 2 sqrt(rho log 1/d)."""
    events = [count_event(DpEvent.discrete_gaussian, z, steps=5, round=r) for r in (1, 2)]
    assert events[0].release.rho == pytest.approx(1 / (2 * z * z), rel=1e-15)
    rho = 10 / (2 * z * z)
    ours = epsilon(events, DELTA)
    assert ours <= rho + 2 * math.sqrt(rho * math.log(1 / DELTA))
    accountant = dp_accounting_rdp("add-or-remove-one")
    accountant.compose(dp_event_module().ZCDpEvent(rho))
    assert ours == pytest.approx(accountant.get_epsilon(DELTA), rel=1e-9)


def dp_event_module():
    from dp_accounting import dp_event

    return dp_event


def test_a_composed_tree_accounts_as_its_parts():
    """One event holding a composition equals its parts recorded as separate events."""
    dp_event = dp_event_module()
    laplace, zcdp = count_event(DpEvent.laplace), count_event(DpEvent.discrete_gaussian)
    both = DpEvent(
        "sketch",
        dp_event.ComposedDpEvent([laplace.dp_event, zcdp.dp_event]),
        "add-or-remove-one",
        "record",
        1,
        None,
        1.0,
        2.0,
    )
    assert epsilon([both], DELTA) == pytest.approx(epsilon([laplace, zcdp], DELTA), rel=1e-12)


def test_prv_takes_gaussians_only():
    with pytest.raises(NotImplementedError, match="accountant='rdp'"):
        epsilon([count_event(DpEvent.discrete_gaussian)], DELTA, "prv")


def test_accounting_reaches_into_no_private_attribute_of_opacus_or_dp_accounting():
    """Opacus' history goes in through load_state_dict, dp_accounting's curve comes out of
    RdpAccountant.rdp: reading the module, no ``._name`` of another object is touched."""
    import inspect
    import re

    import privacy.accounting

    source = inspect.getsource(privacy.accounting)
    assert not re.findall(r"\w\._[a-z]", source.replace("rdp_analysis", ""))
    assert ".history =" not in source
