"""A deployed node's own data file and its ledger on disk."""

import json

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from clients.handlers import ClientInputError, handle_evaluate, handle_train
from clients.policy import PolicyViolation
from clients.privacy import BudgetExhausted
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
    with pytest.raises(DatasetError, match=r"not a readable NPZ file"):
        load_node_file(path, "digits")


def _dp(**privacy):
    settings = {"dp": "sample", "clip-norm": 1.0, "noise-multiplier": 1.0} | privacy
    return parse_config(
        {
            "model": {"hidden": [8]},
            "train": {"local-epochs": 1},
            "evaluate": {"fraction": 0.0},
            "privacy": settings,
        }
    )


def test_the_ledger_survives_a_restarted_node(tmp_path):
    cfg = _dp()
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
    # privacy is spent on the data, whichever run spends it: a new run on the same file
    # continues its ledger
    other_run = _context(node_config, run_id=8)
    handle_train(_message(cfg, 1), other_run, cfg)
    assert len(other_run.state[LEDGER]["events"]) == 3


def _node(tmp_path, **policy):
    return {
        PARTITION_ID: 0,
        DATA_PATH: str(_digits_file(tmp_path)),
        STATE_DIR: str(tmp_path / "state"),
        **{f"policy-{k.replace('_', '-')}": v for k, v in policy.items()},
    }


def test_a_node_refuses_a_run_with_less_noise_than_its_policy(tmp_path):
    node = _node(tmp_path, min_noise_multiplier=1.0)
    with pytest.raises(PolicyViolation, match="below this node's policy-min-noise-multiplier"):
        handle_train(_message(CFG), _context(node), _dp(**{"noise-multiplier": 0.5}))
    with pytest.raises(PolicyViolation, match="requires noise"):
        handle_train(_message(CFG), _context(node), CFG)  # a run without DP at all
    handle_train(_message(CFG), _context(node), _dp(**{"noise-multiplier": 1.0}))


def test_a_deployed_node_refuses_seeded_noise_and_clear_evaluation(tmp_path):
    node = _node(tmp_path)
    with pytest.raises(PolicyViolation, match="seeded-noise"):
        handle_train(_message(CFG), _context(node), _dp(**{"seeded-noise": True}))
    cfg = parse_config(
        {
            "model": {"hidden": [8]},
            "privacy": {
                "dp": "sample",
                "clip-norm": 1.0,
                "noise-multiplier": 1.0,
                "clear-evaluation": True,
            },
        }
    )
    with pytest.raises(PolicyViolation, match="clear-evaluation"):
        handle_evaluate(_message(CFG), _context(node), cfg)


def test_a_node_caps_the_epsilon_its_data_spends_across_runs(tmp_path):
    cfg = _dp()
    one = _context(_node(tmp_path), run_id=1)
    handle_train(_message(cfg, 1), one, cfg)
    spent = float(handle_train(_message(cfg, 2), one, cfg).content["metrics"]["epsilon"])
    # the operator allows a little more than two rounds' worth, whatever the runs ask for
    node = _node(tmp_path, max_epsilon=spent * 1.05)
    second_run = _context(node, run_id=2)
    with pytest.raises(BudgetExhausted, match="budget"):
        handle_train(_message(cfg, 1), second_run, cfg)


def test_a_node_requires_secure_aggregation_if_its_policy_says_so(tmp_path):
    node = _node(tmp_path, min_secagg_threshold=0.5)
    with pytest.raises(PolicyViolation, match="secure aggregation"):
        handle_train(_message(CFG), _context(node), CFG)


def test_a_malformed_policy_value_is_a_clear_error(tmp_path):
    node = {**_node(tmp_path), "policy-max-epsilon": "lots"}
    with pytest.raises(PolicyViolation, match="policy-max-epsilon"):
        handle_train(_message(CFG), _context(node), CFG)
    node = {**_node(tmp_path), "policy-max-epsilonn": 1.0}
    with pytest.raises(PolicyViolation, match="unknown node config key"):
        handle_train(_message(CFG), _context(node), CFG)


def test_a_task_that_reads_no_node_file_refuses_a_node_that_has_one(tmp_path):
    """fedsgd (an algorithm) reads partitions only: a node with its own file is refused,
    not silently given partition 0 of the run's dataset to train on."""
    cfg = parse_config({"task": "fedsgd", "model": {"hidden": [8]}})
    state = get_task("fedsgd").init(cfg, get_task("fedsgd").load_data(cfg), None)
    message = Message(
        RecordDict({ARRAYS: to_record(state), CONFIG: ConfigRecord({SERVER_ROUND: 1})}),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
    )
    context = _context({PARTITION_ID: 0, DATA_PATH: str(_digits_file(tmp_path))})
    with pytest.raises(ClientInputError, match="which task 'fedsgd' does not read"):
        handle_train(message, context, cfg)
