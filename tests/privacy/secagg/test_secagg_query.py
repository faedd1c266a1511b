"""The secure-aggregation mod on the secure-sum service's query messages, played by a server
that breaks the rules: it never gets a node's vector unmasked, nor reuses a training round's
protocol state for a query."""

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from fedcore.config import parse_config, to_run_config
from fedcore.keys import CONFIG, METRICS, PARTITION_ID, SECAGG_STAGE, SECAGG_STATE, SERVER_ROUND
from privacy.secagg.mod import SecAggClientError, secagg_mod


@pytest.fixture(autouse=True)
def _server_identity():  # what a Grid sets before the server builds a message
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID


CFG = parse_config({})  # secagg.mode off: a query's sum is masked all the same


def _message(kind: str, stage: str) -> Message:
    config = ConfigRecord({SERVER_ROUND: 0, SECAGG_STAGE: stage, "secagg-bits": 32})
    return Message(RecordDict({CONFIG: config}), dst_node_id=1, message_type=kind)


def _context() -> Context:
    return Context(1, 1, {PARTITION_ID: 0}, RecordDict(), to_run_config(CFG))


def test_a_query_handler_that_sends_no_vector_to_mask_is_refused():
    mod = secagg_mod(lambda context: CFG)

    def handler(msg, context):  # replies in the clear, with nothing for the mod to mask
        return Message(RecordDict({METRICS: MetricRecord({"x": 1.0})}), reply_to=msg)

    with pytest.raises(SecAggClientError, match="no vector to mask"):
        mod(_message(MessageType.QUERY, "input"), _context(), handler)


def test_a_query_stage_on_a_training_rounds_state_is_refused():
    mod = secagg_mod(lambda context: CFG)
    context = _context()
    context.state[SECAGG_STATE] = ConfigRecord({"round": 0, "kind": MessageType.TRAIN})
    with pytest.raises(SecAggClientError, match="without a query input stage"):
        mod(_message(MessageType.QUERY, "masked-input"), context, lambda m, c: m)
