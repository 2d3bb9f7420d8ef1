"""Metrics shared by the pipelines (image quality now; geometry and depth errors as pipelines need them)."""

from geo3d.metrics.image import lpips_status, psnr, ssim

__all__ = ["lpips_status", "psnr", "ssim"]
