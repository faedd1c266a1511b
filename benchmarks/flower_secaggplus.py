"""Flower 1.42's own SecAgg+ for ``secagg.py``: one training round on any Grid.

Flower's SecAgg+ exists only in the legacy API: ``SecAggPlusWorkflow`` as the ``fit_workflow``
of a ``DefaultWorkflow`` under a ``LegacyContext`` (legacy ``Strategy``, ``ClientManager``), and
``secaggplus_mod`` on a ``ClientApp(client_fn=...)`` whose ``NumPyClient.fit`` returns the
model. Both run here on the same in-process Grid as fedcore, so the comparison has no
transport on either side. Without the workflow the same legacy round is Flower's plaintext
``default_fit_workflow``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
from flwr.app import Context, RecordDict
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import Mod
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp import Grid

from fedcore.keys import PARTITION_ID

WEIGHT = 100  # num-examples of every client, as on the fedcore side


def client_app(updates: Mapping[int, np.ndarray], mods: list[Mod], secure: bool) -> ClientApp:
    """A legacy ClientApp whose ``fit`` returns the received model plus the node's fixed
    update (no training), with ``mods`` outside Flower's ``secaggplus_mod``."""

    class Client(NumPyClient):
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def fit(self, parameters, config):
            return [parameters[0] + updates[self.pid]], WEIGHT, {}

    def client_fn(context: Context):
        return Client(int(context.node_config[PARTITION_ID])).to_client()

    return ClientApp(client_fn=client_fn, mods=[*mods, *([secaggplus_mod] if secure else [])])


def run_round(
    grid: Grid,
    cohort: int,
    length: int,
    num_shares: int | None,
    threshold: int | None,
    on_round: Callable[[float, float, np.ndarray], None],
) -> None:
    """One legacy FedAvg round over every node of ``grid``: under SecAgg+ with ``num_shares``
    (self included) and reconstruction ``threshold``, or in plaintext if ``num_shares`` is
    None. ``on_round(wall_s, cpu_s, aggregate)`` receives the fit round alone (the workflow's
    initialisation and its node-registration thread are outside the clock)."""
    strategy = LegacyFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=cohort,
        min_available_clients=cohort,
        initial_parameters=ndarrays_to_parameters([np.zeros(length, np.float32)]),
    )
    inner = (
        SecAggPlusWorkflow(num_shares=num_shares, reconstruction_threshold=threshold)
        if num_shares is not None
        else None
    )

    def timed_fit(grid: Grid, context: LegacyContext) -> None:
        start, cpu = time.perf_counter(), time.process_time()
        if inner is None:
            from flwr.server.workflow.default_workflows import default_fit_workflow

            default_fit_workflow(grid, context)
        else:
            inner(grid, context)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        record = context.state.array_records[MAIN_PARAMS_RECORD]
        on_round(wall, cpu, next(iter(record.values())).numpy())

    context = LegacyContext(
        Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        config=ServerConfig(num_rounds=1),
        strategy=strategy,
    )
    DefaultWorkflow(fit_workflow=timed_fit)(grid, context)
