"""Epsilon from a privacy ledger, and noise calibration for a target epsilon.

Every ledger event is a dp_accounting event tree under one neighbouring relation (see
`privacy.ledger`); epsilon composes the trees with a fresh accountant:

- "rdp": Rényi DP (Mironov 2017), composed by adding each tree's curve at `ORDERS` and
  converted to (epsilon, delta). A Poisson-sampled or unsampled Gaussian (DP-SGD steps, a
  DP-FedAvg release; Abadi et al. 2016; Mironov et al. 2019) takes Opacus' curve, so a ledger
  gives exactly what an Opacus accountant stepped directly gives; every other tree takes
  dp_accounting's ``RdpAccountant``: a Gaussian on a cohort drawn without replacement (Wang,
  Balle and Kasiviswanathan 2019, replace-one), Laplace, zCDP (a discrete Gaussian on counts).
- "prv": numerical composition of privacy loss random variables (Gopi et al. 2021) through
  Opacus; tighter, slower, for Poisson-sampled and unsampled Gaussians only.

A ledger of Laplace releases alone is pure DP: its epsilon is the smaller of the RDP figure
and the plain sum of their epsilons (basic composition, at delta 0), under either accountant.

Under replace-one (fixed-size cohorts, local DP, a node's features) a clipped vector can move
by twice its clip norm; the trees already hold the noise relative to that sensitivity.

These are pure functions of the events. The RDP curve of each distinct release is memoised:
RDP composes by addition, so ``steps * curve`` is exactly what Opacus' accountant sums, at a
fraction of the cost (Opacus recomputes the curve, a slow series for fractional orders, on
every call: 0.3 s here). Neither library's private attributes are touched: Opacus' history goes
in through ``load_state_dict``, dp_accounting's curve comes out of ``RdpAccountant.rdp``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable

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


_RELATION_NAMES = {"add-or-remove-one": "ADD_OR_REMOVE_ONE", "replace-one": "REPLACE_ONE"}


def _checked(events: Iterable[DpEvent]) -> list[DpEvent]:
    events = list(events)
    for event in events:
        if not isinstance(event, DpEvent):
            raise TypeError(f"expected DpEvent, got {type(event).__name__}")
    neighbouring = {e.neighbouring for e in events}
    if len(neighbouring) > 1:
        # An epsilon per example and one per client are different guarantees; adding them
        # would report a number that protects neither.
        raise ValueError(f"events mix neighbouring relations {sorted(neighbouring)}")
    relations = {e.relation for e in events}
    if len(relations) > 1:
        raise ValueError(
            "events mix replace-one (fixed-size sampling, local DP) and add-or-remove-one "
            "releases (Poisson or no sampling); their epsilons are not on the same scale"
        )
    return events


def epsilon(events: Iterable[DpEvent], delta: float, accountant: str = "rdp") -> float:
    """The epsilon of composing `events` at `delta` (0.0 for no events).

    All events must share one `neighbouring` unit and one neighbouring `relation`. Events of
    different clients compose sequentially here, which is a valid but loose bound; pass one
    client's events (see `PrivacyLedger.for_client`) for that client's epsilon.
    """
    _check_accountant(accountant)
    _check_delta(delta)
    events = _checked(events)
    if not events:
        return 0.0
    pure = [_pure_epsilon(e.dp_event) for e in events]
    if None not in pure:  # pure epsilon-DP composes by addition, at delta = 0
        return min(sum(pure), _rdp_to_epsilon(_total_curve(events), delta))
    if accountant == "rdp":
        return _rdp_to_epsilon(_total_curve(events), delta)
    from opacus.accountants import create_accountant

    composed = create_accountant(mechanism=accountant)
    composed.load_state_dict({"history": _history(events), "mechanism": accountant})
    return float(composed.get_epsilon(delta=delta))


def _total_curve(events: list[DpEvent]) -> np.ndarray:
    return sum(_curve(e.dp_event, e.relation) for e in events)


def _pure_epsilon(tree) -> float | None:
    """The pure epsilon of a tree of Laplace releases (1 / noise multiplier each, added up
    over compositions); None if any part of it is not pure DP."""
    name = type(tree).__name__
    if name == "LaplaceDpEvent":
        return 1 / tree.noise_multiplier
    if name == "SelfComposedDpEvent":
        inner = _pure_epsilon(tree.event)
        return None if inner is None else tree.count * inner
    if name == "ComposedDpEvent":
        parts = [_pure_epsilon(child) for child in tree.events]
        return None if None in parts else sum(parts)
    return None


def _history(events: list[DpEvent]) -> list[tuple[float, float, int]]:
    """Opacus' accountant history, `[(noise_multiplier, sample_rate, steps), ...]`, for events
    whose trees are (self-composed) Poisson-sampled or unsampled Gaussians under
    add-or-remove-one; any other tree raises NotImplementedError.

    Consecutive events with the same (noise_multiplier, sample_rate) are merged, exactly as
    Opacus' `accountant.step()` would have merged them, so the ledger and a directly stepped
    accountant give the same number.
    """
    history: list[tuple[float, float, int]] = []
    for event in events:
        once = _poisson_gaussian(event.release, event.relation)
        if once is None:
            raise NotImplementedError(
                f"Opacus' PRV accountant takes Poisson-sampled or unsampled Gaussian releases "
                f"under add-or-remove-one; {event.mechanism} ({event.sampling or 'composed'} "
                f"sampling, {event.relation}) is accounted with accountant='rdp'"
            )
        q, z = once
        steps = event.steps
        if history and history[-1][:2] == (z, q):
            steps += history.pop()[2]
        history.append((z, q, steps))
    return history


def _poisson_gaussian(tree, relation: str) -> tuple[float, float] | None:
    """``(sample rate, noise multiplier)`` of a Poisson-sampled or unsampled Gaussian under
    add-or-remove-one; None for any other tree."""
    if relation != "add-or-remove-one":
        return None
    name = type(tree).__name__
    if name == "GaussianDpEvent":
        return 1.0, tree.noise_multiplier
    if name == "PoissonSampledDpEvent" and type(tree.event).__name__ == "GaussianDpEvent":
        return tree.sampling_probability, tree.event.noise_multiplier
    return None


def _curve(tree, relation: str) -> np.ndarray:
    """The RDP of ``tree`` at `ORDERS`. Compositions add; a (Poisson-sampled) Gaussian takes
    Opacus' curve, so the ledger gives exactly what an Opacus accountant stepped directly
    gives; every other tree takes dp_accounting's own ``RdpAccountant``."""
    name = type(tree).__name__
    if name == "SelfComposedDpEvent":
        return tree.count * _curve(tree.event, relation)
    if name == "ComposedDpEvent":
        return sum(_curve(child, relation) for child in tree.events)
    if name == "GaussianDpEvent":  # the same curve under either relation, at its sensitivity
        return _rdp_curve(1.0, tree.noise_multiplier)
    if (poisson := _poisson_gaussian(tree, relation)) is not None:
        return _rdp_curve(*poisson)
    return _dp_accounting_curve(tree, relation)


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


