"""Client-side DP wiring: parameters, the node's own ledger, and the budget check.

A node's ledger lives in its ``Context.state``, so it persists across rounds in simulation
and across messages on a deployed SuperNode. Before training, a node whose next round would
take it past ``privacy.budget-epsilon`` declines with the reason; after training it records
the mechanism it applied and reports its epsilon.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import replace
from pathlib import Path

from flwr.app import ConfigRecord, Context

from clients.dp_training import DpSgdParams
from fedcore.config import RunConfig
from fedcore.keys import LEDGER, STATE_DIR
from privacy.accounting import calibrate_noise, epsilon, would_exceed
from privacy.ledger import DpEvent, PrivacyLedger
from privacy.plan import min_in_sum


class BudgetExhausted(RuntimeError):
    """This round would take the client past its privacy budget; it declines to train."""


@functools.lru_cache(maxsize=1024)  # calibration is a search over the accountant: once per client
def dp_sgd_params(cfg: RunConfig, num_examples: int) -> DpSgdParams:
    """DP-SGD parameters for a client with ``num_examples`` local examples.

    The sampling rate defaults to ``batch-size / n``. With a target epsilon, the noise is
    calibrated once for the planned horizon: ``rounds * fraction`` expected participations of
    ``local-epochs / q`` steps each (one step for distributed DP-SGD, whose noise each client
    adds a ``1 / sqrt(min_in_sum)`` share of).
    """
    p = cfg.privacy
    q = p.sample_rate or min(1.0, cfg.train.batch_size / num_examples)
    distributed = p.dp == "sample-distributed"
    share = 1 / min_in_sum(cfg) ** 0.5 if distributed else 1.0
    dp = DpSgdParams(p.noise_multiplier, p.clip_norm, q, one_step=distributed, noise_share=share)
    if p.noise_multiplier > 0:
        return dp
    planned = max(1, round(cfg.train.rounds * cfg.train.fraction)) * dp.steps(
        cfg.train.local_epochs
    )
    z = calibrate_noise(p.target_epsilon, p.delta, q, planned, p.accountant)
    return replace(dp, noise_multiplier=z)


@functools.lru_cache(maxsize=64)
def local_noise(cfg: RunConfig) -> float:
    """Local DP's noise multiplier: configured, or calibrated so a client taking part in
    ``rounds * fraction`` rounds (rounded up) spends ``privacy.target-epsilon``."""
    p = cfg.privacy
    if p.noise_multiplier > 0:
        return p.noise_multiplier
    participations = max(1, math.ceil(cfg.train.rounds * cfg.train.fraction))
    return calibrate_noise(
        p.target_epsilon, p.delta, 1.0, participations, p.accountant, "none", "local"
    )


def _ledger_file(context: Context) -> Path | None:
    """A deployed node's ledger on disk (node config ``state-dir``), one file per run, so a
    SuperNode that restarts mid-run resumes its accounting instead of starting from zero."""
    state_dir = context.node_config.get(STATE_DIR)
    if state_dir is None:
        return None
    return Path(str(state_dir)) / f"ledger-run-{context.run_id}.json"


def load_ledger(context: Context) -> PrivacyLedger:
    """The node's ledger: from its ``Context.state``, else from its ``state-dir`` file."""
    record = context.state.config_records.get(LEDGER)
    if record is not None:
        events = list(record["events"])
    elif (path := _ledger_file(context)) is not None and path.exists():
        try:
            events = json.loads(path.read_text())
        except (OSError, ValueError) as err:  # never silently restart a client's budget
            raise RuntimeError(f"cannot read this node's privacy ledger {path}: {err}") from None
    else:
        return PrivacyLedger()
    return PrivacyLedger(tuple(DpEvent.from_dict(json.loads(e)) for e in events))


def save_ledger(context: Context, ledger: PrivacyLedger) -> None:
    """Keep the ledger in ``Context.state`` and, on a deployed node, in its ``state-dir``
    (written to a temporary file and renamed, so a crash never leaves half a ledger)."""
    events = [json.dumps(e.to_dict()) for e in ledger.events]
    context.state[LEDGER] = ConfigRecord({"events": events})
    path = _ledger_file(context)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(events))
        os.replace(tmp, path)


def check_budget(cfg: RunConfig, ledger: PrivacyLedger, event: DpEvent) -> None:
    """Raise :class:`BudgetExhausted` if recording ``event`` would exceed the budget."""
    p = cfg.privacy
    if p.budget_epsilon <= 0:
        return
    exceeds, eps = would_exceed(ledger, [event], p.budget_epsilon, p.delta, p.accountant)
    if exceeds:
        raise BudgetExhausted(
            f"privacy budget exhausted: round {event.round} would take client {event.client} "
            f"to epsilon {eps:.3f} > budget {p.budget_epsilon} (delta {p.delta}); declining"
        )


def spent(cfg: RunConfig, ledger: PrivacyLedger) -> float:
    """The epsilon this ledger has spent, at the run's delta and accountant."""
    return epsilon(ledger.events, cfg.privacy.delta, cfg.privacy.accountant)
