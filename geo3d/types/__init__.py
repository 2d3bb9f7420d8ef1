"""The data types every pipeline shares: plain dataclasses over tensors, validated on construction."""

from geo3d.types.boxes import Boxes3D, box_corners, limit_period, points_in_boxes
from geo3d.types.cameras import Cameras
from geo3d.types.depth import DepthMap
from geo3d.types.gaussians import SH_C0, Gaussians
from geo3d.types.mesh import Mesh
from geo3d.types.particles import ParticleTrajectory
from geo3d.types.pointcloud import PointCloud

__all__ = [
    "SH_C0", "Boxes3D", "Cameras", "DepthMap", "Gaussians", "Mesh", "ParticleTrajectory", "PointCloud",
    "box_corners", "limit_period", "points_in_boxes",
]
