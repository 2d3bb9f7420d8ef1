"""Dense, obviously-correct torch reference of :func:`ops.rasterize.rasterize_gaussians` (tests, benchmark).

Every pixel is evaluated against every Gaussian; autograd provides the gradients. It shares no code with the
fast path: the projection (quaternion -> rotation, covariance, perspective Jacobian, 2D covariance inverse),
the SH basis (3DGS's polynomial form, degrees 0-3) and the compositing are written out here from the
formulas, with gsplat 1.5.3's rules:

- Gaussians with camera depth outside ``[near_plane, far_plane]`` are dropped;
- the Jacobian uses camera-frame x/z, y/z clamped to the image plus 15 % of its size per side (gsplat's
  ``persp_proj``);
- the 2D covariance gets ``eps2d`` on its diagonal; pixel centres are at ``+0.5``;
- ``alpha = min(0.999, opacity * exp(-sigma))``, skipped when ``sigma < 0`` or ``alpha < 1/255``;
- Gaussians are composited nearest first; a pixel stops before the Gaussian that would bring its
  transmittance to ``<= 1e-4``; the background is added with weight ``1 - alpha``.

Memory is (pixels x Gaussians) per camera; ``pixel_chunk`` bounds it by recomputing each chunk of pixels in
the backward pass (``torch.utils.checkpoint``).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def quat_to_rotation(quats: torch.Tensor) -> torch.Tensor:
    """(N, 4) ``w, x, y, z`` quaternions (any norm) -> (N, 3, 3) ``(w^2 - v.v) I + 2 v v^T + 2 w [v]_x``."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, v = q[:, 0], q[:, 1:]
    eye = torch.eye(3, dtype=q.dtype)
    cross = torch.zeros(q.shape[0], 3, 3, dtype=q.dtype)
    cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    cross = cross - cross.transpose(1, 2)
    return (
        (w * w - (v * v).sum(-1))[:, None, None] * eye
        + 2 * v[:, :, None] * v[:, None, :]
        + 2 * w[:, None, None] * cross
    )


def project_reference(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    world_to_cam: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    eps2d: float = 0.3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project N Gaussians into one camera.

    Args:
        means: (N, 3) world, metres (all must be in front of the camera).
        quats: (N, 4) ``w, x, y, z``.
        scales: (N, 3) standard deviations, metres.
        world_to_cam: (4, 4) OpenCV world-to-camera.
        K: (3, 3) intrinsics.
        width: image width, pixels.
        height: image height, pixels.
        eps2d: 2D dilation, pixels^2.

    Returns:
        ``(means2d (N, 2), cov2d (N, 2, 2) dilated, cov2d_orig (N, 2, 2) undilated, depths (N,))``.
    """
    rot = quat_to_rotation(quats)
    cov3d = rot @ torch.diag_embed(scales**2) @ rot.transpose(1, 2)
    r_wc, t_wc = world_to_cam[:3, :3], world_to_cam[:3, 3]
    p = means @ r_wc.T + t_wc
    cov_c = r_wc @ cov3d @ r_wc.T
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x, y, z = p.unbind(-1)
    u = torch.clamp(x / z, min=-(cx / fx + 0.15 * width / fx), max=(width - cx) / fx + 0.15 * width / fx)
    v = torch.clamp(y / z, min=-(cy / fy + 0.15 * height / fy), max=(height - cy) / fy + 0.15 * height / fy)
    zero = torch.zeros_like(z)
    jac = torch.stack(
        [torch.stack([fx / z, zero, -fx * u / z], -1), torch.stack([zero, fy / z, -fy * v / z], -1)], dim=1
    )  # (N, 2, 3)
    cov2d_orig = jac @ cov_c @ jac.transpose(1, 2)
    cov2d = cov2d_orig + eps2d * torch.eye(2, dtype=means.dtype)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)
    return means2d, cov2d, cov2d_orig, z


def sh_reference(sh: torch.Tensor, degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """(N, 3) RGB from SH coefficients (N, K, 3) along directions (N, 3), degree 0-3: ``max(SH + 0.5, 0)``."""
    d = dirs / dirs.norm(dim=-1, keepdim=True)
    x, y, z = d.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    basis = [torch.full_like(x, 0.28209479177387814)]
    if degree >= 1:
        basis += [-0.4886025119029199 * y, 0.4886025119029199 * z, -0.4886025119029199 * x]
    if degree >= 2:
        basis += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.31539156525252005 * (2 * zz - xx - yy),
            -1.0925484305920792 * x * z,
            0.5462742152960396 * (xx - yy),
        ]
    if degree >= 3:
        basis += [
            -0.5900435899266435 * y * (3 * xx - yy),
            2.890611442640554 * x * y * z,
            -0.4570457994644658 * y * (4 * zz - xx - yy),
            0.3731763325901154 * z * (2 * zz - 3 * xx - 3 * yy),
            -0.4570457994644658 * x * (4 * zz - xx - yy),
            1.445305721320277 * z * (xx - yy),
            -0.5900435899266435 * x * (xx - 3 * yy),
        ]
    if degree > 3:
        raise ValueError(f"sh_reference: degree {degree} not supported (0-3)")
    basis = torch.stack(basis, dim=-1)  # (N, (degree + 1)^2)
    rgb = (basis[:, :, None] * sh[:, : basis.shape[1]]).sum(dim=1)
    return torch.clamp_min(rgb + 0.5, 0.0)


def composite_reference(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    depths: torch.Tensor,
    width: int,
    height: int,
    pixel_chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite M image-plane Gaussians of one camera, nearest first, at every pixel.

    Args:
        means2d: (M, 2) pixels.
        conics: (M, 2, 2) inverse dilated 2D covariances.
        opacities: (M,).
        colors: (M, D).
        depths: (M,) sort key, nearest first.
        width: image width, pixels.
        height: image height, pixels.
        pixel_chunk: pixels per checkpointed chunk (None: all at once).

    Returns:
        ``(colors (H, W, D) without background, alpha (H, W, 1))``.
    """
    order = torch.argsort(depths, stable=True)
    means2d, conics, opacities, colors = means2d[order], conics[order], opacities[order], colors[order]
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=means2d.dtype), torch.arange(width, dtype=means2d.dtype), indexing="ij"
    )
    pixels = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1) + 0.5  # (P, 2)
    chunk = pixel_chunk or pixels.shape[0]
    outs = []
    for start in range(0, pixels.shape[0], chunk):
        args = (pixels[start : start + chunk], means2d, conics, opacities, colors)
        outs.append(
            checkpoint(_composite_pixels, *args, use_reentrant=False)
            if pixel_chunk
            else _composite_pixels(*args)
        )
    out = torch.cat(outs).reshape(height, width, -1)
    return out[..., :-1], out[..., -1:]


