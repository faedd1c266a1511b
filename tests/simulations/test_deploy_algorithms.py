"""The classic algorithms on deployed SuperNodes: one SuperLink and two SuperNodes as
separate processes on loopback (TLS, node authentication), started once and sent a run of
each task by ``flwr run``, side by side; each ends in the state the in-process engine
reaches, and a run that fails beside them is reported as failed, its directory kept. (A
restarted SuperLink continuing a run from its checkpoint: benchmarks/deploy_resume.py.)"""

import json
import threading

import numpy as np
import pytest
import torch

from fedcore.arrays import to_numpy
from fedcore.cli import scenario_path
from fedcore.config import load_scenario, parse_config
from fedcore.server import RunFailed
from fedcore.tasks import get_algorithm
from simulations.deploy import LocalDeployment
from simulations.engines.inprocess import run_inprocess

pytestmark = pytest.mark.slow

NODES = 2  # (each node is two processes, its SuperNode and its executor: the fewer, the quicker)
PLAIN = {"secagg.mode": "off"}  # (deployed secure aggregation: tests/simulations/test_deploy.py)
RUNS = {  # scenario, overrides: short runs
    "kmeans": ("iris-kmeans", {"train.rounds": 1}),  # the seeding round
    "bayesnet": ("asia-bayesnet", PLAIN | {"train.rounds": 1}),  # counts, CPTs, one step
    "linear": ("linear-diabetes-ridge", PLAIN),  # ridge: one round
}


def _cfg(task):
    scenario, overrides = RUNS[task]
    return load_scenario(scenario_path(scenario), overrides | {"data.num-clients": NODES})


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    cfg = _cfg("kmeans")
    # no node files: each node loads its partition of whatever run it is sent
    with LocalDeployment(tmp_path_factory.mktemp("deploy"), cfg, NODES, node_files=False) as d:
        yield d


FAILING = parse_config(  # every client's update diverges (NaN): no round aggregates
    {
        "data": {"num-clients": NODES},
        "model": {"hidden": [16]},
        "evaluate": {"fraction": 0.0},
        "train": {"rounds": 1, "local-epochs": 1, "lr": 1e38},
    }
)


def test_deployed_runs_reach_the_in_process_state(deployment, tmp_path):
    """The three runs side by side on the same SuperLink and SuperNodes (Flower runs them
    concurrently; each ServerApp and ClientApp its own process), each compared with the
    in-process engine's; beside them a run that fails."""
    paths, errors = {}, []

    def run(task):
        try:
            paths[task] = deployment.run(tmp_path / task, cfg=_cfg(task))
        except Exception as err:  # reported below, with the task
            errors.append(f"{task}: {err!r}")

    def fail():
        try:
            deployment.run(tmp_path / "failed", cfg=FAILING)
        except Exception as err:  # checked below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(task,)) for task in RUNS]
    threads.append(threading.Thread(target=fail))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)

    # the failed run: RunFailed (exit 1 from the CLI), not a deployment error, and its run
    # directory moved out of the temporary workdir
    (failed,) = [e for e in errors if isinstance(e, RunFailed)]
    assert "no round aggregated" in str(failed)
    summary = json.loads((tmp_path / "failed" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["round_status"]["aborted"] == 1
    assert "not finite" in (tmp_path / "failed" / "metrics.jsonl").read_text()

    errors.remove(failed)
    assert not errors and set(paths) == set(RUNS), errors
    for task, path in paths.items():
        deployed = torch.load(path / "model.pt", weights_only=True)  # the clients' part
        simulated = get_algorithm(task).client_state(run_inprocess(_cfg(task), lambda record: None))
        assert set(deployed) == set(simulated), task
        for name, value in simulated.items():
            np.testing.assert_allclose(
                deployed[name].numpy(), to_numpy(value), atol=1e-12, err_msg=f"{task}: {name}"
            )
