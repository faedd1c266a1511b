"""A client's report of the DP mechanism it applied is input to the server's ledger: a
malformed one, or one that would under-report epsilon or break the run's privacy report, is
refused at the door, not written where the report reads it."""

import json

import pytest
from flwr.app import ConfigRecord

from fedcore.apps import make_client_app
from fedcore.config import parse_config
from fedcore.keys import DP_EVENT, DP_EVENT_JSON, PARTITION_ID
from fedcore.server import run_server
from privacy.ledger import DpEvent
from simulations.engines.inprocess import InProcessGrid

LOCAL_DP = {
    "data": {"num-clients": 3, "partition": "iid"},
    "model": {"hidden": [8]},
    "train": {"rounds": 1, "local-epochs": 1},
    "evaluate": {"fraction": 0.0},
    "privacy": {"dp": "local", "noise-multiplier": 1.0, "clip-norm": 1.0},
}


def _malformed(event: dict) -> dict:
    return {"mechanism": "gaussian", "noise_multiplier": "none"}


def _add_or_remove(event: dict) -> dict:
    """Local DP restated under add-or-remove-one with the un-halved noise: half the epsilon."""
    tree = event["dp_event"] | {"noise_multiplier": event["noise_multiplier"]}
    return event | {"relation": "add-or-remove-one", "dp_event": tree}


def _more_noise_in_the_tree(event: dict) -> dict:
    """The configured noise in the field, a million times it in the tree the accountant reads."""
    return event | {"dp_event": event["dp_event"] | {"noise_multiplier": 1e6}}


def _uncomposable(event: dict) -> dict:
    """A tree of whitelisted types that dp_accounting cannot compose: the report would fail."""
    laplace = {"type": "LaplaceDpEvent", "noise_multiplier": 1.0}
    tree = {"type": "PoissonSampledDpEvent", "sampling_probability": 0.5, "event": laplace}
    return event | {"mechanism": "sketch", "relation": "add-or-remove-one", "dp_event": tree}


def _as_the_server(event: dict) -> dict:
    return event | {"client": None}


def _another_round(event: dict) -> dict:
    return event | {"round": 10**12}


@pytest.mark.parametrize(
    "lie",
    [
        _malformed,
        _add_or_remove,
        _more_noise_in_the_tree,
        _uncomposable,
        _as_the_server,
        _another_round,
    ],
)
def test_a_reply_with_a_bad_dp_event_is_dropped_and_the_rest_recorded(lie):
    """Client 0 lies about the mechanism it applied. The previous server appended any event
    to the run's ledger unread (the malformed one left a ledger no report could load; the
    others parsed, and under-reported epsilon or broke the report)."""

    def lying(msg, context, call_next):
        reply = call_next(msg, context)
        if int(context.node_config[PARTITION_ID]) == 0 and DP_EVENT in reply.content:
            honest = json.loads(str(reply.content[DP_EVENT][DP_EVENT_JSON]))
            bogus = json.dumps(lie(honest))
            reply.content[DP_EVENT] = ConfigRecord({DP_EVENT_JSON: bogus})
        return reply

    cfg = parse_config(LOCAL_DP)
    rounds = []
    with InProcessGrid(cfg, client_app=make_client_app(cfg, mods=[lying])) as grid:
        run_server(grid, cfg, on_round=rounds.append)
    events = [DpEvent.from_dict(e) for e in rounds[0]["privacy-events"]]
    assert sorted(e.client for e in events) == [1, 2]
    assert rounds[0]["aggregated-clients"] == 2
