"""Flower ServerApp and ClientApp for fedcore.

``server_app`` and ``client_app`` are the components named in ``pyproject.toml``; under
``flwr run`` they read the typed config from Flower's run config. The simulation harness
builds its own with :func:`make_server_app`/:func:`make_client_app`, passing the config and a
per-round callback directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod
from flwr.serverapp import Grid, ServerApp

from fedcore.config import ConfigError, RunConfig, parse_config
from fedcore.exchange import StoppableGrid
from privacy.secagg.mod import secagg_mod

if TYPE_CHECKING:
    from fedcore.server import RoundRecord, ServerState


def _resolve(cfg: RunConfig | None, context: Context) -> RunConfig:
    return cfg if cfg is not None else parse_config(context.run_config)


def make_client_app(cfg: RunConfig | None = None, mods: Sequence[Mod] = ()) -> ClientApp:
    """A ClientApp that trains and evaluates with ``cfg`` (or the run config if ``None``),
    with Flower client ``mods`` wrapped around both handlers. Inside them comes the secure
    aggregation mod (masking is the last thing done to a client's statistics)."""

    def resolve(context: Context) -> RunConfig:
        return _resolve(cfg, context)

    app = ClientApp(mods=[*mods, secagg_mod(resolve)])

    # The handlers (and torch with them) are imported on first use: a deployed SuperNode
    # starts a fresh process per message, and the secure-aggregation stages never train.
    @app.train()
    def train(msg: Message, context: Context) -> Message:
        from clients.handlers import handle_train

        return handle_train(msg, context, _resolve(cfg, context))

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        from clients.handlers import handle_evaluate

        return handle_evaluate(msg, context, _resolve(cfg, context))

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        from clients.queries import handle_query

        return handle_query(msg, context, _resolve(cfg, context))

    return app


def make_server_app(
    cfg: RunConfig | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
    on_done: Callable[[object], None] | None = None,
    start: ServerState | None = None,
    on_state: Callable[[ServerState], None] | None = None,
    stop: threading.Event | None = None,
    on_release: Callable[[int, list[dict]], None] | None = None,
) -> ServerApp:
    """A ServerApp running :func:`fedcore.server.run_server`.

    ``stop``: set by the runtime hosting it to end the round loop at its next poll
    (:class:`fedcore.exchange.StoppableGrid`).

    Without ``on_round`` (as under ``flwr run``) it records the run in a fresh run directory
    under ``runs/``, the same layout as ``fedcore simulate``.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        from fedcore.server import run_server

        run_cfg = _resolve(cfg, context)
        if stop is not None:
            grid = StoppableGrid(grid, stop)
        if on_round is not None:
            arrays = run_server(
                grid,
                run_cfg,
                on_round=on_round,
                start=start,
                on_state=on_state,
                on_release=on_release,
            )
            if on_done is not None:
                on_done(arrays)
            return
        from fedcore.server import ServerState
        from simulations.rundir import RunDirectory

        if run_cfg.attack.name != "none":  # the attack mods exist in simulations only
            raise ConfigError(
                f"attack.name = {run_cfg.attack.name!r} is a simulated attack; a deployed "
                "run's clients are whatever their owners run"
            )
        ckpt = None
        if run_cfg.train.resume_from:  # a restarted server continues its run
            run_dir, ckpt = RunDirectory.reopen(Path(run_cfg.train.resume_from), run_cfg)
        else:
            run_dir = RunDirectory.create(Path("runs"), run_cfg, "flwr-run", simulated=False)
        with run_dir:
            arrays = run_server(
                grid,
                run_dir.cfg,
                on_round=run_dir.append_round,
                start=ServerState.of(ckpt),
                on_state=lambda state: run_dir.on_state(state, lambda: None),
                on_release=run_dir.append_release,
            )
            run_dir.finish(arrays)

    return app


server_app = make_server_app()
client_app = make_client_app()
