"""EWA projection of 3D Gaussians to image-plane Gaussians, with gsplat 1.5.3's culling rules.

The covariance and perspective-Jacobian steps reuse gsplat's pure-torch helpers
(``gsplat.cuda._torch_impl``, pinned to 1.5.3 in pyproject.toml), which run on CPU and are autograd-friendly.
What those helpers do not have is the culling and radius rule of gsplat's CUDA projection kernel
(``ProjectionEWA3DGSFused.cu``), which decides which Gaussians are drawn; that part is written here:

- a Gaussian is culled when its camera depth is outside ``[near_plane, far_plane]``, when its opacity is
  below 1/255, or when its bounding box misses the image;
- its radius (pixels, per axis) is ``ceil(extend * sqrt(cov2d_ii))`` with the opacity-aware extent
  ``extend = min(3.33, sqrt(2 ln(255 opacity)))``: beyond it the Gaussian's alpha is below 1/255 and
  would be skipped anyway, so binning by this box loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from gsplat.cuda._torch_impl import _persp_proj, _quat_scale_to_covar_preci, _world_to_cam

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat's ALPHA_THRESHOLD: contributions below it are skipped
MAX_EXTEND = 3.33  # gsplat's largest radius, in standard deviations


@dataclass
class Projection:
    """Image-plane Gaussians for C cameras and N Gaussians (gsplat's ``packed=False`` layout).

    Culled entries (``radii == 0``) hold zeros in ``means2d``, ``conics`` and ``depths``.

    Attributes:
        means2d: (C, N, 2) pixels, x right, y down; pixel (i, j) has its centre at (j + 0.5, i + 0.5).
        conics: (C, N, 3) inverse of the dilated 2D covariance, upper triangle ``[a, b, c]``, 1/pixels^2.
        depths: (C, N) camera-frame z, metres.
        opacities: (C, N) opacities used for compositing (times the antialiasing compensation if any).
        radii: (C, N, 2) int32 bounding-box half sizes in pixels, 0 where culled (gsplat 1.5.3 convention).
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    opacities: torch.Tensor
    radii: torch.Tensor

    @property
    def visible(self) -> torch.Tensor:
        """(C, N) bool: drawn in that camera."""
        return (self.radii > 0).all(dim=-1)


def project_gaussians(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    world_to_cam: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    antialiased: bool = False,
) -> Projection:
    """Project 3D Gaussians into C pinhole cameras (differentiable w.r.t. the Gaussians).

    Args:
        means: (N, 3) float, world frame, metres.
        quats: (N, 4) float rotations ``w, x, y, z`` (normalised here).
        scales: (N, 3) float standard deviations along the rotated axes, metres.
        opacities: (N,) float in (0, 1).
        world_to_cam: (C, 4, 4) float OpenCV world-to-camera transforms.
        K: (C, 3, 3) float intrinsics, pixels.
        width: image width, pixels.
        height: image height, pixels.
        near_plane: Gaussians with camera depth below this are culled, metres.
        far_plane: Gaussians with camera depth above this are culled, metres.
        eps2d: added to the diagonal of every 2D covariance (pixels^2), so each Gaussian covers ~1 pixel.
        antialiased: multiply opacities by ``sqrt(det(cov2d) / det(cov2d + eps2d I))`` (Mip-Splatting).

    Returns:
        The :class:`Projection`; gradients flow to means, quats, scales and opacities through every
        float field.
    """
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False)
    means_c, covars_c = _world_to_cam(means, covars, world_to_cam)  # (C, N, 3), (C, N, 3, 3)
    depths = means_c[..., 2]
    in_depth = (depths >= near_plane) & (depths <= far_plane)
    # Culled Gaussians may sit at z <= 0; give them a harmless point so no inf/nan enters autograd.
    means_c = torch.where(in_depth[..., None], means_c, torch.ones_like(means_c))
    means2d, cov2d = _persp_proj(means_c, covars_c, K, width, height)  # (C, N, 2), (C, N, 2, 2)

    det_orig = cov2d[..., 0, 0] * cov2d[..., 1, 1] - cov2d[..., 0, 1] * cov2d[..., 1, 0]
    cov2d = cov2d + eps2d * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)
    det = cov2d[..., 0, 0] * cov2d[..., 1, 1] - cov2d[..., 0, 1] * cov2d[..., 1, 0]
    safe_det = torch.where(det > 0, det, torch.ones_like(det))
    conics = (
        torch.stack(
            [cov2d[..., 1, 1], -0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 0, 0]], dim=-1
        )
        / safe_det[..., None]
    )

    opacities = opacities.expand(depths.shape)
    if antialiased:
        opacities = opacities * torch.sqrt(torch.clamp(det_orig / safe_det, min=0.0))

    radii = _radii(means2d.detach(), cov2d.detach(), opacities.detach(), in_depth & (det > 0), width, height)
    visible = (radii > 0).all(dim=-1)
    zero = torch.zeros((), dtype=means2d.dtype, device=means2d.device)
    return Projection(
        means2d=torch.where(visible[..., None], means2d, zero),
        conics=torch.where(visible[..., None], conics, zero),
        depths=torch.where(visible, depths, zero),
        opacities=opacities,
        radii=radii,
    )


def _radii(
    means2d: torch.Tensor,
    cov2d: torch.Tensor,
    opacities: torch.Tensor,
    valid: torch.Tensor,
    width: int,
    height: int,
) -> torch.Tensor:
    """(C, N, 2) int32 pixel radii, 0 where culled (gsplat's opacity-aware box and image test)."""
    valid = valid & (opacities >= ALPHA_THRESHOLD)
    extend = torch.sqrt(2.0 * torch.log(torch.clamp(opacities / ALPHA_THRESHOLD, min=1.0)))
    extend = torch.clamp(extend, max=MAX_EXTEND)
    diag = torch.clamp(torch.diagonal(cov2d, dim1=-2, dim2=-1), min=0.0)  # (C, N, 2)
    radius = torch.ceil(extend[..., None] * torch.sqrt(diag))
    size = torch.tensor([width, height], dtype=radius.dtype, device=radius.device)
    inside = ((means2d + radius > 0) & (means2d - radius < size)).all(dim=-1)
    valid = valid & inside & (radius > 0).any(dim=-1)
    return torch.where(valid[..., None], radius, torch.zeros_like(radius)).to(torch.int32)
