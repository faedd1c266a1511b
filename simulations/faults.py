"""Fault injection for simulations: Flower client mods that make clients fail on purpose.

Failures are drawn from a generator keyed by (seed, round, partition id), so a scenario
fails the same clients in the same rounds on every engine and every rerun.
"""

from __future__ import annotations

from flwr.app import Context, Message, MessageType
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedcore import seeding
from fedcore.apps import make_client_app
from fedcore.config import RunConfig
from fedcore.keys import CONFIG, PARTITION_ID, SECAGG_STAGE, SERVER_ROUND
from simulations.attacks import attack_mods


class InjectedFault(RuntimeError):
    """A failure the scenario asked for (``faults.client-failure-rate``)."""


def client_fails(cfg: RunConfig, server_round: int, partition_id: int) -> bool:
    """Whether this client crashes in this round under ``cfg.faults``."""
    rate = cfg.faults.client_failure_rate
    if rate <= 0:
        return False
    return bool(
        seeding.numpy_rng(cfg.seed, seeding.FAULTS, server_round, partition_id).random() < rate
    )


def fault_mods(cfg: RunConfig) -> list[Mod]:
    """The client mods that inject the faults ``cfg`` asks for (none by default)."""
    if cfg.faults.client_failure_rate <= 0:
        return []

    def crash_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        config = msg.content.config_records.get(CONFIG)
        stage = config.get(SECAGG_STAGE, "train") if config is not None else None
        if msg.metadata.message_type == MessageType.TRAIN and stage == cfg.faults.crash_stage:
            server_round = int(config.get(SERVER_ROUND, 0))
            pid = int(context.node_config[PARTITION_ID])
            if client_fails(cfg, server_round, pid):
                raise InjectedFault(f"client {pid} crashed in round {server_round} (injected)")
        return call_next(msg, context)

    return [crash_mod]


def simulation_client_app(cfg: RunConfig) -> ClientApp:
    """fedcore's ClientApp for ``cfg`` with the scenario's fault-injection mods and its
    malicious clients' attack (:mod:`simulations.attacks`): what both simulation engines
    serve."""
    return make_client_app(cfg, [*fault_mods(cfg), *attack_mods(cfg)])
