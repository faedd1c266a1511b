"""Table ``[linear]`` of task ``linear`` (imports no numpy: every process parses the config)."""

from __future__ import annotations

from dataclasses import dataclass

from fedcore.config import option

METHODS = ("ridge", "pca", "subspace")


@dataclass(frozen=True)
class LinearOptions:
    """Table ``[linear]``.

    The bounds are public: a client clips its features to ``feature-bound`` and its
    targets to ``target-bound`` and holds at most ``max-rows`` rows, so every summed matrix
    entry has a public bound (secure aggregation's encoding range, DP's clip)."""

    method: str = option(
        "ridge",
        choices=METHODS,
        doc="linear: ridge (regression, one round), pca (from the summed covariance, one "
        "round) or subspace (PCA by federated subspace iteration, one product per round)",
    )
    alpha: float = option(1.0, ge=0, doc="linear: ridge penalty (0: least squares)")
    fit_intercept: bool = option(True, doc="linear: ridge fits an unpenalised intercept")
    components: int = option(2, ge=1, doc="linear: principal components (pca, subspace)")
    oversample: int = option(
        5, ge=0, doc="linear: subspace: extra columns iterated beyond the components"
    )
    feature_bound: float = option(
        1.0, gt=0, doc="linear: public bound on a feature's |value| (clients clip to it)"
    )
    target_bound: float = option(
        1000.0, gt=0, doc="linear: public bound on a target's |value| (clients clip to it)"
    )
    max_rows: int = option(
        10000, ge=1, doc="linear: public bound on a client's rows (its count is checked)"
    )
