"""The math of the horizontal ``linear`` task, as pure numpy functions.

Row-partitioned data: client ``i`` holds rows ``X_i`` (and targets ``y_i``). Every quantity
the server needs is a sum over clients of a per-client matrix product, so a secure sum
reveals exactly what the centralized solution needs and nothing per client:

- ridge regression: ``n = sum n_i``, ``s = sum X_i^T 1``, ``G = sum X_i^T X_i``,
  ``t = sum y_i^T 1``, ``b = sum X_i^T y_i``. With an intercept (unpenalised, as
  scikit-learn's ``Ridge``) the centred system is ``(G - s s^T / n + alpha I) w =
  b - s t / n`` and the intercept ``t / n - s . w / n``; without one ``(G + alpha I) w = b``.
- PCA: the covariance ``(G - s s^T / n) / (n - 1)`` and its leading eigenvectors.
- subspace iteration (Hartebrodt & Roettger 2022, for large d where the d x d Gram is too big
  to send): each round clients send ``X_i^T X_i V`` for the current orthonormal ``V``; the
  centred product is ``G V - s (s^T V) / n`` (s and n summed in the same round), and the
  server orthonormalises it after a Rayleigh-Ritz rotation that orders the columns.

A symmetric Gram matrix travels as its upper triangle (:func:`pack`), half the bytes.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg


def packed_size(d: int) -> int:
    """Entries of the upper triangle (with the diagonal) of a d x d matrix."""
    return d * (d + 1) // 2


def pack(matrix: np.ndarray) -> np.ndarray:
    """The upper triangle of a symmetric matrix, row by row."""
    return matrix[np.triu_indices(matrix.shape[0])]


def unpack(packed: np.ndarray, d: int) -> np.ndarray:
    """The symmetric d x d matrix whose upper triangle is ``packed``."""
    if packed.shape != (packed_size(d),):
        raise ValueError(
            f"a packed {d} x {d} matrix has {packed_size(d)} entries, not {packed.shape}"
        )
    out = np.zeros((d, d))
    out[np.triu_indices(d)] = packed
    return out + np.triu(out, 1).T


def centred_gram(gram: np.ndarray, sums: np.ndarray, rows: float) -> np.ndarray:
    """``sum (x - mean)(x - mean)^T`` from ``G = sum x x^T``, ``s = sum x`` and ``n``."""
    return gram - np.outer(sums, sums) / rows


def solve_ridge(gram: np.ndarray, cross: np.ndarray, alpha: float) -> np.ndarray:
    """``w`` with ``(gram + alpha I) w = cross``; the least-norm least-squares solution where
    that system is singular (``alpha = 0`` and fewer rows than features, say)."""
    a = gram + alpha * np.eye(len(gram))
    try:
        return np.linalg.solve(a, cross)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(a, cross, rcond=None)[0]


def ridge(
    gram: np.ndarray,
    cross: np.ndarray,
    alpha: float,
    *,
    rows: float | None = None,
    feature_sums: np.ndarray | None = None,
    target_sum: float | None = None,
) -> tuple[np.ndarray, float]:
    """Ridge coefficients and intercept from the pooled sums (module docstring); with
    ``rows``, ``feature_sums`` and ``target_sum`` given, an unpenalised intercept is fitted
    (scikit-learn's ``Ridge(fit_intercept=True)``), else the intercept is 0."""
    if rows is None:
        return solve_ridge(gram, cross, alpha), 0.0
    if feature_sums is None or target_sum is None:
        raise ValueError("an intercept needs the feature sums and the target sum too")
    x_mean, y_mean = feature_sums / rows, target_sum / rows
    coef = solve_ridge(centred_gram(gram, feature_sums, rows), cross - feature_sums * y_mean, alpha)
    return coef, float(y_mean - x_mean @ coef)


def leading_eigenvectors(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenvalues of a symmetric matrix (descending) and their
    eigenvectors as rows (``(k, d)``, scikit-learn's ``components_`` layout)."""
    d = len(matrix)
    values, vectors = scipy.linalg.eigh(matrix, subset_by_index=(d - k, d - 1))
    return values[::-1], vectors[:, ::-1].T


def pca(gram: np.ndarray, sums: np.ndarray, rows: float, k: int):
    """The mean, the ``k`` leading components (rows) and their variances from the pooled
    sums: the eigenvectors of the sample covariance ``centred_gram / (n - 1)``."""
    covariance = centred_gram(gram, sums, rows) / max(rows - 1.0, 1.0)
    variance, components = leading_eigenvectors(covariance, k)
    return sums / rows, components, variance


def orthonormal(matrix: np.ndarray) -> np.ndarray:
    """An orthonormal basis of ``matrix``'s columns (thin QR, signs fixed so R's diagonal
    is non-negative, which makes the result a function of the column space and order)."""
    q, r = np.linalg.qr(matrix)
    signs = np.where(np.diag(r) < 0, -1.0, 1.0)
    return q * signs


def subspace_step(
    basis: np.ndarray, product: np.ndarray, sums: np.ndarray, rows: float
) -> tuple[np.ndarray, np.ndarray]:
    """One step of subspace iteration on the covariance: from ``V`` (``basis``, d x m,
    orthonormal) and the pooled ``G V`` (``product``), the next orthonormal basis, its
    columns ordered by their Rayleigh-Ritz values (the covariance's eigenvalue estimates,
    returned too, descending)."""
    scatter_v = product - np.outer(sums, sums @ basis) / rows  # (G - s s^T / n) V
    ritz = basis.T @ scatter_v
    values, rotation = np.linalg.eigh((ritz + ritz.T) / 2)
    order = np.argsort(values)[::-1]
    next_basis = orthonormal(scatter_v @ rotation[:, order])
    return next_basis, values[order] / max(rows - 1.0, 1.0)


def principal_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The principal angles (radians, descending) between the row spaces of ``a`` and ``b``
    (components as rows), computed from sines where they are small (scipy)."""
    return scipy.linalg.subspace_angles(np.asarray(a).T, np.asarray(b).T)


def gram_bound(rows: int, feature_bound: float) -> float:
    """The public bound on an entry of ``X_i^T X_i``: ``rows * feature_bound^2``."""
    return rows * feature_bound**2


def product_bound(rows: int, feature_bound: float, d: int) -> float:
    """The public bound on an entry of ``X_i^T X_i V`` for orthonormal ``V``: each row has
    ``|x . v| <= feature_bound sqrt(d)``."""
    return rows * feature_bound**2 * math.sqrt(d)
