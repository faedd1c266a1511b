"""A round's bytes are the messages as Flower serializes them (issue 18), counted cheaply."""

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.serde import message_to_proto

from fedcore import server
from fedcore.arrays import from_numpy


def _message(entries: int) -> Message:
    arrays = {f"w{i}": from_numpy(np.ones(entries, np.float32)) for i in range(4)}
    content = RecordDict({"arrays": ArrayRecord(arrays), "config": ConfigRecord({"k": 1})})
    return Message(content, dst_node_id=7, message_type="train", group_id="g")


def test_small_messages_count_exactly_and_large_ones_within_bytes():
    from flwr.supercore.task_identity import TaskIdentity

    # (a server process has these set; the in-process engine sets them the same way)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    small, large = _message(1000), _message(300_000)  # 16 KB and 4.8 MB of arrays
    assert server._payload_bytes(small) == message_to_proto(small).ByteSize()
    whole = message_to_proto(large).ByteSize()
    assert abs(server._payload_bytes(large) - whole) <= 16 * 4  # nested length prefixes
    assert server._payload_bytes(large) > 4 * 4 * 300_000
