"""Client-side DP wiring: parameters, the node's own ledger, and the budget check.

A node's ledger lives in its ``Context.state``, so it persists across rounds in simulation
and across messages on a deployed SuperNode (on disk, per data file, across runs). Before
training, a node whose next round would take it past its budget declines with the reason;
after training it records the mechanism it applied and reports its epsilon.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

from flwr.app import ConfigRecord, Context, RecordDict

from clients.dp_training import DpSgdParams
from fedcore.config import RunConfig
from fedcore.keys import BUDGET_DECLINE, DATA_PATH, DP_EVENT_JSON, LEDGER, STATE_DIR
from privacy.accounting import calibrate_noise, epsilon, would_exceed
from privacy.ledger import DpEvent, PrivacyLedger
from privacy.plan import (
    dp_plan,
    local_noise,
    min_in_sum,
    planned_participations,
)


class BudgetExhausted(RuntimeError):
    """This round would take the client past its privacy budget; it declines to train."""


@functools.lru_cache(maxsize=1024)  # calibration is a search over the accountant: once per client
def dp_sgd_params(cfg: RunConfig, num_examples: int) -> DpSgdParams:
    """DP-SGD parameters for a client with ``num_examples`` local examples.

    The sampling rate defaults to ``batch-size / n``. With a target epsilon, the noise is
    calibrated once for :func:`planned_participations` rounds of ``local-epochs / q`` steps
    each (one step for distributed DP-SGD, whose noise each client adds a
    ``1 / sqrt(min_in_sum)`` share of).
    """
    p = cfg.privacy
    q = p.sample_rate or min(1.0, cfg.train.batch_size / num_examples)
    distributed = p.dp == "sample-distributed"
    share = 1 / min_in_sum(cfg) ** 0.5 if distributed else 1.0
    dp = DpSgdParams(p.noise_multiplier, p.clip_norm, q, one_step=distributed, noise_share=share)
    if p.noise_multiplier > 0:
        return dp
    planned = planned_participations(cfg) * dp.steps(cfg.train.local_epochs)
    try:
        z = calibrate_noise(p.target_epsilon, p.delta, q, planned, p.accountant)
    except ValueError as err:  # a target below what the accountant certifies at any noise
        from clients.handlers import ClientInputError

        raise ClientInputError(
            f"privacy.target-epsilon = {p.target_epsilon:g} is out of reach for this client "
            f"({num_examples} examples, sampling rate {q:.4g}, {planned} steps): {err}"
        ) from None
    return replace(dp, noise_multiplier=z)


@functools.lru_cache(maxsize=64)
def client_level_noise(cfg: RunConfig) -> float:
    """The noise multiplier that covers one client-level-DP client's update in a round:
    local DP's own, or distributed DP's planned noise of the sum (no smaller sum is
    unmasked, so a released sum carries at least that)."""
    return local_noise(cfg) if cfg.privacy.dp == "local" else dp_plan(cfg).noise_multiplier


# Modes whose target epsilon is calibrated per client, so that it is also each client's
# default budget. Distributed DP's target is the released model's (amplified) figure.
PER_CLIENT_TARGET = frozenset({"sample", "sample-distributed", "local"})


def budget(cfg: RunConfig, node_max: float = 0.0) -> float:
    """The epsilon a client declines to pass (0: no limit): ``privacy.budget-epsilon``, else
    the target where the target is per client, capped by the node's own policy."""
    p = cfg.privacy
    run = p.budget_epsilon or (p.target_epsilon if p.dp in PER_CLIENT_TARGET else 0.0)
    limits = [b for b in (run, node_max) if b > 0]
    return min(limits, default=0.0)


def _ledger_file(context: Context) -> Path | None:
    """A deployed node's ledger on disk (node config ``state-dir``), so a SuperNode that
    restarts resumes its accounting instead of starting from zero. A node with its own data
    file keeps one ledger per data file (by content hash), across runs: privacy is spent on
    the data, whichever run spends it. Without a data file, one per run."""
    state_dir = context.node_config.get(STATE_DIR)
    if state_dir is None:
        return None
    data = context.node_config.get(DATA_PATH)
    if data is not None:
        return Path(str(state_dir)) / f"ledger-data-{_file_digest(str(data))}.json"
    return Path(str(state_dir)) / f"ledger-run-{context.run_id}.json"


def _file_digest(path: str) -> str:
    """The data file's sha256, read once per version of the file (not on every message)."""
    try:
        stat = os.stat(path)
    except OSError as err:
        raise RuntimeError(f"cannot read this node's data file {path}: {err}") from None
    return _digest(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()[:32]
    except OSError as err:
        raise RuntimeError(f"cannot read this node's data file {path}: {err}") from None


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
    return PrivacyLedger(tuple(DpEvent.from_json(e) for e in events))


def save_ledger(context: Context, ledger: PrivacyLedger) -> None:
    """Keep the ledger in ``Context.state`` and, on a deployed node, in its ``state-dir``
    (written to a temporary file and renamed, so a crash never leaves half a ledger)."""
    events = [e.to_json() for e in ledger.events]
    context.state[LEDGER] = ConfigRecord({"events": events})
    path = _ledger_file(context)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(events))
        os.replace(tmp, path)


def charge(state: RecordDict, events: list[DpEvent]) -> None:
    """Add ``events`` to the ledger a node keeps in ``state``: a resumed run charges the
    releases of the rounds it runs again, which the node's restored state does not hold."""
    record = state.config_records.get(LEDGER)
    kept = list(record["events"]) if record is not None else []
    state[LEDGER] = ConfigRecord({"events": kept + [e.to_json() for e in events]})


def event_record(event: DpEvent) -> ConfigRecord:
    """The reply's record of the mechanism this round applied (``DP_EVENT``): its JSON line,
    since a ConfigRecord holds no nested trees."""
    return ConfigRecord({DP_EVENT_JSON: event.to_json()})


def check_budget(
    cfg: RunConfig, ledger: PrivacyLedger, event: DpEvent, node_max: float = 0.0
) -> None:
    """Raise :class:`BudgetExhausted` if recording ``event`` would exceed the client's
    :func:`budget`."""
    p = cfg.privacy
    limit = budget(cfg, node_max)
    if limit <= 0:
        return
    exceeds, eps = would_exceed(ledger, [event], limit, p.delta, p.accountant)
    if exceeds:
        raise BudgetExhausted(
            f"{BUDGET_DECLINE}: round {event.round} would take client {event.client} "
            f"to epsilon {eps:.3f} > budget {limit:g} (delta {p.delta}); declining"
        )


def spent(cfg: RunConfig, ledger: PrivacyLedger) -> float:
    """The epsilon this ledger has spent, at the run's delta and accountant."""
    return epsilon(ledger.events, cfg.privacy.delta, cfg.privacy.accountant)
