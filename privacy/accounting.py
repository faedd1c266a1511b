"""Epsilon from a privacy ledger, and noise calibration for a target epsilon.

Every event is a subsampled Gaussian mechanism (a full release is the special case of sample
rate 1), composed with a fresh accountant:

- Poisson sampling, or none, under add/remove-one neighbouring (DP-SGD steps, central
  DP-FedAvg): Opacus' accountants.

  - "rdp": Rényi DP of the subsampled Gaussian (Abadi et al. 2016; Mironov 2017; Mironov et
    al. 2019), converted to (epsilon, delta). A valid upper bound, a little loose.
  - "prv": numerical composition of privacy loss random variables (Gopi et al. 2021);
    tighter, slower, and Opacus returns its upper bound.

- Fixed-size sampling without replacement (a cohort of m of N clients): the RDP bound of Wang,
  Balle and Kasiviswanathan 2019 from dp-accounting (Opacus has none). It holds under
  replace-one neighbouring, where a clipped sum moves by up to twice the clip norm, so the
  accounted noise multiplier is half the configured one.
- Local DP ("local" neighbouring): the client's update may be replaced by any other, so the
  sensitivity is also twice the clip norm and the noise multiplier is halved.

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

from privacy.ledger import DpEvent, PrivacyLedger

ACCOUNTANTS = ("rdp", "prv")
ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
"""Rényi orders of every RDP computation here: Opacus' ``RDPAccountant.DEFAULT_ALPHAS``
(a test checks they agree), for either backend.

