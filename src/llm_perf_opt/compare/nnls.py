"""Non-negative least squares (Lawson-Hanson active set), numpy only.

Solves min ||A x - b||_2 subject to x >= 0. Written here because the project
does not depend on scipy; the algorithm is the textbook one (Lawson & Hanson,
"Solving Least Squares Problems", 1974, ch. 23).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def nnls(a: NDArray[np.float64], b: NDArray[np.float64], max_iter: int | None = None,
         tol: float | None = None) -> NDArray[np.float64]:
    """x >= 0 minimising ||a @ x - b||; a is (m, n), b is (m,). Returns x of shape (n,)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    m, n = a.shape
    if b.shape != (m,):
        raise ValueError(f"nnls: b has shape {b.shape}, expected ({m},)")
    # Columns scaled to unit norm (x >= 0 is scale-invariant), so that one tolerance fits all
    # unknowns whatever their units (efficiencies ~1, seconds per kernel ~1e-6).
    norms = np.linalg.norm(a, axis=0)
    norms[norms == 0] = 1.0
    return _nnls_scaled(a / norms, b, max_iter, tol) / norms


def _nnls_scaled(a: NDArray[np.float64], b: NDArray[np.float64], max_iter: int | None,
                 tol: float | None) -> NDArray[np.float64]:
    m, n = a.shape
    if tol is None:
        tol = 10 * max(m, n) * np.finfo(np.float64).eps * max(1.0, float(np.abs(a).max(initial=0.0)))
    max_iter = max_iter if max_iter is not None else 3 * n + 30
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    w = a.T @ (b - a @ x)
    outer = 0
    while (~passive).any() and (w[~passive] > tol).any() and outer < max_iter:
        outer += 1
        candidates = np.where(~passive, w, -np.inf)
        passive[int(np.argmax(candidates))] = True
        while True:
            z = np.zeros(n)
            idx = np.flatnonzero(passive)
            z[idx] = np.linalg.lstsq(a[:, idx], b, rcond=None)[0]
            if (z[idx] > tol).all():
                x = z
                break
            # Step back towards x until the first passive variable hits zero.
            neg = passive & (z <= tol)
            denom = x[neg] - z[neg]
            alpha = float(np.min(np.where(denom > 0, x[neg] / np.where(denom > 0, denom, 1.0), 1.0)))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
            if not passive.any():
                break
        w = a.T @ (b - a @ x)
    return x