def _composite_pixels(pixels, means2d, conics, opacities, colors):
    """(P, 2) pixel centres -> (P, D + 1) composited colour and alpha, Gaussians already sorted."""
    delta = means2d[None, :, :] - pixels[:, None, :]  # (P, M, 2)
    sigma = 0.5 * torch.einsum("pmi,mij,pmj->pm", delta, conics, delta)
    alpha = torch.clamp(opacities[None, :] * torch.exp(-sigma), max=0.999)
    alpha = torch.where((sigma >= 0) & (alpha >= 1.0 / 255.0), alpha, torch.zeros_like(alpha))
    # a pixel stops before the first Gaussian whose "after" transmittance is <= 1e-4
    after = torch.cumprod(1.0 - alpha, dim=1)
    alive = torch.cumsum((after <= 1e-4).to(torch.int32), dim=1) == 0
    alpha = alpha * alive
    before = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1]], dim=1), dim=1)
    weights = alpha * before  # (P, M)
    final_t = before[:, -1:] * (1.0 - alpha[:, -1:]) if alpha.shape[1] else torch.ones_like(pixels[:, :1])
    return torch.cat([weights @ colors, 1.0 - final_t], dim=1)


def rasterize_reference(
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
    render_mode: str = "RGB",
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    rasterize_mode: str = "classic",
    pixel_chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense reference of :func:`ops.rasterize.rasterize_gaussians` (same arguments, SH degree <= 3).

    Returns:
        ``(render (C, H, W, D or D + 1), alpha (C, H, W, 1))``.
    """
    renders, alphas = [], []
    for cam in range(world_to_cam.shape[0]):
        cam_centre = torch.linalg.inv(world_to_cam[cam])[:3, 3]
        depth = means @ world_to_cam[cam, 2, :3] + world_to_cam[cam, 2, 3]
        keep = torch.nonzero((depth >= near_plane) & (depth <= far_plane))[:, 0]
        means2d, cov2d, cov2d_orig, depths = project_reference(
            means[keep], quats[keep], scales[keep], world_to_cam[cam], K[cam], width, height, eps2d
        )
        opac = opacities[keep]
        if rasterize_mode == "antialiased":
            opac = opac * torch.sqrt(
                torch.clamp(torch.linalg.det(cov2d_orig) / torch.linalg.det(cov2d), min=0.0)
            )
        if sh_degree is None:
            col = colors[keep]
        else:
            col = sh_reference(colors[keep], sh_degree, means[keep] - cam_centre)
        if render_mode == "RGB+D":
            col = torch.cat([col, depths[:, None]], dim=-1)
        render, alpha = composite_reference(
            means2d, torch.linalg.inv(cov2d), opac, col, depths, width, height, pixel_chunk
        )
        if backgrounds is not None:
            bg = backgrounds[cam]
            if render_mode == "RGB+D":
                bg = torch.cat([bg, bg.new_zeros(1)])
            render = render + (1.0 - alpha) * bg
        renders.append(render)
        alphas.append(alpha)
    return torch.stack(renders), torch.stack(alphas)
