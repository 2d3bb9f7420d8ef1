"""View files: point clouds, meshes, 3D Gaussian splats and KITTI frames, in a window or as a headless PNG.

File types, by extension:

* ``.bin``: a KITTI velodyne scan, coloured by reflectance; the sensor is at the origin.
* ``.ply`` / ``.obj``: a mesh when the file has faces, else a point cloud (see :func:`_has_faces`);
  a ``.ply`` whose vertices have the 3D Gaussian splatting properties (``f_dc_0``, ``opacity``,
  ``scale_0``, ``rot_0``) is read as Gaussians and drawn as coloured centres or ellipsoids (see
  :meth:`viewers.scene.Scene.add_gaussians`).
* ``.off`` / ``.stl`` / ``.glb``: meshes; ``.pcd`` / ``.xyz``: point clouds. Clouds with colours are
  drawn in them, else by intensity when they have one, else by height.
* ``.json``: a NeRF-synthetic / instant-ngp ``transforms.json``: its cameras, drawn as frustums (frames
  whose image is missing are skipped with a warning, as :func:`geo3d.io.read_transforms` does).

Depth maps (16-bit ``.png``, ``.npy``) are shown by :func:`viewers.depth.view_depth` (``geo3d view --depth``).

KITTI ``label_2`` boxes (``boxes``, ground truth, green) and result files (``pred``, with scores, red) are
converted to the LiDAR frame with the frame's ``calib``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open3d as o3d

from geo3d.errors import InputError
from geo3d.io import read_gaussian_ply, read_mesh, read_point_cloud
from geo3d.io.kitti import objects_to_boxes_lidar, read_calib, read_label, read_velodyne
from geo3d.io.transforms_json import read_transforms
from geo3d.types import PointCloud
from viewers.colors import GROUND_TRUTH, PREDICTION
from viewers.render import render_png
from viewers.scene import GaussianMode, Scene
from viewers.window import has_display, show

MESH_SUFFIXES = (".ply", ".obj", ".off", ".stl", ".glb")
CLOUD_SUFFIXES = (".bin", ".ply", ".obj", ".pcd", ".xyz")
CAMERA_SUFFIXES = (".json",)
DEPTH_SUFFIXES = (".png", ".npy")
"""Depth maps: not read here; see :func:`viewers.depth.view_depth` (``geo3d view --depth``)."""
GAUSSIAN_PROPERTIES = ("f_dc_0", "opacity", "scale_0", "rot_0")
"""Vertex properties that mark a PLY file as 3D Gaussian splatting output."""
PathLike = str | os.PathLike


def _has_faces(path: Path) -> bool:
    """Whether a PLY or OBJ file holds faces, from its header (PLY) or its ``f`` lines (OBJ).

    Written here so a file is read once, by the right reader: both formats store meshes and point
    clouds, and trimesh/Open3D only tell them apart after a full load.
    """
    if path.suffix.lower() == ".ply":
        with open(path, "rb") as f:
            for raw in f:
                words = raw.decode("ascii", errors="replace").split()
                if words[:2] == ["element", "face"] and len(words) == 3:
                    return words[2].isdigit() and int(words[2]) > 0
                if words[:1] == ["end_header"]:
                    return False
        return False
    with open(path, encoding="utf-8", errors="replace") as f:
        return any(line.startswith("f ") for line in f)


def _is_gaussian_ply(path: Path) -> bool:
    """Whether a PLY file's header gives its vertices all of :data:`GAUSSIAN_PROPERTIES` (3DGS output)."""
    if path.suffix.lower() != ".ply":
        return False
    properties, element = set(), None
    with open(path, "rb") as f:
        for raw in f:
            words = raw.decode("ascii", errors="replace").split()
            if words[:1] == ["end_header"]:
                break
            if words[:1] == ["element"] and len(words) > 1:
                element = words[1]
            elif words[:1] == ["property"] and element == "vertex":
                properties.add(words[-1])
    return set(GAUSSIAN_PROPERTIES) <= properties


def _read_xyz(path: Path) -> PointCloud:
    """An ASCII ``x y z`` file (extra columns ignored), via Open3D."""
    pcd = o3d.io.read_point_cloud(str(path), format="xyz")
    if len(pcd.points) == 0:
        raise InputError(path, "no points read (expected ASCII lines 'x y z')")
    return PointCloud(np.asarray(pcd.points, np.float32))


def _add_file(scene: Scene, path: Path, gaussians: GaussianMode = "centres") -> str:
    """Load one file into the scene; returns a short description for the title."""
    suffix = path.suffix.lower()
    known = MESH_SUFFIXES + CLOUD_SUFFIXES + CAMERA_SUFFIXES
    if suffix in DEPTH_SUFFIXES:
        raise InputError(path, f"{suffix} files are read as depth maps only with --depth "
                               "(viewers.depth.view_depth); expected a point cloud, mesh or transforms.json here")
    if suffix not in known:
        raise InputError(path, f"unknown file type {suffix or '(no extension)'!r}; expected one of "
                               f"{', '.join(sorted(set(known)))}")
    if not path.is_file():
        raise InputError(path, "file not found")
    if suffix == ".json":
        cameras = read_transforms(path).cameras
        scene.add_cameras(cameras, label=f"cameras ({len(cameras)})")
        return f"{path.name}: {len(cameras)} cameras"
    if suffix == ".bin":
        scan = read_velodyne(path)
        if len(scan) == 0:
            raise InputError(path, "the scan holds no points")
        scene.add_points(PointCloud(scan[:, :3], features=scan[:, 3:4]), color_by="intensity", point_size=3.0,
                         sensor=(0.0, 0.0, 0.0))
        return f"{path.name}: {len(scan):,} points"
    if _is_gaussian_ply(path):
        splats = read_gaussian_ply(path)
        scene.add_gaussians(splats, mode=gaussians)
        return f"{path.name}: {len(splats):,} Gaussians (degree {splats.sh_degree} SH)"
    if suffix in (".off", ".stl", ".glb") or (suffix in (".ply", ".obj") and _has_faces(path)):
        mesh = read_mesh(path)
        scene.add_mesh(mesh)
        return f"{path.name}: {mesh.num_faces:,} faces"
    cloud = _read_xyz(path) if suffix == ".xyz" else read_point_cloud(path)
    color_by = "rgb" if cloud.colors is not None else "intensity" if cloud.features is not None else "height"
    scene.add_points(cloud, color_by=color_by)
    return f"{path.name}: {len(cloud):,} points"


