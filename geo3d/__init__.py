"""geo3d core: shared data types, file formats, geometry, metrics, synthetic data and the command line."""

from geo3d.errors import InputError
from geo3d.types import Boxes3D, Cameras, DepthMap, Gaussians, Mesh, ParticleTrajectory, PointCloud

__version__ = "0.1.0"
__all__ = ["Boxes3D", "Cameras", "DepthMap", "Gaussians", "InputError", "Mesh", "ParticleTrajectory", "PointCloud"]
