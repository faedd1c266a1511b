"""Suite-wide collection order: the slow tests first, the deployed ones before them all.

`make test` runs pytest-xdist's work stealing, which hands each worker a contiguous share of
the collected tests and lets idle workers take from the end of busy ones' shares. Collected
last, the deployed node-kill test (about 6 minutes, mostly waiting on heartbeats) started
after 5 minutes of the rest and ran alone at the end; collected first, it starts at once
and the other workers take the rest of its worker's share."""

import pytest


def _rank(item: pytest.Item) -> int:
    if "slow" not in item.keywords:
        return 2
    return 0 if "test_deploy" in item.nodeid else 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: the order within each rank is the collection's
