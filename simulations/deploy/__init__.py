"""Local multi-process deployment: a SuperLink and N SuperNodes on loopback, run with ``flwr run``.

The same fedcore app that runs in simulation runs here on Flower's deployment runtime, as
separate processes that talk over TLS (on by default) with SuperNode authentication. Each
SuperNode reads only its own data file (``fedcore.datasets.node``) and keeps its privacy
ledger in its own state folder, so a node that is killed and restarted resumes its
accounting. :class:`LocalDeployment` starts everything in a work folder and stops every
process it started when it exits, also on Ctrl-C or an error::

    with LocalDeployment(Path("deploy"), cfg, nodes=3) as deployment:
        run_dir = deployment.run(out=Path("runs/deployed"))

Flower 1.42 serves the Fleet, Control and ServerAppIo APIs on one port. Runtime dependency
installation is disabled (it would run ``uv sync`` against the internet); the processes use
this environment.

Modules: :mod:`.files` (what is written first), :mod:`.processes` (starting and stopping
them), :mod:`.local` (:class:`LocalDeployment`), :mod:`.follow` (a run's rounds as they land).
"""

from simulations.deploy.errors import DeploymentError
from simulations.deploy.files import (
    CONNECTION,
    HOST,
    app_dir,
    flwr_config_toml,
    node_config_arg,
    toml_string,
    write_client_files,
)
from simulations.deploy.local import LocalDeployment
from simulations.deploy.processes import free_port

__all__ = [
    "CONNECTION",
    "HOST",
    "DeploymentError",
    "LocalDeployment",
    "app_dir",
    "flwr_config_toml",
    "free_port",
    "node_config_arg",
    "toml_string",
    "write_client_files",
]
