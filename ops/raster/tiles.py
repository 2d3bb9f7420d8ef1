"""Tile binning: which Gaussians touch which tile, depth-sorted within each tile (vectorised torch).

A Gaussian with pixel radii (rx, ry) touches the tiles overlapped by its box ``mean +- r``
(gsplat's ``isect_tiles`` rule: ``floor((m - r) / s)`` to ``ceil((m + r) / s)``, clipped to the image).
The (camera, tile, Gaussian) pairs are sorted by one integer key, ``global_tile * (C * N) + depth_rank``,
so each tile's Gaussians form one contiguous, front-to-back run of ``flatten_ids``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class TileBins:
    """Depth-sorted tile lists of C images split into ``tile_height x tile_width`` tiles.

    Attributes:
        offsets: (C * tile_height * tile_width + 1,) int64; tile t (row-major within camera, cameras
            one after another) holds ``flatten_ids[offsets[t]:offsets[t + 1]]``.
        flatten_ids: (M,) int64 indices into the flattened (C * N) Gaussians, front to back within a tile.
        tiles_per_gauss: (C, N) int32 number of tiles each Gaussian touches.
        tile_size: tile side, pixels.
        tile_width: tiles per image row.
        tile_height: tiles per image column.
    """

    offsets: torch.Tensor
    flatten_ids: torch.Tensor
    tiles_per_gauss: torch.Tensor
    tile_size: int
    tile_width: int
    tile_height: int


@torch.no_grad()
def bin_gaussians(
    means2d: torch.Tensor, radii: torch.Tensor, depths: torch.Tensor, width: int, height: int, tile_size: int
) -> TileBins:
    """Assign projected Gaussians to image tiles.

    Args:
        means2d: (C, N, 2) float pixel centres.
        radii: (C, N, 2) int32 pixel radii, 0 where culled.
        depths: (C, N) float camera depths, metres (sort key, nearest first).
        width: image width, pixels.
        height: image height, pixels.
        tile_size: tile side, pixels.

    Returns:
        The :class:`TileBins`.
    """
    n_cams, n = radii.shape[:2]
    tile_width, tile_height = math.ceil(width / tile_size), math.ceil(height / tile_size)
    n_tiles = tile_width * tile_height
    centre = means2d.reshape(-1, 2) / tile_size
    half = radii.reshape(-1, 2).to(centre.dtype) / tile_size
    limit = torch.tensor([tile_width, tile_height], device=centre.device)
    lo = torch.minimum(torch.floor(centre - half).long().clamp(min=0), limit)  # (C*N, 2) first tile x, y
    hi = torch.minimum(torch.ceil(centre + half).long().clamp(min=0), limit)  # one past the last tile
    span = hi - lo
    visible = (radii.reshape(-1, 2) > 0).all(dim=-1)
    counts = span.prod(dim=-1) * visible  # (C*N,)

    ids = torch.repeat_interleave(torch.arange(n_cams * n, device=centre.device), counts)  # (M,)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(ids.numel(), device=centre.device) - first[ids]  # position in the Gaussian's box
    tile_x = lo[ids, 0] + local % span[ids, 0]
    tile_y = lo[ids, 1] + local // span[ids, 0]
    tile = (ids // n) * n_tiles + tile_y * tile_width + tile_x  # global tile index

    depth_rank = torch.empty(n_cams * n, dtype=torch.long, device=centre.device)
    depth_rank[torch.argsort(depths.reshape(-1), stable=True)] = torch.arange(
        n_cams * n, device=centre.device
    )
    order = torch.argsort(tile * (n_cams * n) + depth_rank[ids])
    offsets = torch.zeros(n_cams * n_tiles + 1, dtype=torch.long, device=centre.device)
    offsets[1:] = torch.cumsum(torch.bincount(tile, minlength=n_cams * n_tiles), 0)
    return TileBins(
        offsets=offsets,
        flatten_ids=ids[order],
        tiles_per_gauss=counts.reshape(n_cams, n).to(torch.int32),
        tile_size=tile_size,
        tile_width=tile_width,
        tile_height=tile_height,
    )
