"""The ``ray`` engine on a real Ray cluster: two Ray nodes on loopback (``ray start --head``
and ``ray start --address``, as docs/ray-cluster.md shows), one CPU each, and a run attached
to it with ``engine.address``. The clients run on both nodes, and the run ends on the model
the in-process engine reaches; under secure aggregation, so that this also checks the whole
protocol on Ray's actors."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

from fedcore.config import ConfigError, parse_config
from simulations.engines.inprocess import run_inprocess
from simulations.engines.ray_engine import run_ray

pytestmark = pytest.mark.slow

SETTINGS = {
    "data": {"num-clients": 4},
    "train": {"rounds": 2, "local-epochs": 1},
    "model": {"hidden": [32]},
    "secagg": {"mode": "full"},
}
RAY = str(Path(sys.executable).parent / "ray")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _ray_start(temp: Path, *args: str) -> None:
    # every port of its own: another test's Ray may run beside this cluster
    names = ["node-manager", "object-manager", "ray-client-server", "dashboard-agent-listen"]
    names += ["dashboard-agent-grpc", "metrics-export", "runtime-env-agent"]
    free = _free_ports(len(names))
    ports = [a for name, p in zip(names, free, strict=True) for a in (f"--{name}-port", str(p))]
    done = subprocess.run(
        [
            RAY,
            "start",
            *args,
            "--num-cpus",
            "1",
            "--node-ip-address",
            "127.0.0.1",
            *ports,
            "--temp-dir",
            str(temp),
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node on loopback; stopped by killing the processes of its own
    temporary directory (``ray stop`` would stop every Ray on the machine)."""
    temp = Path(f"/tmp/fc-ray-{_free_ports(1)[0]}")  # short: Ray's socket paths have a limit
    (port,) = _free_ports(1)
    try:
        _ray_start(temp, "--head", "--port", str(port), "--include-dashboard", "false")
        _ray_start(temp, "--address", f"127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        ours = [
            p
            for p in psutil.process_iter(["cmdline"])
            if str(temp) in " ".join(p.info["cmdline"] or [])
        ]
        for process in ours:
            process.kill()
        psutil.wait_procs(ours, timeout=30)


def _actor_nodes(address: str) -> list[str]:
    """The nodes the run's client actors lived on, from Ray's GCS (the public state API
    needs Ray's dashboard, which is not installed)."""
    import ray
    from ray._private.state import actors

    ray.init(address=address)
    try:
        return [
            a["Address"]["NodeID"]
            for a in actors().values()
            if a["ActorClassName"] == "ClientAppActor"
        ]
    finally:
        ray.shutdown()


def test_a_run_on_a_two_node_cluster_uses_both_and_matches_the_in_process_engine(cluster):
    rounds, ours_rounds = [], []
    ray_model = run_ray(
        parse_config(SETTINGS | {"engine": {"name": "ray", "address": cluster}}), rounds.append
    )
    ours = run_inprocess(parse_config(SETTINGS), ours_rounds.append)
    assert len(set(_actor_nodes(cluster))) == 2
    for k in ours:  # the same masked updates; the order of the float64 sum may differ
        np.testing.assert_allclose(ray_model[k].numpy(), ours[k].numpy(), rtol=0, atol=1e-6)
    assert [r["train"]["secure-sum"] for r in rounds] == [4.0, 4.0]
    assert [r["train-clients"] for r in rounds] == [r["train-clients"] for r in ours_rounds]
    assert rounds[-1]["server-eval"]["accuracy"] == pytest.approx(
        ours_rounds[-1]["server-eval"]["accuracy"], abs=1e-3
    )


def test_an_address_nothing_listens_at_is_refused_at_once(tmp_path):
    (port,) = _free_ports(1)
    cfg = parse_config({"engine": {"name": "ray", "address": f"127.0.0.1:{port}"}})
    with pytest.raises(ConfigError, match="no Ray cluster there"):
        run_ray(cfg, lambda record: None)
    with pytest.raises(ConfigError, match="give HOST:PORT or 'auto'"):
        run_ray(parse_config({"engine": {"name": "ray", "address": "nohost"}}), print)


def test_cluster_settings_need_the_ray_engine():
    for key, value in (("address", "127.0.0.1:6379"), ("gpus", 0.5)):
        with pytest.raises(ConfigError, match=f"engine.{key} applies only with"):
            parse_config({"engine": {key: value}})