def _add_labels(scene: Scene, label_path: PathLike, calib_path: PathLike | None, what: str) -> int:
    """Add the boxes of a KITTI label/result file; returns how many."""
    label_path = Path(label_path)
    if not label_path.is_file():
        raise InputError(label_path, "file not found")
    if calib_path is None:
        raise InputError(label_path, f"{what} are in the camera frame: a KITTI calib file is needed to place them "
                                     "(pass calib=... / --calib)")
    if not Path(calib_path).is_file():
        raise InputError(calib_path, "file not found")
    objects = [o for o in read_label(label_path) if o.type != "DontCare"]
    classes = tuple(dict.fromkeys(o.type for o in objects))
    calib = read_calib(calib_path)
    try:
        boxes = objects_to_boxes_lidar(objects, calib, classes)
    except ValueError as err:  # e.g. a size <= 0: name the file, not only the Boxes3D field
        raise InputError(label_path, f"{err} (with calib {calib_path})") from None
    if what == "predictions":
        scene.add_boxes(boxes, PREDICTION, f"prediction ({len(boxes)})")
    else:
        scene.add_boxes(boxes, GROUND_TRUTH, f"ground truth ({len(boxes)})")
    return len(boxes)


def load_scene(
    paths: Sequence[PathLike] | PathLike,
    boxes: PathLike | None = None,
    calib: PathLike | None = None,
    pred: PathLike | None = None,
    gaussians: GaussianMode = "centres",
) -> tuple[Scene, str]:
    """Load files and KITTI boxes into one scene (what :func:`view_files` shows).

    Args:
        paths: point clouds and meshes (see the module docstring for the types).
        boxes: a KITTI ``label_2`` file: ground-truth boxes, green, tagged with their class. DontCare
            lines are skipped.
        calib: the KITTI ``calib`` file of the frame; needed with ``boxes`` or ``pred``.
        pred: a KITTI result file (16th column = score): predictions, red, tagged ``"Car 0.87"``.
        gaussians: how to draw 3DGS PLY files: ``"centres"`` (a point per Gaussian) or ``"ellipsoids"``
            (the largest as 2-sigma ellipsoids, the rest as centres).

    Returns:
        The scene and a one-line title, e.g. ``"000001.bin: 120,268 points, 3 boxes"``.

    Raises:
        InputError: a file is missing or of an unknown type, or boxes come without calib.
    """
    paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not paths:
        raise InputError(None, "no files given")
    scene = Scene()
    if gaussians not in ("centres", "ellipsoids"):
        raise InputError(None, f"gaussians: expected 'centres' or 'ellipsoids', got {gaussians!r}")
    parts = [_add_file(scene, path, gaussians) for path in paths]
    if boxes is not None:
        parts.append(f"{_add_labels(scene, boxes, calib, 'labels')} boxes")
    if pred is not None:
        parts.append(f"{_add_labels(scene, pred, calib, 'predictions')} predictions")
    return scene, ", ".join(parts)


def view_files(
    paths: Sequence[PathLike] | PathLike,
    boxes: PathLike | None = None,
    calib: PathLike | None = None,
    pred: PathLike | None = None,
    out: PathLike | None = None,
    width: int = 1280,
    height: int = 720,
    view: str = "auto",
    gaussians: GaussianMode = "centres",
) -> Path | None:
    """Show files together: in an Open3D window, or rendered headless to a PNG.

    Args:
        paths: point clouds and meshes (see the module docstring for the types).
        boxes: a KITTI ``label_2`` file: ground-truth boxes (green).
        calib: the KITTI ``calib`` file of the frame; needed with ``boxes`` or ``pred``.
        pred: a KITTI result file with scores: predicted boxes (red, tagged with class and score).
        out: write a PNG here instead of opening a window. Without ``out`` and without a display,
            the PNG goes to ``<first file's stem>_view.png`` in the current folder (printed).
        width: window / image width in pixels.
        height: window / image height in pixels.
        view: ``"auto"``, ``"bev"`` or ``"front"`` (see :func:`viewers.render.frame_camera`).
        gaussians: how to draw 3DGS PLY files: ``"centres"`` or ``"ellipsoids"`` (see :func:`load_scene`).

    Returns:
        The PNG path, or None when a window was shown.

    Raises:
        InputError: a file is missing or of an unknown type, or boxes come without calib.
    """
    scene, title = load_scene(paths, boxes, calib, pred, gaussians)
    if out is None and has_display():
        show(scene, title, width, height, view)
        return None
    if out is None:
        first = Path(paths) if isinstance(paths, (str, os.PathLike)) else Path(next(iter(paths)))
        out = Path.cwd() / f"{first.stem}_view.png"
        print(f"no display found: rendering headless to {out} (choose the file with out=... / --out)")
    return render_png(scene, out, width, height, view, title)
