"""The ``ray`` engine: Flower's own simulation runtime (``run_simulation``, Ray backend).

This is the path that scales to a Ray cluster: ``engine.address`` attaches it to one that is
running (``ray start --head`` on one machine, ``ray start --address`` on the others; see
``docs/ray-cluster.md``), where the clients' actors spread over every node's CPUs (and GPUs:
``engine.gpus``). It runs the same ServerApp round loop and the same ClientApp handlers as
the in-process engine.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import ray
from flwr.app import ArrayRecord
from flwr.simulation import run_simulation

from fedcore.apps import make_server_app
from fedcore.checkpoint import Checkpoint
from fedcore.config import ConfigError, RunConfig
from fedcore.exchange import Stopped
from fedcore.server import RoundRecord, ServerState
from simulations.engines.ray_reasons import one_line_failures, plain_failures
from simulations.faults import simulation_client_app

if TYPE_CHECKING:
    from simulations.engines import OnRelease, OnState


def run_ray(
    cfg: RunConfig,
    on_round: Callable[[RoundRecord], None],
    resume: Checkpoint | None = None,
    on_state: OnState | None = None,
    on_release: OnRelease | None = None,
) -> ArrayRecord:
    """Run ``cfg`` on Flower's Ray simulation engine and return the final global model.

    The nodes' contexts live inside Flower's runtime, out of fedcore's reach: its checkpoints
    hold no node states (``resume`` refuses a run whose nodes keep any,
    :func:`simulations.rundir.node_state_needed`)."""
    result: list[ArrayRecord] = []
    stop = threading.Event()  # an interrupt ends the ServerApp's thread too
    # nothing the ServerApp's thread does reaches the run after it was interrupted
    hook = _unless(stop, lambda state: on_state and on_state(state, lambda: None))
    stoppable = _unless(stop, lambda record: on_round(plain_failures(record)))
    released = _unless(stop, lambda r, events: on_release and on_release(r, events))

    started = _init_ray(cfg)
    try:
        with one_line_failures():  # Flower's Ray backend logs each failure as ~90 lines
            _run(cfg, stoppable, resume, hook, released, result, stop)
    except BaseException:
        stop.set()
        raise
    finally:
        if started and ray.is_initialized():  # (Flower shuts it down unless interrupted)
            ray.shutdown()
    if not result:
        raise RuntimeError("the Ray simulation ended without a final model (see its log)")
    return result[0]


def _unless(stop: threading.Event, call: Callable[..., object]) -> Callable[..., None]:
    """``call``, which raises :class:`Stopped` instead once ``stop`` is set."""

    def guarded(*args: object) -> None:
        if stop.is_set():
            raise Stopped("the run was interrupted")
        call(*args)

    return guarded


def _init_ray(cfg: RunConfig) -> bool:
    """Start Ray here, as Flower's backend would (it skips its own ``ray.init`` then), so
    that the SIGTERM handler ``ray.init`` replaces (with ``sys.exit``, which ends a run
    "failed") is put back: SIGTERM then ends the run "interrupted", resumable. Returns
    whether this call started Ray."""
    if ray.is_initialized():
        return False
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    pythonpath = os.pathsep.join(sys.path)  # the actors import fedcore as this process does
    runtime_env = {"env_vars": {"PYTHONPATH": pythonpath}}
    if cfg.engine.address:  # attach to a running cluster: its nodes' resources, not ours
        _check_reachable(cfg.engine.address)
        try:
            ray.init(address=cfg.engine.address, runtime_env=runtime_env)
        except ConnectionError as err:
            raise ConfigError(_unreachable(cfg.engine.address, err)) from None
    else:
        ray.init(
            num_cpus=cfg.engine.workers * cfg.engine.threads,
            include_dashboard=False,
            runtime_env=runtime_env,
        )
    if main and previous is not None:
        signal.signal(signal.SIGTERM, previous)
    return True


def _unreachable(address: str, why: object) -> str:
    return (
        f"engine.address = {address!r}: no Ray cluster there ({why}); start one with "
        "`ray start --head`, or leave engine.address empty for a private Ray on this machine"
    )


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """ConfigError unless something listens at ``HOST:PORT`` (``ray.init`` would retry an
    address nothing listens at for minutes); ``auto`` is Ray's to resolve."""
    if address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"engine.address = {address!r}: give HOST:PORT or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(_unreachable(address, err)) from None


def _run(
    cfg: RunConfig,
    on_round: Callable[[RoundRecord], None],
    resume: Checkpoint | None,
    hook: Callable[[ServerState], None] | None,
    released: Callable[[int, list[dict]], None],
    result: list[ArrayRecord],
    stop: threading.Event,
) -> None:
    run_simulation(
        server_app=make_server_app(
            cfg,
            on_round=on_round,
            on_done=result.append,
            start=ServerState.of(resume),
            on_state=hook,
            on_release=released,
            stop=stop,
        ),
        client_app=simulation_client_app(cfg),
        num_supernodes=cfg.data.num_clients,
        backend_config={
            "client_resources": {"num_cpus": cfg.engine.threads, "num_gpus": cfg.engine.gpus},
        },
    )
