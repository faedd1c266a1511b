"""A client's report of the DP mechanism it applied is input to the server's ledger: a
malformed one is refused at the door, not written where the privacy report cannot read it."""

import json

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


def test_a_reply_with_a_malformed_dp_event_is_dropped_and_the_rest_recorded():
    """Client 0 sends a DP event no ledger can hold; the previous server appended it to
    the run's ledger unread, so the report of the run failed to load it."""

    def lying(msg, context, call_next):
        reply = call_next(msg, context)
        if int(context.node_config[PARTITION_ID]) == 0 and DP_EVENT in reply.content:
            bogus = json.dumps({"mechanism": "gaussian", "noise_multiplier": "none"})
            reply.content[DP_EVENT] = ConfigRecord({DP_EVENT_JSON: bogus})
        return reply

    cfg = parse_config(LOCAL_DP)
    rounds = []
    with InProcessGrid(cfg, client_app=make_client_app(cfg, mods=[lying])) as grid:
        run_server(grid, cfg, on_round=rounds.append)
    events = [DpEvent.from_dict(e) for e in rounds[0]["privacy-events"]]
    assert sorted(e.client for e in events) == [1, 2]
    assert rounds[0]["aggregated-clients"] == 2