@functools.lru_cache(maxsize=1024)  # dp_accounting's trees are frozen attrs classes: hashable
def _dp_accounting_curve(tree, relation: str) -> np.ndarray:
    """RDP of one ``tree`` at `ORDERS` from dp_accounting's ``RdpAccountant`` (e.g. a Gaussian
    on a cohort drawn without replacement, by Wang, Balle and Kasiviswanathan 2019; Laplace;
    zCDP), through its public ``compose`` and ``rdp``."""
    from dp_accounting import privacy_accountant
    from dp_accounting.rdp import RdpAccountant

    accountant = RdpAccountant(
        orders=list(ORDERS),
        neighboring_relation=getattr(
            privacy_accountant.NeighboringRelation, _RELATION_NAMES[relation]
        ),
    )
    if not accountant.supports(tree):
        raise ValueError(f"dp_accounting's RDP accountant cannot compose {tree} under {relation}")
    accountant.compose(tree)
    curve = np.array(accountant.rdp, dtype=float)  # the composed RDP at each order
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
        event = DpEvent.gaussian(
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

    return smallest_noise(spent, target_epsilon, delta)


def smallest_noise(spent: Callable[[float], float], target_epsilon: float, delta: float) -> float:
    """The smallest noise multiplier ``z`` (to 1%) with ``spent(z)`` at most
    ``target_epsilon`` and within 1% of it, for a ``spent`` that falls as ``z`` grows: a
    bisection over epsilon itself, for any mechanism the accountant composes."""
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
