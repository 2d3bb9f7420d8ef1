"""Differentiable 3D Gaussian splatting rasterization: gsplat on CUDA, our tile rasterizer on CPU.

One public function, :func:`rasterize_gaussians`, with the meaning of gsplat 1.5.3's
``gsplat.rasterization(..., packed=False)``. CUDA tensors go to gsplat itself. CPU tensors go to our own
rasterizer (:mod:`ops.raster`), because gsplat's compositing step exists only as a CUDA kernel (its pure-torch
pieces project and bin Gaussians on CPU, but nothing composites them), and a dense torch compositor is far
too slow to train with (25 s for 10k Gaussians at 128x128). The CPU path is:

1. EWA projection and culling (:mod:`ops.raster.projection`, differentiable torch);
2. SH -> RGB when ``sh_degree`` is given (:mod:`ops.raster.colors`);
3. tile binning, depth-sorted per 16x16 tile (:mod:`ops.raster.tiles`);
4. front-to-back compositing with early termination and its analytic backward (:mod:`ops.raster.composite`,
   numba kernels parallel over tiles);
5. background blending ``render + (1 - alpha) * background`` (torch).

Both paths return the same ``meta`` keys that gsplat's ``DefaultStrategy`` reads (``means2d`` with its
gradient retained, ``radii``, ``width``, ``height``, ``n_cameras``, ``gaussian_ids=None``), so densification
works on either device.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from geo3d.errors import require
from ops.raster.colors import sh_to_colors
from ops.raster.composite import composite
from ops.raster.projection import project_gaussians
from ops.raster.tiles import bin_gaussians

RenderMode = Literal["RGB", "RGB+D"]
RasterizeMode = Literal["classic", "antialiased"]


def rasterize_gaussians(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    world_to_cam: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    sh_degree: int | None = None,
    backgrounds: torch.Tensor | None = None,
    render_mode: RenderMode = "RGB",
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    tile_size: int = 16,
    rasterize_mode: RasterizeMode = "classic",
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Render N 3D Gaussians into C pinhole cameras (differentiable w.r.t. every Gaussian input).

    All tensors on one device: CUDA runs gsplat (float32), CPU runs :mod:`ops.raster` (float32 or float64;
    it composites in float64 and returns the input dtype).

    Args:
        means: (N, 3) float centres, world frame, metres.
        quats: (N, 4) rotations ``w, x, y, z`` (need not be normalised).
        scales: (N, 3) standard deviations along the rotated axes (activated, not log), metres.
        opacities: (N,) opacities in (0, 1) (activated, not logits).
        colors: (N, D) colours (any D) when ``sh_degree`` is None, else (N, K, 3) SH coefficients with
            K >= (sh_degree + 1)^2; the colour is then ``max(SH(view dir) + 0.5, 0)``.
        world_to_cam: (C, 4, 4) OpenCV world-to-camera transforms (x right, y down, z forward).
        K: (C, 3, 3) intrinsics, pixels.
        width: image width W, pixels.
        height: image height H, pixels.
        sh_degree: SH degree to use (0-4), or None for plain colours.
        backgrounds: (C, D) (D = 3 with SH) colours blended behind the Gaussians with weight ``1 - alpha``.
        render_mode: "RGB" renders the colours; "RGB+D" appends the accumulated camera depth
            ``sum_i w_i z_i`` (metres, not normalised by alpha) as the last channel.
        near_plane: Gaussians nearer than this camera depth are culled, metres.
        far_plane: Gaussians farther than this camera depth are culled, metres.
        eps2d: dilation added to every 2D covariance, pixels^2 (0.3 ~ a 1-pixel minimum footprint).
        tile_size: tile side for binning, pixels.
        rasterize_mode: "classic", or "antialiased" (opacity scaled by the Mip-Splatting compensation).

    Returns:
        ``(render, alpha, meta)``: render (C, H, W, D or D + 1) and alpha (C, H, W, 1) in the dtype of the
        inputs; meta as gsplat's ``packed=False`` meta: ``means2d`` (C, N, 2) pixels (gradient retained
        when it requires grad), ``radii`` (C, N, 2) int32 (0 = culled), ``depths`` (C, N), ``conics``
        (C, N, 3), ``opacities`` (C, N), ``width``, ``height``, ``n_cameras``, ``tile_size``,
        ``tile_width``, ``tile_height``, ``gaussian_ids``/``camera_ids``/``batch_ids`` None.

    Raises:
        ValueError: (:class:`geo3d.errors.InputError`) naming the argument on a wrong shape, device, size
            or mode.
    """
    _check_inputs(means, quats, scales, opacities, colors, world_to_cam, K, width, height, sh_degree,
                  backgrounds, render_mode, tile_size, rasterize_mode)
    if means.is_cuda:  # gsplat itself; packed=False gives meta the CPU path's (C, N, ...) layout
        from gsplat import rasterization

        return rasterization(means, quats, scales, opacities, colors, world_to_cam, K, width, height,
                             near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
                             packed=False, tile_size=tile_size, backgrounds=backgrounds,
                             render_mode=render_mode, rasterize_mode=rasterize_mode)

    proj = project_gaussians(means, quats, scales, opacities, world_to_cam, K, width, height, near_plane,
                             far_plane, eps2d, antialiased=rasterize_mode == "antialiased")
    n_cams = world_to_cam.shape[0]
    if sh_degree is None:
        view_colors = colors.expand(n_cams, -1, -1)
    else:
        view_colors = sh_to_colors(colors, sh_degree, means, world_to_cam)
    if render_mode == "RGB+D":
        view_colors = torch.cat([view_colors, proj.depths[..., None]], dim=-1)

    bins = bin_gaussians(proj.means2d, proj.radii, proj.depths, width, height, tile_size)
    render, alpha = composite(proj.means2d, proj.conics, view_colors, proj.opacities, bins, width, height)
    if backgrounds is not None:
        if render_mode == "RGB+D":
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(n_cams, 1)], dim=-1)
        render = render + (1.0 - alpha) * backgrounds[:, None, None, :]

    if proj.means2d.requires_grad:
        proj.means2d.retain_grad()
    meta = {
        "batch_ids": None,
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": proj.radii,
        "means2d": proj.means2d,
        "depths": proj.depths,
        "conics": proj.conics,
        "opacities": proj.opacities,
        "tiles_per_gauss": bins.tiles_per_gauss,
        "tile_width": bins.tile_width,
        "tile_height": bins.tile_height,
        "tile_size": tile_size,
        "width": width,
        "height": height,
        "n_batches": 1,
        "n_cameras": n_cams,
    }
    return render, alpha, meta


