"""The privacy ledger: event validation, filtering and the JSON Lines round trip."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.ledger import NEIGHBOURING, SAMPLINGS, TREES, DpEvent, PrivacyLedger


def make_event(**changes):
    fields = dict(
        mechanism="dp-sgd",
        noise_multiplier=1.1,
        sample_rate=0.01,
        steps=10,
        clip_norm=1.0,
        sampling="poisson",
        neighbouring="example",
        round=1,
        client=0,
    )
    return DpEvent.gaussian(**(fields | changes))


@st.composite
def gaussian_events(draw):
    sampling = draw(st.sampled_from(SAMPLINGS))
    population = draw(st.integers(1, 10**4)) if sampling == "fixed-size" else None
    if population is None:
        sample_rate = 1.0 if sampling == "none" else draw(st.floats(1e-6, 1.0))
    else:  # a whole cohort of the population
        sample_rate = draw(st.integers(1, population)) / population
    replaced = ("local", "node")
    units = (
        [u for u in NEIGHBOURING if u not in replaced] if sampling == "poisson" else NEIGHBOURING
    )
    return DpEvent.gaussian(
        mechanism=draw(st.sampled_from(["dp-sgd", "gaussian"])),
        noise_multiplier=draw(st.floats(1e-3, 1e3)),
        sample_rate=sample_rate,
        steps=draw(st.integers(1, 10**6)),
        clip_norm=draw(st.floats(1e-3, 1e3)),
        sampling=sampling,
        # Poisson sampling is accounted add-or-remove-one: not for a unit replaced whole
        neighbouring=draw(st.sampled_from(units)),
        round=draw(st.integers(0, 10**4)),
        client=draw(st.none() | st.integers(0, 10**4)),
        population=population,
    )


@st.composite
def count_events(draw):
    """Laplace and discrete Gaussian releases, the mechanisms for counts."""
    build = draw(st.sampled_from([DpEvent.laplace, DpEvent.discrete_gaussian]))
    return build(
        mechanism=draw(st.sampled_from(["laplace", "discrete-gaussian", "count table"])),
        noise_multiplier=draw(st.floats(1e-3, 1e3)),
        steps=draw(st.integers(1, 10**6)),
        clip_norm=draw(st.floats(1e-3, 1e3)),
        neighbouring="record",
        round=draw(st.integers(0, 10**4)),
        client=draw(st.none() | st.integers(0, 10**4)),
    )


events = gaussian_events


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mechanism", ""),
        ("noise_multiplier", 0.0),
        ("noise_multiplier", float("inf")),
        ("noise_multiplier", float("nan")),
        ("sample_rate", 0.0),
        ("sample_rate", 1.5),
        ("steps", 0),
        ("steps", 2.0),
        ("clip_norm", -1.0),
        ("sampling", "shuffle"),
        ("neighbouring", "user"),
        ("round", -1),
        ("client", "3"),
    ],
)
def test_invalid_event_field_raises_error_naming_it(field, value):
    with pytest.raises(ValueError, match=field):
        make_event(**{field: value})


def test_choice_error_lists_allowed_values():
    with pytest.raises(ValueError, match="fixed-size"):
        make_event(sampling="shuffle")


def test_event_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_event().steps = 3


def test_integer_noise_multiplier_is_stored_as_float():
    assert isinstance(make_event(noise_multiplier=2).noise_multiplier, float)


def test_from_dict_rejects_unknown_key():
    with pytest.raises(ValueError, match="extra"):
        DpEvent.from_dict(make_event().to_dict() | {"extra": 1})


def test_from_dict_rejects_missing_key():
    data = make_event().to_dict()
    del data["round"]
    with pytest.raises(ValueError, match="round"):
        DpEvent.from_dict(data)
    data = make_event().to_dict()
    del data["dp_event"]["count"]
    with pytest.raises(ValueError, match=r"SelfComposedDpEvent.*count"):
        DpEvent.from_dict(data)


def test_record_returns_new_ledger_and_leaves_old_unchanged():
    empty = PrivacyLedger()
    one = empty.record(make_event())
    assert len(empty) == 0
    assert one.events == (make_event(),)


def test_record_rejects_non_events():
    with pytest.raises(TypeError):
        PrivacyLedger().record({"mechanism": "dp-sgd"})


def test_for_client_keeps_only_that_clients_events():
    ledger = PrivacyLedger().record(
        make_event(client=0), make_event(client=1), make_event(client=None), make_event(client=0)
    )
    assert [e.client for e in ledger.for_client(0).events] == [0, 0]
    assert [e.client for e in ledger.for_client(None).events] == [None]
    assert ledger.clients() == [0, 1]


def test_up_to_round_keeps_rounds_at_or_before_it_in_order():
    ledger = PrivacyLedger().record(*(make_event(round=r, steps=r + 1) for r in (3, 1, 2, 5)))
    assert [e.round for e in ledger.up_to_round(2).events] == [1, 2]
    assert ledger.up_to_round(0).events == ()


@settings(max_examples=50, deadline=None)
@given(st.lists(gaussian_events() | count_events(), max_size=8))
def test_jsonl_round_trips(event_list):
    ledger = PrivacyLedger(tuple(event_list))
    assert PrivacyLedger.from_jsonl(ledger.to_jsonl()) == ledger


def test_save_and_load_round_trip(tmp_path):
    ledger = PrivacyLedger().record(make_event(), make_event(client=None, round=2))
    ledger.save(tmp_path / "ledger.jsonl")
    assert PrivacyLedger.load(tmp_path / "ledger.jsonl") == ledger


@pytest.mark.parametrize(
    "bad_line", ["{not json", "[1, 2]", '{"mechanism": "dp-sgd"}', '{"steps": -1}']
)
def test_malformed_jsonl_line_names_its_line_number(bad_line):
    good = PrivacyLedger().record(make_event()).to_jsonl()
    with pytest.raises(ValueError, match="line 3"):
        PrivacyLedger.from_jsonl(good + "\n" + bad_line + "\n")


def test_invalid_event_values_in_jsonl_are_rejected():
    line = PrivacyLedger().record(make_event()).to_jsonl().replace('"example"', '"user"')
    with pytest.raises(ValueError, match=r"line 1.*neighbouring"):
        PrivacyLedger.from_jsonl(line)


def test_fixed_size_sampling_needs_the_population():
    with pytest.raises(ValueError, match="population"):
        make_event(sampling="fixed-size")


def test_population_must_hold_a_whole_cohort():
    with pytest.raises(ValueError, match="whole cohort"):
        make_event(sampling="fixed-size", sample_rate=0.015, population=100)


@settings(max_examples=50, deadline=None)
@given(gaussian_events())
def test_a_gaussian_reads_back_what_it_was_built_with(event):
    """The tree says how the units were sampled and how often the release ran."""
    tree = event.dp_event
    assert event.steps == (tree.count if type(tree).__name__ == "SelfComposedDpEvent" else 1)
    release = event.release
    expected = {
        "PoissonSampledDpEvent": "poisson",
        "SampledWithoutReplacementDpEvent": "fixed-size",
        "GaussianDpEvent": "none",
    }
    assert event.sampling == expected[type(release).__name__]
    replace_one = event.sampling == "fixed-size" or event.neighbouring in ("local", "node")
    assert event.relation == ("replace-one" if replace_one else "add-or-remove-one")
    leaf = release if event.sampling == "none" else release.event
    assert leaf.noise_multiplier == event.noise_multiplier / (2 if replace_one else 1)


def test_gaussian_fields_match_the_arguments():
    event = make_event(sampling="fixed-size", sample_rate=0.1, population=100, steps=3)
    assert (event.sampling, event.sample_rate, event.population, event.steps) == (
        "fixed-size",
        0.1,
        100,
        3,
    )
    assert (make_event().sampling, make_event().sample_rate, make_event().population) == (
        "poisson",
        0.01,
        None,
    )


def test_flat_events_of_earlier_versions_read_as_gaussians():
    """A node's ledger file written before the ledger held trees keeps its budget."""
    flat = dict(
        mechanism="dp-sgd",
        noise_multiplier=1.1,
        sample_rate=0.01,
        steps=10,
        clip_norm=1.0,
        sampling="poisson",
        neighbouring="example",
        round=1,
        client=0,
        population=None,
    )
    assert DpEvent.from_dict(flat) == make_event()
    with pytest.raises(ValueError, match="extra"):
        DpEvent.from_dict(flat | {"extra": 1})


