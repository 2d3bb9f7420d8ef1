"""Meshes and point clouds on disk: PLY, OBJ, PCD (and OFF, STL, GLB meshes), via trimesh and Open3D.

* Meshes go through trimesh (PLY, OBJ, OFF, STL, GLB; vertex colours kept, vertex order kept).
* PLY and PCD point clouds go through Open3D's tensor I/O, which keeps every per-point attribute:
  positions, colours, normals and named scalars. Scalars named ``intensity``, ``reflectance`` and
  ``feature_<i>`` become the cloud's feature columns, in that order. Open3D's Python binding drops the
  reader's success flag and only prints a warning on a corrupt file (returning a partly filled cloud),
  so the reader captures that log and raises :class:`InputError` instead.
* OBJ point clouds (``v x y z [r g b]`` lines) go through trimesh: positions and colours only.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_path
from geo3d.types import Mesh, PointCloud

MESH_SUFFIXES = (".ply", ".obj", ".off", ".stl", ".glb")
POINT_CLOUD_SUFFIXES = (".ply", ".pcd", ".obj")
_DEFAULT_FEATURES = ("intensity", "reflectance")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _suffix(path: Path, allowed: Sequence[str], what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise InputError(path, f"unsupported {what} format {suffix or '(no extension)'!r}; expected one of "
                               f"{', '.join(allowed)}")
    return suffix


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    return path


def read_mesh(path: str | os.PathLike) -> Mesh:
    """Read a triangle mesh (PLY, OBJ, OFF, STL, GLB) with trimesh, keeping vertex order and colours.

    Multi-part files (OBJ groups, GLB scenes) are concatenated into one mesh. STL stores unshared
    vertices (three per face), which are kept as they are.

    Args:
        path: mesh file.

    Returns:
        Mesh: vertices (V, 3) float32 (file units, normally metres), faces (F, 3) int64, vertex colours
        (V, 3) float32 in [0, 1] or None.

    Raises:
        InputError: naming the file when it is missing, empty, unreadable or has no faces.
    """
    path = _existing(path)
    _suffix(path, MESH_SUFFIXES, "mesh")
    loaded = _load_trimesh(path)
    if len(loaded.vertices) == 0:
        raise InputError(path, "mesh has no vertices")
    if len(getattr(loaded, "faces", ())) == 0:
        raise InputError(path, "file has no faces (a point cloud? use read_point_cloud)")
    try:
        return Mesh.from_trimesh(loaded)
    except ValueError as e:
        raise InputError(path, str(e)) from e


def write_mesh(path: str | os.PathLike, mesh: Mesh) -> None:
    """Write a mesh with trimesh, atomically; the format follows the suffix (PLY is binary).

    Args:
        path: output file, ``.ply``, ``.obj``, ``.off``, ``.stl`` or ``.glb``.
        mesh: Mesh; vertex colours are written where the format stores them (PLY, OBJ, GLB), as 8-bit.
    """
    path = Path(path)
    _suffix(path, MESH_SUFFIXES, "mesh")
    with atomic_path(path) as tmp:
        mesh.to_trimesh().export(str(tmp))


def _feature_columns(attrs: dict[str, np.ndarray], feature_names: Sequence[str] | None) -> list[str]:
    if feature_names is not None:
        return [name for name in feature_names if name in attrs]
    numbered = sorted((int(k[8:]), k) for k in attrs if re.fullmatch(r"feature_\d+", k))
    return [k for k in _DEFAULT_FEATURES if k in attrs] + [k for _, k in numbered]


def _colors_to_unit(colors: np.ndarray) -> np.ndarray:
    if colors.dtype == np.uint8:
        return colors.astype(np.float32) / 255.0
    if colors.dtype == np.uint16:
        return colors.astype(np.float32) / 65535.0
    return colors.astype(np.float32)


def _read_open3d(path: Path) -> dict[str, np.ndarray]:
    import open3d as o3d

    log = io.StringIO()
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Warning), contextlib.redirect_stdout(log):
        cloud = o3d.t.io.read_point_cloud(str(path))
    messages = [_ANSI.sub("", line).strip() for line in log.getvalue().splitlines()]
    failures = [m for m in messages if "failed" in m.lower() or "error" in m.lower()]
    if failures:
        raise InputError(path, f"corrupt or unreadable point cloud ({failures[0]})")
    return {key: cloud.point[key].numpy() for key in cloud.point}


def _load_trimesh(path: Path):
    """Load with trimesh as one ``Trimesh`` (scenes concatenated) or ``PointCloud``; InputError on failure."""
    import trimesh

    try:
        loaded = trimesh.load(str(path), file_type=path.suffix[1:].lower(), process=False)
        if isinstance(loaded, trimesh.Scene):
            loaded = loaded.to_mesh() if loaded.geometry else trimesh.Trimesh()
    except Exception as e:  # trimesh raises many types (KeyError, ValueError, struct.error...) on bad files
        raise InputError(path, f"not a readable {path.suffix[1:].upper()} file ({type(e).__name__}: {e})") from e
    return loaded


def _read_trimesh_points(path: Path) -> dict[str, np.ndarray]:
    import trimesh

    loaded = _load_trimesh(path)
    attrs = {"positions": np.asarray(loaded.vertices)}
    if isinstance(loaded, trimesh.PointCloud):
        colors = loaded.colors
    elif getattr(loaded.visual, "kind", None) == "vertex":
        colors = loaded.visual.vertex_colors
    else:
        colors = None
    if colors is not None and len(colors) == len(attrs["positions"]) and len(colors):
        attrs["colors"] = np.asarray(colors)[:, :3]
    return attrs


def read_point_cloud(path: str | os.PathLike, feature_names: Sequence[str] | None = None) -> PointCloud:
    """Read a point cloud from PLY, PCD (Open3D) or OBJ (trimesh), keeping colours and normals.

    A mesh file gives its vertices.

    Args:
        path: ``.ply``, ``.pcd`` or ``.obj`` file.
        feature_names: per-point scalar attributes to stack, in order, into ``features``; those absent
            from the file are skipped. None: ``intensity``, ``reflectance``, then ``feature_0``,
            ``feature_1``, ... (whichever exist).

    Returns:
        PointCloud: points (N, 3) float32 (file units, normally metres); features (N, F) float32 or
        None; colours (N, 3) float32 in [0, 1] or None (8-bit colours divided by 255); normals (N, 3)
        float32 or None.

    Raises:
        InputError: naming the file when it is missing, empty, corrupt or has no points.
    """
    path = _existing(path)
    suffix = _suffix(path, POINT_CLOUD_SUFFIXES, "point cloud")
    attrs = _read_open3d(path) if suffix in (".ply", ".pcd") else _read_trimesh_points(path)
    points = attrs.get("positions")
    if points is None or len(points) == 0:
        raise InputError(path, "no points in the file (empty or unreadable)")
    columns = _feature_columns(attrs, feature_names)
    features = np.concatenate([attrs[k].reshape(len(points), -1) for k in columns], 1) if columns else None
    colors = _colors_to_unit(attrs["colors"]) if "colors" in attrs else None
    try:
        return PointCloud(
            np.asarray(points, np.float32),
            None if features is None else features.astype(np.float32),
            colors,
            np.asarray(attrs["normals"], np.float32) if "normals" in attrs else None,
        )
    except ValueError as e:
        raise InputError(path, str(e)) from e


def write_point_cloud(
    path: str | os.PathLike, cloud: PointCloud, feature_names: Sequence[str] | None = None
) -> None:
    """Write a point cloud atomically: PLY (binary) and PCD via Open3D, OBJ via trimesh.

    Args:
        path: output ``.ply``, ``.pcd`` or ``.obj`` file.
        cloud: PointCloud. Colours are stored as 8-bit (so they read back to within 1/510), positions,
            normals and features as float32. OBJ stores positions and colours only (a warning says
            what is dropped).
        feature_names: a name per feature column. None: ``intensity`` for a single column, otherwise
            ``feature_0 ... feature_{F-1}``; :func:`read_point_cloud` reads both back by default.
    """
    path = Path(path)
    suffix = _suffix(path, POINT_CLOUD_SUFFIXES, "point cloud")
    points = cloud.points.detach().cpu().numpy().astype(np.float32)
    colors = None
    if cloud.colors is not None:
        colors = np.round(cloud.colors.detach().cpu().numpy() * 255).clip(0, 255).astype(np.uint8)
    features = None if cloud.features is None else cloud.features.detach().cpu().numpy().astype(np.float32)
    if features is not None:
        if feature_names is None:
            feature_names = ["intensity"] if features.shape[1] == 1 else [f"feature_{i}" for i in range(
                features.shape[1])]
        if len(feature_names) != features.shape[1]:
            raise ValueError(f"write_point_cloud: {len(feature_names)} feature names for "
                             f"{features.shape[1]} feature columns")
    if suffix == ".obj":
        import trimesh

        dropped = [name for name, v in (("normals", cloud.normals), ("features", features)) if v is not None]
        if dropped:
            warnings.warn(f"{path}: OBJ point clouds store positions and colours only; dropping "
                          f"{' and '.join(dropped)}", stacklevel=2)
        rgba = None if colors is None else np.concatenate([colors, np.full((len(colors), 1), 255, np.uint8)], 1)
        with atomic_path(path) as tmp:
            trimesh.PointCloud(points, colors=rgba).export(str(tmp))
        return

    import open3d as o3d

    out = o3d.t.geometry.PointCloud(o3d.core.Tensor(points))
    if colors is not None:
        out.point.colors = o3d.core.Tensor(colors)
    if cloud.normals is not None:
        out.point.normals = o3d.core.Tensor(cloud.normals.detach().cpu().numpy().astype(np.float32))
    for i, name in enumerate(feature_names or ()):
        out.point[name] = o3d.core.Tensor(np.ascontiguousarray(features[:, i : i + 1]))
    with atomic_path(path) as tmp:
        if not o3d.t.io.write_point_cloud(str(tmp), out):
            raise OSError(f"{path}: Open3D failed to write the point cloud")