def _check_inputs(means, quats, scales, opacities, colors, world_to_cam, K, width, height, sh_degree,
                  backgrounds, render_mode, tile_size, rasterize_mode) -> None:
    """Raise InputError naming the first argument whose shape, dtype, device or value is wrong."""
    tensors = {
        "means": means,
        "quats": quats,
        "scales": scales,
        "opacities": opacities,
        "colors": colors,
        "world_to_cam": world_to_cam,
        "K": K,
    }
    if backgrounds is not None:
        tensors["backgrounds"] = backgrounds
    for name, x in tensors.items():
        require(isinstance(x, torch.Tensor), None, f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        require(x.is_floating_point(), None, f"{name}: expected a floating-point tensor, got {x.dtype}")
        require(x.device == means.device, None, f"{name}: on {x.device}, expected {means.device} like means")
    device = means.device
    require(device.type in ("cpu", "cuda"), None, f"means: expected a CPU or CUDA tensor, got {device}")
    require(
        means.dim() == 2 and means.shape[1] == 3, None, f"means: expected (N, 3), got {tuple(means.shape)}"
    )
    n = means.shape[0]
    require(quats.shape == (n, 4), None, f"quats: expected ({n}, 4) w, x, y, z, got {tuple(quats.shape)}")
    require(scales.shape == (n, 3), None, f"scales: expected ({n}, 3), got {tuple(scales.shape)}")
    require(opacities.shape == (n,), None, f"opacities: expected ({n},), got {tuple(opacities.shape)}")
    require(
        world_to_cam.dim() == 3 and world_to_cam.shape[1:] == (4, 4),
        None,
        f"world_to_cam: expected (C, 4, 4), got {tuple(world_to_cam.shape)}",
    )
    n_cams = world_to_cam.shape[0]
    require(K.shape == (n_cams, 3, 3), None, f"K: expected ({n_cams}, 3, 3), got {tuple(K.shape)}")
    if sh_degree is None:
        require(
            colors.dim() == 2 and colors.shape[0] == n,
            None,
            f"colors: expected ({n}, D) colours (sh_degree is None), got {tuple(colors.shape)}",
        )
    else:
        require(
            isinstance(sh_degree, int) and 0 <= sh_degree <= 4,
            None,
            f"sh_degree: expected an int in 0-4 or None, got {sh_degree!r}",
        )
        k = (sh_degree + 1) ** 2
        require(
            colors.dim() == 3 and colors.shape[0] == n and colors.shape[1] >= k and colors.shape[2] == 3,
            None,
            f"colors: expected ({n}, K >= {k}, 3) SH coefficients for sh_degree={sh_degree}, "
            f"got {tuple(colors.shape)}",
        )
    channels = 3 if sh_degree is not None else colors.shape[-1]
    if backgrounds is not None:
        require(
            backgrounds.shape == (n_cams, channels),
            None,
            f"backgrounds: expected ({n_cams}, {channels}), got {tuple(backgrounds.shape)}",
        )
    for name, value in (("width", width), ("height", height), ("tile_size", tile_size)):
        require(isinstance(value, int) and value > 0, None, f"{name}: expected a positive int, got {value!r}")
    require(
        render_mode in ("RGB", "RGB+D"), None, f"render_mode: expected 'RGB' or 'RGB+D', got {render_mode!r}"
    )
    require(
        rasterize_mode in ("classic", "antialiased"),
        None,
        f"rasterize_mode: expected 'classic' or 'antialiased', got {rasterize_mode!r}",
    )
