"""The security floor of secure aggregation: the smallest settings under which the threat model
of the README holds (an honest-but-curious server and up to ``t - 1`` colluding clients, ``t``
being a client's share threshold, learn nothing about one honest client's update).

- **Threshold** (Bonawitz et al. 2017): a client's secrets need ``t > h / 2`` of its ``h``
  holders (itself and its neighbours), and ``t >= 2``. Below half, two disjoint sets of holders
  could each reach ``t``, so a server that told one set a client dropped and the other it
  survived would collect both its mask key and its self-mask seed; ``t = 1`` makes every share
  the secret itself.
- **Cohort**: at least :data:`MIN_COHORT` = 3 clients. With two, the sum minus one colluder's
  input is the other's.
- **Survivors**: a sum is unmasked only if, for every client in it, at least ``t + 1`` of its
  holders sent masked inputs. Then at most ``t - 1`` of them collude, so at least one other
  honest client of its neighbourhood is in the sum and its pair mask, which only the two of
  them know, hides the client's input (Bonawitz et al. only need ``t``: with ``t`` survivors of
  whom ``t - 1`` collude, the one honest input *is* the sum they learn).
- **Degree** of the sparse graph (SecAgg+, Bell et al. 2020): at least :data:`MIN_DEGREE` = 4.
  Bell et al.'s graph is a Harary graph ``H(k, n)`` on a random ring, and their analysis rests
  on its structure: the server learns a partial sum only where missing clients cut the ring,
  each cut being a run of ``k / 2`` consecutive missing clients. At ``k = 2`` (what degrees 1
  and 2 become) one dropout is a cut, and the survivor rule above (``t + 1 = 3`` of 3 holders)
  then aborts at any dropout next to any client: no dropout tolerance is left, which is the
  point of the protocol. ``k = 4`` is the least degree at which a neighbourhood survives a
  dropout (``t + 1 = 4`` of 5) and a cut needs two adjacent missing clients. Bell et al.'s
  guarantee holds with high probability only for ``k`` growing as ``log n``; the default
  degree ``2 ceil(log2 n) + 2`` follows that, and the floor only refuses the degenerate graphs.

``secagg.insecure-demo = true`` lifts the floor (Bonawitz et al.'s ``t`` survivors, any
threshold and degree, cohorts of 2) for demonstrations in simulation; deployed runs refuse it.
"""

from __future__ import annotations

from privacy.secagg import graph

THRESHOLD_FLOOR = 0.5  # secagg.threshold: a client's secrets need more than half its holders
MIN_COHORT = 3
MIN_DEGREE = 4
MIN_SHARES = 2  # t >= 2: a 1-of-n share is the secret itself


class BelowFloorError(ValueError):
    """Secure-aggregation settings below the security floor (without ``insecure-demo``)."""


def threshold(group_size: int, fraction: float) -> int:
    """Shares needed among ``group_size`` holders: more than ``fraction`` of them."""
    return min(group_size, int(fraction * group_size) + 1)


def check_threshold(holders: int, t: int) -> None:
    """:class:`BelowFloorError` unless ``t`` is more than half of ``holders`` and at least 2."""
    if t < MIN_SHARES or 2 * t <= holders:
        raise BelowFloorError(
            f"a share threshold of {t} of {holders} holders is below the floor: t must exceed "
            f"half the holders and be at least {MIN_SHARES}"
        )


def min_survivors(t: int, insecure_demo: bool) -> int:
    """Holders of a client in the sum that must have sent masked inputs: ``t + 1`` (so one
    honest neighbour's pair mask hides it from ``t - 1`` colluders), or Bonawitz et al.'s
    ``t`` in an insecure demo."""
    return t if insecure_demo else t + 1


def floor_violations(
    threshold_fraction: float, cohort: float, degree: int | None, insecure_demo: bool
) -> list[str]:
    """What in these settings is below the floor (empty: nothing, or an insecure demo);
    ``degree`` is None for the complete graph, 0 for the default sparse degree."""
    if insecure_demo:
        return []
    out = []
    if threshold_fraction < THRESHOLD_FLOOR:
        out.append(
            f"secagg.threshold = {threshold_fraction:g} < {THRESHOLD_FLOOR}: a client's secrets "
            "must need more than half of its holders (Bonawitz et al.)"
        )
    if cohort < MIN_COHORT:
        out.append(
            f"a secure cohort of {cohort:g} clients < {MIN_COHORT}: with two, one colluding "
            "client reads the other's update from the sum"
        )
    if degree is not None and 0 < degree < MIN_DEGREE:
        out.append(
            f"secagg.degree = {degree} < {MIN_DEGREE}: no neighbourhood of the sparse graph "
            "would survive a dropout (cohorts of 5 or fewer get the complete graph anyway)"
        )
    if out or cohort < 1:
        return out
    n = int(cohort)
    k = n - 1 if degree is None else min(n - 1, degree or graph.default_degree(n))
    k += k % 2 if k < n - 1 else 0  # graph.neighbours rounds a sparse degree up to even
    holders = min(k, n - 1) + 1
    t = threshold(holders, threshold_fraction)
    if min_survivors(t, False) > holders:
        out.append(
            f"secagg.threshold = {threshold_fraction:g} needs {t} of a client's {holders} "
            f"holders, and unmasking needs t + 1 = {t + 1} of them: no sum could be released"
        )
    return out
