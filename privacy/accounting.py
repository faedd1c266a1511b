"""Epsilon from a privacy ledger, and noise calibration for a target epsilon.

Every event is a Poisson-subsampled Gaussian mechanism (a full-batch release is the special
case of sample rate 1), composed with a fresh Opacus accountant:

- "rdp": Rényi DP of the subsampled Gaussian (Abadi et al. 2016, "Deep Learning with
  Differential Privacy"; Mironov 2017, "Rényi Differential Privacy"; Mironov et al. 2019 for the
  subsampled bound), converted to (epsilon, delta). A valid upper bound, a little loose.
- "prv": numerical composition of privacy loss random variables (Gopi et al. 2021, "Numerical
  Composition of Differential Privacy"); tighter, slower, and Opacus returns its upper bound.

These are pure functions of the events. For RDP, the per-step RDP curve of each distinct
(sample rate, noise) pair is memoised: RDP composes by addition, so ``steps * curve`` is
exactly what Opacus' accountant sums, at a fraction of the cost (Opacus recomputes the curve,
a slow series for fractional orders, on every call: 0.3 s here).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import numpy as np
from opacus.accountants import RDPAccountant, create_accountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.utils import get_noise_multiplier

from privacy.ledger import DpEvent, PrivacyLedger

ACCOUNTANTS = ("rdp", "prv")


def _check_accountant(accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")


def _check_delta(delta: float) -> None:
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


def _history(events: Iterable[DpEvent]) -> list[tuple[float, float, int]]:
    """Opacus' accountant history, `[(noise_multiplier, sample_rate, steps), ...]`, for events.

    Consecutive events with the same (noise_multiplier, sample_rate) are merged, exactly as
    Opacus' `accountant.step()` would have merged them, so the ledger and a directly stepped
    accountant give the same number with either accountant.
    """
    history: list[tuple[float, float, int]] = []
    neighbouring = set()
    for event in events:
        if not isinstance(event, DpEvent):
            raise TypeError(f"expected DpEvent, got {type(event).__name__}")
        neighbouring.add(event.neighbouring)
        if event.sampling == "fixed-size":
            # Opacus' RDP and PRV accountants only analyse Poisson subsampling; sampling without
            # replacement needs its own bound (e.g. dp_accounting's
            # SampledWithoutReplacementDpEvent), which is not available here.
            raise NotImplementedError(
                "fixed-size sampling cannot be accounted with Opacus' RDP/PRV accountants, "
                "which assume Poisson subsampling; use sampling='poisson' or 'none'"
            )
        if event.sampling == "none" and event.sample_rate != 1.0:
            raise ValueError(
                f"an event with sampling='none' must have sample_rate=1.0, got {event.sample_rate}"
            )
        if history and history[-1][:2] == (event.noise_multiplier, event.sample_rate):
            z, q, steps = history.pop()
            history.append((z, q, steps + event.steps))
        else:
            history.append((event.noise_multiplier, event.sample_rate, event.steps))
    if len(neighbouring) > 1:
        # An epsilon per example and one per client are different guarantees; adding them
        # would report a number that protects neither.
        raise ValueError(f"events mix neighbouring relations {sorted(neighbouring)}")
    return history


def epsilon(events: Iterable[DpEvent], delta: float, accountant: str = "rdp") -> float:
    """The epsilon of composing `events` at `delta` (0.0 for no events).

    All events must share one `neighbouring` relation. Events of different clients compose
    sequentially here, which is a valid but loose bound; pass one client's events (see
    `PrivacyLedger.for_client`) for that client's epsilon.
    """
    _check_accountant(accountant)
    _check_delta(delta)
    history = _history(events)
    if not history:
        return 0.0
    if accountant == "rdp":
        orders = RDPAccountant.DEFAULT_ALPHAS
        total = sum(steps * _rdp_curve(q, z) for z, q, steps in history)
        eps, _ = rdp_analysis.get_privacy_spent(orders=orders, rdp=total, delta=delta)
        return float(eps)
    composed = create_accountant(mechanism=accountant)
    composed.history = history
    return float(composed.get_epsilon(delta=delta))


@functools.lru_cache(maxsize=4096)
def _rdp_curve(sample_rate: float, noise_multiplier: float) -> np.ndarray:
    """RDP of one step at Opacus' default orders (read-only: shared by the cache)."""
    curve = np.asarray(
        rdp_analysis.compute_rdp(
            q=sample_rate,
            noise_multiplier=noise_multiplier,
            steps=1,
            orders=RDPAccountant.DEFAULT_ALPHAS,
        )
    )
    curve.setflags(write=False)
    return curve


def epsilon_curve(ledger: PrivacyLedger, delta: float, accountant: str = "rdp") -> dict[int, float]:
    """Cumulative epsilon after each round present in `ledger`, keyed by round.

    The ledger holds one party's events: one client's (with, optionally, the server-side events
    that also protect it) or the server's alone. Events of two clients raise ValueError, since
    their sum is no one's epsilon.
    """
    if len(ledger.clients()) > 1:
        raise ValueError(f"epsilon_curve needs one client's events, got {ledger.clients()}")
    rounds = sorted({e.round for e in ledger.events})
    return {r: epsilon(ledger.up_to_round(r).events, delta, accountant) for r in rounds}


@functools.lru_cache(maxsize=1024)  # a search over the accountant; pure, so computed once
def calibrate_noise(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
) -> float:
    """The smallest noise multiplier whose epsilon after `steps` Poisson-subsampled Gaussian
    steps at `sample_rate` is at most `target_epsilon`, and within 1% of it.

    A binary search over the accountant (Opacus' `get_noise_multiplier`), so the result carries
    the accountant's own bound: calibrate and report with the same accountant.
    """
    _check_accountant(accountant)
    _check_delta(delta)
    if not (isinstance(target_epsilon, int | float) and 0 < target_epsilon < math.inf):
        raise ValueError(f"target_epsilon must be > 0 and finite, got {target_epsilon!r}")
    if not (isinstance(sample_rate, int | float) and 0 < sample_rate <= 1):
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return float(
        get_noise_multiplier(
            target_epsilon=float(target_epsilon),
            target_delta=delta,
            sample_rate=float(sample_rate),
            steps=steps,
            accountant=accountant,
            epsilon_tolerance=0.01 * target_epsilon,
        )
    )


def would_exceed(
    ledger: PrivacyLedger,
    next_events: Iterable[DpEvent],
    budget_epsilon: float,
    delta: float,
    accountant: str = "rdp",
) -> tuple[bool, float]:
    """Whether recording `next_events` would push the ledger past `budget_epsilon`.

    Returns (exceeds, epsilon after adding `next_events`), so a caller can refuse a round
    before it runs rather than discover the overrun in the report.
    """
    if not (isinstance(budget_epsilon, int | float) and budget_epsilon > 0):
        raise ValueError(f"budget_epsilon must be > 0, got {budget_epsilon!r}")
    after = epsilon(ledger.events + tuple(next_events), delta, accountant)
    return after > budget_epsilon, after
