"""geo3d core: shared data types, file formats, geometry, metrics, synthetic data and the command line."""

import os

# torch's OpenMP pool and numba's (the CPU rasterizer) spin-wait for work by default, and on a loaded 2-core
# machine they spin against each other: measured here with other jobs running, one rasterizer training step
# (20k Gaussians, 128 x 128) took 0.9 s, with passive waiting 0.25 s (Gaussian projection 140 -> 20 ms).
# It must be set before the OpenMP runtime starts (before torch is imported); a user's own value is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from geo3d.errors import InputError
from geo3d.types import Boxes3D, Cameras, DepthMap, Gaussians, Mesh, ParticleTrajectory, PointCloud

__version__ = "0.1.0"
__all__ = ["Boxes3D", "Cameras", "DepthMap", "Gaussians", "InputError", "Mesh", "ParticleTrajectory", "PointCloud"]
