"""The deployed runtime, for real: a SuperLink and three SuperNodes as separate processes on
loopback, with TLS and SuperNode authentication, started by ``flwr run``."""

import json
import threading
import time

import pytest

from fedcore.certs import write_node_keys, write_server_certs
from fedcore.config import parse_config
from privacy.ledger import PrivacyLedger
from simulations import runner
from simulations.deploy import DeploymentError, LocalDeployment

pytestmark = pytest.mark.slow

SETTINGS = {
    "data": {"num-clients": 5},  # secure aggregation's floor: 4 of 5 survive one dropout
    "model": {"hidden": [16]},
    "train": {"rounds": 3, "local-epochs": 1},
    "evaluate": {"fraction": 0.0},
    # a dead node costs a stage this long (the nodes' warm executors answer a stage in a few
    # seconds, the first one in 10-20 s on 2 cores beside the other test workers); a killed
    # node is let back in 10-20 s later (two missed 10 s heartbeats), by the third round
    "engine": {"timeout": 40.0},
    "secagg": {"mode": "full"},
    "privacy": {"dp": "sample", "clip-norm": 1.0, "noise-multiplier": 1.0},
}


# session-scoped: a pytest-xdist worker may run another module's test between these, and a
# module-scoped deployment would then be torn down and started again (40 s each time)
@pytest.fixture(scope="session")
def deployment(tmp_path_factory):
    with LocalDeployment(tmp_path_factory.mktemp("deploy"), parse_config(SETTINGS), 5) as d:
        yield d
    for process in d.processes.values():  # every process it started is gone
        assert not process.alive()


def test_a_node_killed_mid_round_drops_out_and_rejoins_with_its_ledger(deployment, tmp_path):
    """Secure aggregation and DP over TLS: node 2 is killed in round 1 once it has trained
    (its ledger is on disk), so it drops out of that round; restarted (as soon as the
    SuperLink lets its key back in), it takes part in the last round with its accounting
    resumed. The run completes."""
    result = {}
    run = threading.Thread(target=lambda: result.update(path=deployment.run(tmp_path / "run")))
    run.start()
    state = deployment.workdir / "state-2"
    deadline = time.monotonic() + 600
    while not list(state.glob("ledger-data-*.json")) and time.monotonic() < deadline:
        assert run.is_alive(), "the run ended before node 2 trained"
        time.sleep(0.2)
    deployment.kill_node(2)
    deployment.restart_node(2)
    run.join(timeout=max(1.0, deadline - time.monotonic()))
    assert not run.is_alive() and "path" in result, "the deployed run did not finish"
    path = result["path"]

    rounds = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert rounds[0]["train"]["secure-sum"] == 4 and len(rounds[0]["train-failures"]) == 1
    assert rounds[-1]["train"]["secure-sum"] == 5 and rounds[-1]["train-failures"] == []
    assert json.loads((path / "summary.json").read_text())["status"] == "completed"
    # each node's messages ran in its warm executor, not in a fresh process each
    for i in (0, 1, 3, 4):
        log = (deployment.workdir / "logs" / f"node-{i}-exec.log").read_text()
        assert log.count("Warm SuperExec: task") >= 3 * 4, log  # 3 rounds of 4 stages

    # the same kind of run directory and report as a simulation, but for the partition
    # report: the deployed server holds no client's data
    simulated = runner.simulate(parse_config(SETTINGS), out=tmp_path / "sim", progress=False)
    expected = {p.name for p in simulated.path.iterdir()} - {"partition.json"}
    assert {p.name for p in path.iterdir()} == expected
    report = json.loads((path / "privacy_report.json").read_text())
    assert set(report["clients"]) == {"0", "1", "2", "3", "4"}

    # node 2's round-1 training stays accounted on the node, though it left no update
    ledger = PrivacyLedger.load(path / "ledger.jsonl")
    in_sums = [e.round for e in ledger.for_client(2).events]
    assert 1 not in in_sums and in_sums[-1] == 3
    (on_node,) = state.glob("ledger-data-*.json")
    assert [json.loads(e)["round"] for e in json.loads(on_node.read_text())] == [1, *in_sums]


def test_a_run_the_nodes_hold_no_data_for_is_refused_before_it_starts(deployment, tmp_path):
    with pytest.raises(DeploymentError, match="task, data or seed differ"):
        deployment.run(tmp_path / "other", cfg=parse_config(SETTINGS | {"seed": 7}))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("mine")  # an empty --out would be used
    before = set(deployment._runs())
    with pytest.raises(FileExistsError, match="taken is not empty"):
        deployment.run(tmp_path / "taken")
    assert set(deployment._runs()) == before  # refused before flwr run, not after


def test_an_unregistered_node_is_refused(deployment, tmp_path):
    write_node_keys(deployment.certs, "intruder")
    node = deployment.start_node(0, key="intruder")
    node.popen.wait(timeout=120)
    assert node.popen.returncode != 0
    assert "Failed to activate SuperNode" in node.log.read_text()


def test_a_node_with_another_ca_cannot_connect(deployment, tmp_path):
    other = write_server_certs(tmp_path / "other-ca", ["localhost", "127.0.0.1"])
    node = deployment.start_node(1, root_certificates=other.ca_cert)
    node.popen.wait(timeout=120)
    assert node.popen.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in node.log.read_text()
