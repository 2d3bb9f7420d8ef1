"""Image-quality metrics for novel-view synthesis: PSNR and SSIM, over the full image or a mask.

SSIM is kornia's (Gaussian window 11, sigma 1.5, the constants of Wang et al. 2004, as the 3DGS evaluation
uses); the masked variant averages the per-pixel SSIM map over the mask. LPIPS needs network weights that
are downloaded on first use; :func:`lpips_status` tells whether they are already on this machine, so an
evaluation can skip LPIPS with a stated reason instead of trying to download them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import kornia
import torch


def _check(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> None:
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"expected pred and target of one shape (B, H, W, C), got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    if mask is not None and mask.shape != pred.shape[:3]:
        raise ValueError(f"mask: expected {tuple(pred.shape[:3])} (B, H, W), got {tuple(mask.shape)}")


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, for values in [0, 1].

    Args:
        pred: (B, H, W, C) float images in [0, 1].
        target: (B, H, W, C) float images in [0, 1].
        mask: (B, H, W) bool or {0, 1} float: only these pixels count (all channels); None for all pixels.

    Returns:
        (B,) float64 PSNR in dB: ``-10 log10(MSE)``; +inf for identical images.
    """
    _check(pred, target, mask)
    sq = (pred.double() - target.double()).square().mean(-1)  # (B, H, W)
    if mask is None:
        mse = sq.flatten(1).mean(1)
    else:
        w = mask.double()
        mse = (sq * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1.0)
    return -10.0 * torch.log10(mse)


def ssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
         window_size: int = 11) -> torch.Tensor:
    """Structural similarity per image (kornia's SSIM map, 11 x 11 Gaussian window), for values in [0, 1].

    Args:
        pred: (B, H, W, C) float images in [0, 1].
        target: (B, H, W, C) float images in [0, 1].
        mask: (B, H, W) bool or {0, 1} float: the map is averaged over these pixels; None for all.
        window_size: Gaussian window side, pixels.

    Returns:
        (B,) float64 mean SSIM (1 for identical images).
    """
    _check(pred, target, mask)
    ssim_map = kornia.metrics.ssim(pred.permute(0, 3, 1, 2).double(), target.permute(0, 3, 1, 2).double(),
                                   window_size).mean(1)  # (B, H, W)
    if mask is None:
        return ssim_map.flatten(1).mean(1)
    w = mask.double()
    return (ssim_map * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1.0)


def lpips_status() -> tuple[bool, str]:
    """Whether LPIPS can run without downloading anything.

    Returns:
        ``(available, reason)``: available when the ``lpips`` package is installed and its VGG/AlexNet
        backbone weights are in the torch hub cache; otherwise the reason it is not.
    """
    if importlib.util.find_spec("lpips") is None:
        return False, "LPIPS skipped: the lpips package is not installed"
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if not any(checkpoints.glob("alexnet-*.pth")) and not any(checkpoints.glob("vgg16-*.pth")):
        return False, f"LPIPS skipped: no AlexNet/VGG weights in {checkpoints} (they would be downloaded)"
    return True, "LPIPS available"
