"""Metrics shared by the pipelines: image quality and surface geometry (depth errors as pipelines need them)."""

from geo3d.metrics.geometry import mesh_metrics, point_to_mesh_distance
from geo3d.metrics.image import lpips_status, psnr, ssim

__all__ = ["lpips_status", "mesh_metrics", "point_to_mesh_distance", "psnr", "ssim"]
