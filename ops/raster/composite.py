"""``torch.autograd.Function`` around the numba compositing kernels of :mod:`ops.raster.kernels`.

The kernels work on float64 numpy copies of the inputs (a few MB at most); outputs and gradients are
returned in the input dtype. Per-intersection gradient rows from the backward kernel are summed per
Gaussian with ``index_add_``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ops.raster import kernels
from ops.raster.tiles import TileBins


def composite(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    colors: torch.Tensor,
    opacities: torch.Tensor,
    bins: TileBins,
    width: int,
    height: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alpha-composite depth-sorted image-plane Gaussians into C images (differentiable).

    Args:
        means2d: (C, N, 2) float pixel centres.
        conics: (C, N, 3) float inverse 2D covariances ``[a, b, c]``, 1/pixels^2.
        colors: (C, N, D) float per-view colours (any number of channels, e.g. RGB + depth).
        opacities: (C, N) float in [0, 1].
        bins: tile lists from :func:`ops.raster.tiles.bin_gaussians` for these Gaussians.
        width: image width, pixels.
        height: image height, pixels.

    Returns:
        ``(colors, alphas)``: (C, H, W, D) accumulated colour without background and (C, H, W, 1)
        accumulated opacity, both in the dtype of ``colors``. Gradients flow to all four float inputs.
    """
    return _Composite.apply(means2d, conics, colors, opacities, bins, width, height)


def _f64(x: torch.Tensor, columns: int) -> np.ndarray:
    """(C, N, ...) tensor -> contiguous (C * N, columns) float64 numpy copy."""
    return np.ascontiguousarray(x.detach().reshape(-1, columns).to(torch.float64).cpu().numpy())


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, bins: TileBins, width: int, height: int):
        n_cams, n, n_channels = colors.shape
        arrays = (_f64(means2d, 2), _f64(conics, 3), _f64(colors, n_channels), _f64(opacities, 1)[:, 0])
        offsets, flatten_ids = bins.offsets.numpy(), bins.flatten_ids.numpy()
        tiles = (offsets, flatten_ids, width, height, bins.tile_size, bins.tile_width)
        out_color = np.zeros((n_cams, height, width, n_channels))
        out_t = np.ones((n_cams, height, width))
        out_count = np.zeros((n_cams, height, width), dtype=np.int64)
        kernels.composite_forward(*arrays, *tiles, out_color, out_t, out_count)
        # float64 copies of the inputs and the per-pixel state the backward kernel starts from
        ctx.arrays, ctx.tiles, ctx.out_t, ctx.out_count = arrays, tiles, out_t, out_count
        ctx.shape, ctx.dtypes = (n_cams, n), (means2d.dtype, conics.dtype, colors.dtype, opacities.dtype)
        dtype = colors.dtype
        return torch.from_numpy(out_color).to(dtype), torch.from_numpy(1.0 - out_t)[..., None].to(dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, v_color: torch.Tensor, v_alpha: torch.Tensor):
        n_cams, n = ctx.shape
        n_channels = ctx.arrays[2].shape[1]
        flatten_ids = ctx.tiles[1]
        m = flatten_ids.shape[0]
        rows = [np.zeros((m, 2)), np.zeros((m, 3)), np.zeros((m, n_channels)), np.zeros(m)]
        v_color = np.ascontiguousarray(v_color.detach().to(torch.float64).numpy())
        v_alpha = np.ascontiguousarray(v_alpha.detach()[..., 0].to(torch.float64).numpy())
        kernels.composite_backward(*ctx.arrays, *ctx.tiles, ctx.out_t, ctx.out_count, v_color, v_alpha, *rows)

        index = torch.from_numpy(flatten_ids)
        grads = []
        for row, dtype, tail in zip(rows, ctx.dtypes, [(2,), (3,), (n_channels,), ()]):
            total = torch.zeros((n_cams * n, *tail), dtype=torch.float64).index_add_(
                0, index, torch.from_numpy(row)
            )
            grads.append(total.reshape(n_cams, n, *tail).to(dtype))
        return (*grads, None, None, None)
