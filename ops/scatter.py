"""Segment reductions: sum, mean and max (with argmax) of rows grouped by an index.

``out[j] = reduce(src[i] for i where index[i] == j)`` for ``j`` in ``[0, dim_size)``; rows of ``src`` may
carry any trailing shape. Built on torch's ``index_add`` / ``scatter_reduce`` (no Python loops), so they run
on any device and are differentiable. Empty segments give 0 (and argmax -1).
"""

from __future__ import annotations

import torch

from geo3d.errors import require

__all__ = ["scatter_max", "scatter_mean", "scatter_sum"]


def _check(src: torch.Tensor, index: torch.Tensor, dim_size: int, name: str) -> None:
    require(src.dim() >= 1, None, f"{name}: src must be (N, ...), got a 0-d tensor")
    require(
        index.dim() == 1 and index.shape[0] == src.shape[0], None,
        f"{name}: index must be (N,) = ({src.shape[0]},), got {tuple(index.shape)}",
    )
    require(index.dtype == torch.int64, None, f"{name}: index must be int64, got {index.dtype}")
    require(int(dim_size) >= 0, None, f"{name}: dim_size must be >= 0, got {dim_size}")
    if index.numel():
        lo, hi = int(index.min()), int(index.max())
        require(
            lo >= 0 and hi < dim_size, None,
            f"{name}: index values must lie in [0, {dim_size}), got [{lo}, {hi}]",
        )


def _expand(index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """(N,) index broadcast to src's shape (N, ...), as ``scatter_reduce`` wants."""
    return index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum the rows of ``src`` that share a segment index.

    Args:
        src: (N, ...) floating values.
        index: (N,) int64 segment of each row, in ``[0, dim_size)``.
        dim_size: number of segments S.

    Returns:
        (S, ...) same dtype as ``src``; 0 for empty segments.

    Example:
        >>> scatter_sum(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0, 2, 0]), 3)
        tensor([5., 0., 2.])
    """
    _check(src, index, dim_size, "scatter_sum")
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add(0, index, src)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Mean of the rows of ``src`` that share a segment index.

    Args:
        src: (N, ...) floating values.
        index: (N,) int64 segment of each row, in ``[0, dim_size)``.
        dim_size: number of segments S.

    Returns:
        (S, ...) same dtype as ``src``; 0 for empty segments.
    """
    total = scatter_sum(src, index, dim_size)
    count = torch.bincount(index, minlength=dim_size).clamp_(min=1).to(src.dtype)
    return total / count.view(-1, *([1] * (src.dim() - 1)))


def scatter_max(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximum of the rows of ``src`` that share a segment index, and where it came from.

    The gradient of ``values`` flows to the arg-max row only (the first one on ties), as a
    loop ``max`` would.

    Args:
        src: (N, ...) floating values, no NaN.
        index: (N,) int64 segment of each row, in ``[0, dim_size)``.
        dim_size: number of segments S.

    Returns:
        values: (S, ...) same dtype as ``src``; 0 for empty segments.
        argmax: (S, ...) int64 row of ``src`` holding the maximum (lowest row on ties); -1 for empty
        segments.
    """
    _check(src, index, dim_size, "scatter_max")
    n = src.shape[0]
    wide_index = _expand(index, src)
    with torch.no_grad():
        best = src.new_zeros((dim_size, *src.shape[1:]))
        best = best.scatter_reduce(0, wide_index, src, "amax", include_self=False)
        rows = torch.arange(n, device=src.device).view(-1, *([1] * (src.dim() - 1))).expand_as(src)
        candidate = torch.where(src == best.gather(0, wide_index), rows, n)
        argmax = torch.full(best.shape, n, dtype=torch.int64, device=src.device)
        argmax = argmax.scatter_reduce(0, wide_index, candidate, "amin")
        empty = argmax == n
        argmax[empty] = -1
    values = src.gather(0, argmax.clamp(min=0)) if n else best
    values = values.masked_fill(empty, 0)
    return values, argmax
