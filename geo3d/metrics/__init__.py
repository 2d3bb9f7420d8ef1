"""Metrics shared by the pipelines: image quality, surface geometry, depth maps (KITTI-DC depth errors) and particle
simulation rollouts."""

from geo3d.metrics.depth import depth_metrics, format_depth_metrics
from geo3d.metrics.geometry import mesh_metrics, point_to_mesh_distance
from geo3d.metrics.image import lpips_status, psnr, ssim
from geo3d.metrics.simulation import rollout_metrics

__all__ = [
    "depth_metrics", "format_depth_metrics", "lpips_status", "mesh_metrics", "point_to_mesh_distance", "psnr",
    "rollout_metrics", "ssim",
]
