"""A deployed node's own data file and its ledger on disk."""

import json

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from clients.handlers import ClientInputError, handle_evaluate, handle_train
from fedcore.arrays import to_record
from fedcore.config import parse_config
from fedcore.datasets import DatasetError
from fedcore.datasets.node import load_node_file, write_node_files
from fedcore.keys import ARRAYS, CONFIG, DATA_PATH, LEDGER, PARTITION_ID, SERVER_ROUND, STATE_DIR
from fedcore.tasks import get_task
from simulations.engines.inprocess import InProcessGrid

CFG = parse_config({"model": {"hidden": [8]}, "train": {"local-epochs": 1}})


@pytest.fixture(autouse=True)
def _flower_task_identity():
    """Flower's Message needs the identity a Grid sets up."""
    with InProcessGrid(parse_config({"data": {"num-clients": 1}})):
        yield


def _digits_file(tmp_path, n=40, test=10):
    rng = np.random.default_rng(0)
    (path,) = write_node_files(
        [
            (
                rng.random((n, 64), np.float32),
                rng.integers(0, 10, n),
                rng.random((test, 64), np.float32),
                rng.integers(0, 10, test),
            )
        ],
        tmp_path,
    )
    return path


def _message(cfg, server_round=1):
    task = get_task(cfg.task)
    model = task.build_model(cfg, task.load_data(cfg), torch.Generator().manual_seed(0))
    content = RecordDict(
        {
            ARRAYS: to_record(model.state_dict()),
            CONFIG: ConfigRecord({SERVER_ROUND: server_round}),
        }
    )
    return Message(content, dst_node_id=1, message_type=MessageType.TRAIN)


def _context(node_config, run_id=7):
    return Context(
        run_id=run_id, node_id=1, node_config=node_config, state=RecordDict(), run_config={}
    )


def test_a_node_trains_and_evaluates_on_its_own_file(tmp_path):
    path = _digits_file(tmp_path, n=40, test=10)
    context = _context({PARTITION_ID: 3, DATA_PATH: str(path)})
    reply = handle_train(_message(CFG), context, CFG)
    assert reply.content["metrics"]["num-examples"] == 40
    reply = handle_evaluate(_message(CFG), context, CFG)
    assert reply.content["metrics"]["num-examples"] == 10


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (None, "does not exist"),
        ({"x_train": np.zeros((3, 5), np.float32), "y_train": np.zeros(3, int)}, r"\(N, 64\)"),
        ({"x_train": np.zeros((3, 64), np.float32), "y_train": np.full(3, 10)}, r"\[0, 10\)"),
        ({"x_train": np.full((3, 64), np.nan, np.float32), "y_train": np.zeros(3, int)}, "finite"),
        ({"y_train": np.zeros(3, int)}, "lacks x_train"),
    ],
)
def test_a_bad_node_file_is_a_clear_client_error(tmp_path, arrays, message):
    path = tmp_path / "mine.npz"
    if arrays is not None:
        np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=message):
        load_node_file(path, "digits")
    context = _context({PARTITION_ID: 0, DATA_PATH: str(path)})
    with pytest.raises(ClientInputError, match=message):
        handle_train(_message(CFG), context, CFG)


def test_a_file_that_is_not_npz_is_refused(tmp_path):
    path = tmp_path / "mine.npz"
    path.write_text("x,y\n1,2\n")
    with pytest.raises(DatasetError, match=r"not a readable \.npz"):
        load_node_file(path, "digits")


def test_the_ledger_survives_a_restarted_node(tmp_path):
    cfg = parse_config(
        {
            "model": {"hidden": [8]},
            "train": {"local-epochs": 1},
            "privacy": {"dp": "sample", "clip-norm": 1.0, "noise-multiplier": 1.0},
        }
    )
    node_config = {
        PARTITION_ID: 0,
        DATA_PATH: str(_digits_file(tmp_path)),
        STATE_DIR: str(tmp_path),
    }
    first = _context(node_config)
    handle_train(_message(cfg, 1), first, cfg)
    restarted = _context(node_config)  # a fresh process: empty Context.state
    handle_train(_message(cfg, 2), restarted, cfg)
    events = [json.loads(e)["round"] for e in restarted.state[LEDGER]["events"]]
    assert events == [1, 2]
    other_run = _context(node_config, run_id=8)  # a new run starts a new ledger
    handle_train(_message(cfg, 1), other_run, cfg)
    assert len(other_run.state[LEDGER]["events"]) == 1
