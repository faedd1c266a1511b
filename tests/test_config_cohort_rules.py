"""Settings that could only fail at run time (a hang, an aborted round, silently merged
clients) are refused when the config is parsed, with the reason (issue 17, finding 4)."""

from __future__ import annotations

import pytest

from fedcore.config import ConfigError, parse_config
from fedcore.datasets import femnist, load_dataset

SECAGG = {"mode": "full", "bound": 4.0}


def _error(raw: dict) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    return str(err.value)


def test_min_clients_above_the_number_of_clients_is_refused():
    """It used to wait 300 s for nodes that never come, then raise TimeoutError."""
    message = _error({"data": {"num-clients": 4}, "train": {"min-clients": 5}})
    assert "train.min-clients = 5" in message and "data.num-clients = 4" in message


def test_min_clients_equal_to_the_number_of_clients_is_accepted():
    assert parse_config({"data": {"num-clients": 4}, "train": {"min-clients": 4}})


@pytest.mark.parametrize(("clients", "malicious"), [(4, 1), (5, 2), (3, 3), (10, 4)])
def test_krum_with_too_many_malicious_clients_for_its_cohort_is_refused(clients, malicious):
    """Krum scores each update by its n - f - 2 nearest others: it needs n >= 2 f + 3."""
    message = _error(
        {
            "data": {"num-clients": clients},
            "strategy": {"name": "krum", "num-malicious": malicious},
        }
    )
    assert "strategy.num-malicious" in message and f"{2 * malicious + 3}" in message


def test_krum_counts_the_sampled_cohort_not_every_client():
    message = _error(
        {
            "data": {"num-clients": 10},
            "train": {"fraction": 0.3},
            "strategy": {"name": "krum", "num-malicious": 1},
        }
    )
    assert "cohort of 3" in message


def test_krum_with_a_large_enough_cohort_is_accepted():
    cfg = parse_config(
        {"data": {"num-clients": 5}, "strategy": {"name": "krum", "num-malicious": 1}}
    )
    assert cfg.strategy.num_malicious == 1


def test_num_malicious_is_not_judged_for_strategies_that_do_not_read_it():
    assert parse_config({"data": {"num-clients": 2}, "strategy": {"num-malicious": 3}})


def test_poisson_cohorts_often_below_the_secure_minimum_are_refused():
    """Ten clients at rate 0.5: one round in 18 samples 1 or 2 clients, which secure
    aggregation cannot sum (the round aborts)."""
    message = _error(
        {
            "data": {"num-clients": 10},
            "train": {"sampling": "poisson", "fraction": 0.5},
            "secagg": SECAGG,
        }
    )
    assert "poisson" in message and "5.4%" in message and "fixed-size" in message


def test_poisson_cohorts_that_are_rarely_small_are_accepted_under_secure_aggregation():
    cfg = parse_config(
        {
            "data": {"num-clients": 100},
            "train": {"sampling": "poisson", "fraction": 0.2},
            "secagg": SECAGG,
        }
    )
    assert cfg.train.sampling == "poisson"


@pytest.mark.parametrize("clients", [10, 104])
def test_femnist_natural_split_with_fewer_clients_than_writers_is_refused(clients):
    """partition.natural would merge writers i, i + k, ... into one client, silently."""
    message = _error(
        {"data": {"dataset": "femnist", "partition": "natural", "num-clients": clients}}
    )
    assert "105 writers" in message and f"data.num-clients = {clients}" in message


def test_femnist_natural_split_has_exactly_its_writers_as_clients():
    assert parse_config(
        {"data": {"dataset": "femnist", "partition": "natural", "num-clients": 105}}
    )
    assert len(set(load_dataset("femnist").groups_train.tolist())) == femnist.WRITERS == 105
