"""Per-view RGB from spherical-harmonic coefficients, as gsplat's ``rasterization(sh_degree=...)`` does.

The SH basis is gsplat's own pure-torch one (``gsplat.cuda._torch_impl._spherical_harmonics``, degrees 0-4),
so the CPU and CUDA paths share one convention: the view direction is the Gaussian centre minus the camera
centre, and the colour is ``max(SH(dir) + 0.5, 0)``.
"""

from __future__ import annotations

import torch
from gsplat.cuda._torch_impl import _spherical_harmonics


def sh_to_colors(
    sh: torch.Tensor, sh_degree: int, means: torch.Tensor, world_to_cam: torch.Tensor
) -> torch.Tensor:
    """Evaluate SH colours of N Gaussians seen from C cameras (differentiable w.r.t. ``sh`` and ``means``).

    Args:
        sh: (N, K, 3) float SH coefficients, K >= (sh_degree + 1)^2 (the first ones are used).
        sh_degree: SH degree to evaluate, 0-4.
        means: (N, 3) float Gaussian centres, world frame, metres.
        world_to_cam: (C, 4, 4) float OpenCV world-to-camera transforms.

    Returns:
        (C, N, 3) float RGB, clamped below at 0.
    """
    cam_centres = torch.linalg.inv(world_to_cam)[:, :3, 3]  # (C, 3)
    dirs = means[None, :, :] - cam_centres[:, None, :]  # (C, N, 3)
    coeffs = sh[None].expand(dirs.shape[0], -1, -1, -1)  # (C, N, K, 3)
    return torch.clamp_min(_spherical_harmonics(sh_degree, dirs, coeffs) + 0.5, 0.0)