Opacus is imported where it is used, not here: importing it costs seconds, and a deployed
SuperNode starts a fresh ClientApp process for every message."""


def _check_accountant(accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")


def _check_delta(delta: float) -> None:
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


def accounted_noise(event: DpEvent) -> float:
    """The noise multiplier relative to the event's L2 sensitivity: under replace-one
    neighbouring (fixed-size sampling, local DP, a node's features) a clipped vector can move
    by 2 * clip_norm."""
    replace_one = event.sampling == "fixed-size" or event.neighbouring in ("local", "node")
    return event.noise_multiplier / 2 if replace_one else event.noise_multiplier


def _checked(events: Iterable[DpEvent]) -> list[DpEvent]:
    events = list(events)
    for event in events:
        if not isinstance(event, DpEvent):
            raise TypeError(f"expected DpEvent, got {type(event).__name__}")
        if event.sampling == "none" and event.sample_rate != 1.0:
            raise ValueError(
                f"an event with sampling='none' must have sample_rate=1.0, got {event.sample_rate}"
            )
    neighbouring = {e.neighbouring for e in events}
    if len(neighbouring) > 1:
        # An epsilon per example and one per client are different guarantees; adding them
        # would report a number that protects neither.
        raise ValueError(f"events mix neighbouring relations {sorted(neighbouring)}")
    fixed = sum(e.sampling == "fixed-size" for e in events)
    if 0 < fixed < len(events):
        raise ValueError(
            "events mix fixed-size sampling (replace-one neighbouring) with Poisson or no "
            "sampling (add/remove-one); their epsilons are not on the same scale"
        )
    return events


def _history(events: list[DpEvent]) -> list[tuple[float, float, int]]:
    """Opacus' accountant history, `[(noise_multiplier, sample_rate, steps), ...]`, for events.

    Consecutive events with the same (noise_multiplier, sample_rate) are merged, exactly as
    Opacus' `accountant.step()` would have merged them, so the ledger and a directly stepped
    accountant give the same number with either accountant.
    """
    history: list[tuple[float, float, int]] = []
    for event in events:
        z = accounted_noise(event)
        if history and history[-1][:2] == (z, event.sample_rate):
            _, q, steps = history.pop()
            history.append((z, q, steps + event.steps))
        else:
            history.append((z, event.sample_rate, event.steps))
    return history


def epsilon(events: Iterable[DpEvent], delta: float, accountant: str = "rdp") -> float:
    """The epsilon of composing `events` at `delta` (0.0 for no events).

    All events must share one `neighbouring` relation, and fixed-size sampling cannot be mixed
    with the others. Events of different clients compose sequentially here, which is a valid
    but loose bound; pass one client's events (see `PrivacyLedger.for_client`) for that
    client's epsilon.
    """
    _check_accountant(accountant)
    _check_delta(delta)
    events = _checked(events)
    if not events:
        return 0.0
    if events[0].sampling == "fixed-size":
        if accountant != "rdp":
            raise NotImplementedError(
                "fixed-size sampling is accounted with dp-accounting's RDP bound only; "
                "use accountant='rdp'"
            )
        total = sum(
            e.steps * _wor_curve(e.population, _cohort(e), accounted_noise(e)) for e in events
        )
        return _rdp_to_epsilon(total, delta)
    history = _history(events)
    if accountant == "rdp":
        return _rdp_to_epsilon(sum(steps * _rdp_curve(q, z) for z, q, steps in history), delta)
    from opacus.accountants import create_accountant

    composed = create_accountant(mechanism=accountant)
    composed.history = history
    return float(composed.get_epsilon(delta=delta))


def _cohort(event: DpEvent) -> int:
    return round(event.sample_rate * event.population)


def _rdp_to_epsilon(rdp: np.ndarray, delta: float) -> float:
    from opacus.accountants.analysis import rdp as rdp_analysis

    eps, _ = rdp_analysis.get_privacy_spent(orders=list(ORDERS), rdp=rdp, delta=delta)
    return float(eps)


@functools.lru_cache(maxsize=4096)
def _rdp_curve(sample_rate: float, noise_multiplier: float) -> np.ndarray:
    """RDP of one Poisson-subsampled Gaussian step at `ORDERS` (read-only: shared by the cache)."""
    from opacus.accountants.analysis import rdp as rdp_analysis

    curve = np.asarray(
        rdp_analysis.compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(ORDERS)
        )
    )
    curve.setflags(write=False)
    return curve


def accounting_event(event: DpEvent):
    """``event`` as a dp_accounting event tree and the neighbouring relation it is stated
    under: ``SelfComposedDpEvent(sampling(GaussianDpEvent(z)), steps)``, with the sampling
    ``PoissonSampledDpEvent``, ``SampledWithoutReplacementDpEvent`` or none, and ``z``
    relative to the sensitivity under that relation (:func:`accounted_noise`). Any
    dp_accounting accountant can compose these trees; fedcore's own RDP path below gives the
    same curve for Poisson sampling through Opacus (a test checks the two agree)."""
    from dp_accounting import dp_event, privacy_accountant

    relation = privacy_accountant.NeighboringRelation
    mechanism = dp_event.GaussianDpEvent(accounted_noise(event))
    if event.sampling == "poisson":
        mechanism = dp_event.PoissonSampledDpEvent(event.sample_rate, mechanism)
    elif event.sampling == "fixed-size":
        mechanism = dp_event.SampledWithoutReplacementDpEvent(
            event.population, _cohort(event), mechanism
        )
    if event.steps > 1:
        mechanism = dp_event.SelfComposedDpEvent(mechanism, event.steps)
    replace_one = event.sampling == "fixed-size" or event.neighbouring in ("local", "node")
    return mechanism, relation.REPLACE_ONE if replace_one else relation.ADD_OR_REMOVE_ONE


@functools.lru_cache(maxsize=1024)
def _wor_curve(population: int, cohort: int, noise_multiplier: float) -> np.ndarray:
    """RDP of one Gaussian release on a cohort of `cohort` of `population` drawn without
    replacement, from dp-accounting (replace-one neighbouring), at `ORDERS`."""
    from dp_accounting import dp_event, privacy_accountant
    from dp_accounting.rdp import RdpAccountant

    accountant = RdpAccountant(
        orders=list(ORDERS), neighboring_relation=privacy_accountant.NeighboringRelation.REPLACE_ONE
    )
    accountant.compose(
        dp_event.SampledWithoutReplacementDpEvent(
            population, cohort, dp_event.GaussianDpEvent(noise_multiplier)
        )
    )
    curve = accountant.rdp  # the composed RDP at each order (a copy)
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
    sampling: str = "poisson",
    neighbouring: str = "example",
    population: int | None = None,
) -> float:
    """The smallest noise multiplier (to 1%) whose epsilon after `steps` applications of the
    described mechanism is at most `target_epsilon`, and within 1% of it.

    A bisection over `epsilon` itself (the same search as Opacus' `get_noise_multiplier`), so
    the result carries the accountant's own bound and every sampling scheme and neighbouring
    relation that `epsilon` handles: calibrate and report with the same accountant.
    """
    _check_accountant(accountant)
    _check_delta(delta)
    if not (isinstance(target_epsilon, int | float) and 0 < target_epsilon < math.inf):
        raise ValueError(f"target_epsilon must be > 0 and finite, got {target_epsilon!r}")
    if not (isinstance(sample_rate, int | float) and 0 < sample_rate <= 1):
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")

    @functools.cache
    def spent(z: float) -> float:
        event = DpEvent(
            mechanism="gaussian",
            noise_multiplier=z,
            sample_rate=sample_rate,
            steps=steps,
            clip_norm=1.0,
            sampling=sampling,
            neighbouring=neighbouring,
            round=0,
            client=None,
            population=population,
        )
        return epsilon([event], delta, accountant)

    low, high = 0.0, 10.0
    while spent(high) > target_epsilon:
        low, high = high, 2 * high
        if high > 1e6:
            raise ValueError(
                f"no noise multiplier reaches epsilon {target_epsilon} at delta {delta}"
            )
    while True:  # invariant: spent(high) <= target
        eps_high = spent(high)
        if target_epsilon - eps_high <= 0.01 * target_epsilon:
            return float(high)
        middle = (low + high) / 2
        if spent(middle) > target_epsilon:
            low = middle
        else:
            high = middle


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
