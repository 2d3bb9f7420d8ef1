"""Dense reference for ``ops.integrate_gradients``, used only by tests: the normal equations assembled as explicit
matrices and solved directly.

The forward-difference operator ``D`` and the average pooling ``P_s`` are built entry by entry from their
definitions (not by applying the op's slicing code), ``M = sum_s P_s^T D^T W_s D P_s + diag(a) + lam I`` and
``b = sum_s P_s^T D^T W_s g_s + a z + lam x0`` are formed densely and ``x = M^-1 b`` is solved by
``torch.linalg.solve``, one batch item at a time. Every step is a differentiable torch op, so autograd through
the direct solve gives the reference gradients for the op's implicit backward. ``O(N^2)`` memory and ``O(N^3)``
time for ``N = H W`` pixels: small grids only (``N`` up to a few thousand).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def difference_matrix(h: int, w: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """``D``: ``(2 h w, h w)``, forward differences of a row-major ``h x w`` grid.

    Row ``i w + j`` is ``x[i, j+1] - x[i, j]`` (zero in the last column), row ``h w + i w + j`` is
    ``x[i+1, j] - x[i, j]`` (zero in the last row), matching the channel layout of the op's gradients.
    """
    n = h * w
    d = torch.zeros(2 * n, n, dtype=dtype)
    for i in range(h):
        for j in range(w):
            p = i * w + j
            if j + 1 < w:
                d[p, p], d[p, p + 1] = -1.0, 1.0
            if i + 1 < h:
                d[n + p, p], d[n + p, p + w] = -1.0, 1.0
    return d


def pooling_matrix(h: int, w: int, s: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """``P_s``: ``(h w / 4^s, h w)``, the mean over each ``2^s x 2^s`` block of a row-major ``h x w`` grid."""
    k = 2**s
    hc, wc = h // k, w // k
    p = torch.zeros(hc * wc, h * w, dtype=dtype)
    for i in range(h):
        for j in range(w):
            p[(i // k) * wc + j // k, i * w + j] = 1.0 / k**2
    return p


def integrate_gradients_reference(gradients: Sequence[Tensor], confidences: Sequence[Tensor], observations: Tensor,
                                  observation_weight: Tensor, prior: Tensor, lam: float) -> Tensor:
    """The exact minimiser of the op's energy by a dense direct solve (shapes as :func:`ops.integrate_gradients`).

    Args:
        gradients: ``S`` tensors ``(B, 2, H / 2^s, W / 2^s)``.
        confidences: ``S`` tensors ``>= 0``, shaped like ``gradients``.
        observations: ``(B, 1, H, W)``.
        observation_weight: ``(B, 1, H, W)`` ``>= 0``.
        prior: broadcastable to ``(B, 1, H, W)``.
        lam: the Tikhonov weight.

    Returns:
        ``x`` ``(B, 1, H, W)`` in the inputs' dtype (use float64 for a reference).
    """
    b, _, h, w = observations.shape
    dtype = observations.dtype
    prior = prior.expand(b, 1, h, w)
    ops_s = []
    for s in range(len(gradients)):
        k = 2**s
        ops_s.append(difference_matrix(h // k, w // k, dtype) @ pooling_matrix(h, w, s, dtype))  # D P_s
    eye = torch.eye(h * w, dtype=dtype)
    solutions = []
    for item in range(b):
        a = observation_weight[item].reshape(-1)
        m = torch.diag(a) + lam * eye
        rhs = a * observations[item].reshape(-1) + lam * prior[item].reshape(-1)
        for dp, g, c in zip(ops_s, gradients, confidences):
            weights = c[item].reshape(-1)  # channel 0 then 1, row-major: the row order of D
            m = m + dp.T @ (weights[:, None] * dp)
            rhs = rhs + dp.T @ (weights * g[item].reshape(-1))
        solutions.append(torch.linalg.solve(m, rhs))
    return torch.stack(solutions).reshape(b, 1, h, w)