def test_a_tree_the_accountants_cannot_compose_is_refused():
    from dp_accounting import dp_event

    event = make_event()
    with pytest.raises(ValueError, match="NonPrivateDpEvent"):
        dataclasses.replace(event, dp_event=dp_event.NonPrivateDpEvent())
    with pytest.raises(ValueError, match="noise_multiplier"):
        dataclasses.replace(event, dp_event=dp_event.GaussianDpEvent(0.0))
    data = event.to_dict()
    data["dp_event"]["event"] = {"type": "UnsupportedDpEvent"}
    with pytest.raises(ValueError, match="UnsupportedDpEvent"):
        DpEvent.from_dict(data)


def test_any_tree_of_the_supported_types_is_a_ledger_event():
    """A new mechanism needs no new enum: any composition of `TREES` records and round-trips."""
    from dp_accounting import dp_event

    tree = dp_event.ComposedDpEvent(
        [
            dp_event.SelfComposedDpEvent(dp_event.LaplaceDpEvent(2.0), 3),
            dp_event.PoissonSampledDpEvent(0.1, dp_event.GaussianDpEvent(1.5)),
            dp_event.ZCDpEvent(0.01),
        ]
    )
    event = DpEvent("sketch", tree, "add-or-remove-one", "record", 4, 2, 1.0, 1.5)
    assert {type(t).__name__ for t in (tree, *tree.events)} <= set(TREES)
    assert event.sampling is None and event.sample_rate is None and event.steps == 1
    assert DpEvent.from_dict(event.to_dict()) == event


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # local DP stated add-or-remove-one: the accountant would take twice the noise
        ({"relation": "add-or-remove-one"}, "replace-one"),
        # the field says the configured noise, the tree the accountant reads says more
        ({"noise_multiplier": 4.0}, "does not match"),
    ],
)
def test_a_tree_that_disagrees_with_its_event_is_refused(changes, message):
    """Built directly or read from JSON, an event cannot state its release under another
    relation, or with another noise, than the one it ran with."""
    local = DpEvent.gaussian("gaussian", 2.0, 1.0, 1, 1.0, "none", "local", 1, 0)
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(local, **changes)
    with pytest.raises(ValueError, match=message):
        DpEvent.from_dict(local.to_dict() | changes)


def test_sampling_and_relation_must_agree_and_counts_stay_finite():
    from dp_accounting import dp_event

    poisson = make_event()
    with pytest.raises(ValueError, match="Poisson"):
        dataclasses.replace(poisson, relation="replace-one", neighbouring="local")
    wor = make_event(sampling="fixed-size", sample_rate=0.1, population=100)
    with pytest.raises(ValueError, match="without replacement"):
        dataclasses.replace(wor, relation="add-or-remove-one")
    huge = dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(1.0), 10**400)
    with pytest.raises(ValueError, match="count"):
        DpEvent("gaussian", huge, "add-or-remove-one", "client", 1, None, 1.0, 1.0)
