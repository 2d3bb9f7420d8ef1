"""Dense references for sparse convolution, used only by tests and benchmarks.

A sparse tensor is scattered into a dense grid and run through torch's dense ``conv{2,3}d`` /
``max_pool{2,3}d``; results are read back at the sparse output sites. Weights are spconv's KRSC layout
``(out, *kernel, in)``; 2D and 3D are handled alike (``ndim = coords.shape[1] - 1``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def densify(features: torch.Tensor, coords: torch.Tensor, spatial_shape: Sequence[int], batch_size: int,
            fill: float = 0.0) -> torch.Tensor:
    """Scatter sparse features into a dense grid.

    Args:
        features: (V, C) features.
        coords: (V, 1 + ndim) integer [batch, z, y, x] (2D: [batch, y, x]).
        spatial_shape: ndim grid sizes.
        batch_size: B.
        fill: value of inactive sites.

    Returns:
        (B, C, *spatial_shape) same dtype as ``features``; differentiable w.r.t. ``features``.
    """
    dense = features.new_full((batch_size, *spatial_shape, features.shape[1]), fill)
    dense = dense.index_put(tuple(coords.long().unbind(1)), features)
    return dense.movedim(-1, 1)


def gather_sites(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Read a dense (B, C, *spatial) grid at sites (V, 1 + ndim) -> (V, C)."""
    return dense.movedim(1, -1)[tuple(coords.long().unbind(1))]


def active_sites(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, *spatial) bool occupancy -> (V, 1 + ndim) int64 [batch, *spatial] indices in row-major order."""
    return mask[:, 0].nonzero()


def occupancy(coords: torch.Tensor, spatial_shape: Sequence[int], batch_size: int) -> torch.Tensor:
    """(V, 1 + ndim) sites -> (B, 1, *spatial) float64 grid with 1 at active sites."""
    ones = torch.ones(coords.shape[0], 1, dtype=torch.float64, device=coords.device)
    return densify(ones, coords, spatial_shape, batch_size)


def krsc_to_torch(weight: torch.Tensor) -> torch.Tensor:
    """spconv KRSC weight (out, *kernel, in) -> torch conv weight (out, in, *kernel)."""
    return weight.movedim(-1, 1)


def _conv(ndim: int):
    return {2: F.conv2d, 3: F.conv3d}[ndim]


def dense_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1,
               padding: int = 0, dilation: int = 1) -> torch.Tensor:
    """Dense conv of (B, C_in, *spatial) with a KRSC weight (C_out, *kernel, C_in) -> (B, C_out, *out)."""
    return _conv(x.dim() - 2)(x, krsc_to_torch(weight), bias, stride, padding, dilation)


def conv_output_sites(coords: torch.Tensor, spatial_shape: Sequence[int], batch_size: int,
                      kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> torch.Tensor:
    """Sites of a strided conv output whose receptive field touches an active input: (V_out, 1 + ndim)."""
    ndim = len(spatial_shape)
    mask = occupancy(coords, spatial_shape, batch_size)
    kernel = torch.ones((1, 1, *[kernel_size] * ndim), dtype=mask.dtype, device=mask.device)
    touched = _conv(ndim)(mask, kernel, None, stride, padding, dilation)
    return active_sites(touched > 0)


def dense_inverse_conv(x: torch.Tensor, weight: torch.Tensor, input_shape: Sequence[int],
                       stride: int = 1, padding: int = 0, dilation: int = 1) -> torch.Tensor:
    """Transpose of a dense conv back to the grid ``input_shape`` it came from.

    Args:
        x: (B, C_in, *out_shape) dense output grid of the forward conv.
        weight: KRSC inverse-conv weight (C_out, *kernel, C_in), as spconv's ``SparseInverseConv``.
        input_shape: spatial shape of the forward conv's input.

    Returns:
        (B, C_out, *input_shape): adjoint of ``dense_conv`` with ``weight`` read as (C_in, C_out, *kernel).
    """
    ndim = x.dim() - 2
    conv_weight = weight.movedim(0, -1).movedim(-2, 0).movedim(-1, 1)  # (C_in, C_out, *kernel)
    grad_input = {2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input}[ndim]
    size = (x.shape[0], weight.shape[0], *input_shape)
    return grad_input(size, conv_weight, x, stride, padding, dilation)


def dense_max_pool(x: torch.Tensor, kernel_size: int, stride: int, padding: int = 0) -> torch.Tensor:
    """Dense reference of spconv's sparse max pool: ``max(0, max of the active sites in each window)``.

    Args:
        x: (B, C, *spatial) grid with inactive sites set to -inf (see :func:`densify`'s ``fill``).

    Returns:
        (B, C, *out) pooled grid; windows without an active site give 0.
    """
    pool = {2: F.max_pool2d, 3: F.max_pool3d}[x.dim() - 2]
    return pool(x, kernel_size, stride, padding).clamp(min=0)
