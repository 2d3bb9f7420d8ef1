"""File formats: readers return geo3d types, writers are atomic (see :mod:`geo3d.io.atomic`).

KITTI object files live in :mod:`geo3d.io.kitti` (import it directly).
"""

from geo3d.io.colmap import ColmapCamera, ColmapImage, ColmapModel, read_colmap_text, write_colmap_text
from geo3d.io.conventions import invert_rigid, opencv_to_opengl, opengl_to_opencv
from geo3d.io.depth_png import read_depth_png, write_depth_png
from geo3d.io.gaussian_ply import read_gaussian_ply, write_gaussian_ply
from geo3d.io.meshes import read_mesh, read_point_cloud, write_mesh, write_point_cloud
from geo3d.io.particles import read_gns_npz, read_lagrangebench, write_gns_npz, write_lagrangebench
from geo3d.io.rgbd import RGBDFrame, RGBDSequence, read_rgbd_sequence, write_intrinsics, write_rgbd_frame
from geo3d.io.transforms_json import MultiViewFrames, read_transforms, write_transforms

__all__ = [
    "ColmapCamera", "ColmapImage", "ColmapModel", "MultiViewFrames", "RGBDFrame", "RGBDSequence",
    "invert_rigid", "opencv_to_opengl", "opengl_to_opencv",
    "read_colmap_text", "read_depth_png", "read_gaussian_ply", "read_gns_npz", "read_lagrangebench",
    "read_mesh", "read_point_cloud", "read_rgbd_sequence", "read_transforms",
    "write_colmap_text", "write_depth_png", "write_gaussian_ply", "write_gns_npz", "write_intrinsics",
    "write_lagrangebench", "write_mesh", "write_point_cloud", "write_rgbd_frame", "write_transforms",
]
