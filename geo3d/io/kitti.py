"""KITTI 3D object files: velodyne scans, label_2 objects, calibration, splits, and box conversion.

The format (KITTI object devkit, ``readme.txt``):

- ``velodyne/NNNNNN.bin``: float32 N x 4 ``x, y, z, reflectance``, LiDAR frame (x forward, y left, z up).
- ``label_2/NNNNNN.txt``: one object per line, 15 columns ``type truncated occluded alpha left top right
  bottom h w l x y z rotation_y`` (+ a 16th ``score`` in result files). ``x, y, z`` is the bottom centre
  of the box in the rectified camera frame (x right, y down, z forward), ``rotation_y`` the heading
  about camera y.
- ``calib/NNNNNN.txt``: ``P0``-``P3`` (3 x 4), ``R0_rect`` (3 x 3), ``Tr_velo_to_cam`` (3 x 4),
  ``Tr_imu_to_velo`` (3 x 4), row-major.

Camera box <-> LiDAR box (the OpenPCDet convention used by :class:`geo3d.types.Boxes3D`). The devkit
builds a box from ``l`` along the object's own x axis rotated by ``R_y(ry)``, so its heading in the
camera frame is ``(cos ry, 0, -sin ry)``. The LiDAR axes are ``x_lidar = z_cam``, ``y_lidar = -x_cam``,
``z_lidar = -y_cam`` (up to the small calibration rotation), so the heading in the LiDAR frame is
``(-sin ry, -cos ry) = (cos yaw, sin yaw)`` with ``yaw = -ry - pi/2``. The location moves from the
bottom centre to the centre by ``h / 2`` along LiDAR z; ``dx, dy, dz = l, w, h``. The observation
angle is ``alpha = ry - arctan2(x, z)`` (the heading relative to the ray from the camera to the object),
which reproduces the alpha column of real labels.

This module works in numpy (float64 geometry): the files are numpy arrays, and the conversions run once
per frame in data loading, not in the training graph.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_open, atomic_write_bytes, atomic_write_text
from geo3d.types.boxes import Boxes3D, box_corners

LABEL_COLUMNS = ("type", "truncated", "occluded", "alpha", "left", "top", "right", "bottom",
                 "h", "w", "l", "x", "y", "z", "rotation_y", "score")
# File key -> field name; the variants are the KITTI tracking / raw-data spellings.
_CALIB_KEYS = {
    "P0": "P0", "P1": "P1", "P2": "P2", "P3": "P3",
    "R0_rect": "R0_rect", "R_rect": "R0_rect",
    "Tr_velo_to_cam": "Tr_velo_to_cam", "Tr_velo_cam": "Tr_velo_to_cam",
    "Tr_imu_to_velo": "Tr_imu_to_velo", "Tr_imu_velo": "Tr_imu_to_velo",
}
_CALIB_SHAPES = {"P0": (3, 4), "P1": (3, 4), "P2": (3, 4), "P3": (3, 4), "R0_rect": (3, 3),
                 "Tr_velo_to_cam": (3, 4), "Tr_imu_to_velo": (3, 4)}
_REQUIRED_CALIB = ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam")
MAX_LIDAR_RANGE_M = 1000.0
"""Points of a velodyne scan farther than this from the sensor (metres) are dropped with a warning by
:func:`read_velodyne`. KITTI's HDL-64E sees to about 120 m and long-range automotive LiDARs to 250-500 m;
1 km leaves room for any real sensor while catching scans in other units and corrupt values."""
# Corners closer than this to the camera plane are not projected (metres, rectified z).
_NEAR = 0.1
_BOX_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4],
                       [0, 4], [1, 5], [2, 6], [3, 7]])


@dataclass
class KittiObject:
    """One line of a KITTI label file.

    Attributes:
        type: class name, e.g. ``"Car"``, ``"Pedestrian"``, ``"DontCare"``.
        truncated: fraction of the object outside the image, in [0, 1] (-1 for DontCare).
        occluded: 0 fully visible, 1 partly occluded, 2 largely occluded, 3 unknown (-1 for DontCare).
        alpha: observation angle, radians in [-pi, pi].
        bbox: (left, top, right, bottom) 2D box in image pixels.
        dimensions: (h, w, l) metres.
        location: (x, y, z) bottom centre of the box in the rectified camera frame, metres.
        rotation_y: heading about the camera y axis, radians in [-pi, pi].
        score: detection confidence (16th column), None for ground truth.
    """

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: tuple[float, float, float, float]
    dimensions: tuple[float, float, float]
    location: tuple[float, float, float]
    rotation_y: float
    score: float | None = None


# ----------------------------------------------------------------------------------------------- labels

def read_label(path: str | os.PathLike) -> list[KittiObject]:
    """Read a KITTI ``label_2`` file.

    Args:
        path: the ``.txt`` file; blank lines are skipped.

    Returns:
        One :class:`KittiObject` per line, in file order.

    Raises:
        InputError: a line without 15 or 16 columns, or a column that is not a finite number (``nan``,
            ``inf``).
    """
    objects = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (15, 16):
            raise InputError(path, f"line {lineno}: expected 15 or 16 columns, got {len(parts)}")
        values = []
        for name, text in zip(LABEL_COLUMNS[1:], parts[1:]):
            try:
                value = float(text)
            except ValueError:
                raise InputError(path, f"line {lineno}: column {name!r} is not a number: {text!r}") from None
            if not math.isfinite(value):
                raise InputError(path, f"line {lineno}: column {name!r} is not a finite number: {text!r}")
            values.append(value)
        objects.append(KittiObject(
            type=parts[0], truncated=values[0], occluded=int(values[1]), alpha=values[2],
            bbox=tuple(values[3:7]), dimensions=tuple(values[7:10]), location=tuple(values[10:13]),
            rotation_y=values[13], score=values[14] if len(values) == 15 else None,
        ))
    return objects


def write_label(path: str | os.PathLike, objects: list[KittiObject]) -> None:
    """Write a KITTI ``label_2`` file atomically (16th column = score when it is not None).

    Pixels and truncation are written with 2 decimals (as KITTI), angles, sizes and locations with 4
    (0.1 mm), so synthetic ground truth survives the round trip.

    Args:
        path: the ``.txt`` file to write.
        objects: the objects, one line each.
    """
    lines = []
    for obj in objects:
        if not obj.type or any(c.isspace() for c in obj.type):
            raise ValueError(f"{path}: object type must be one word, got {obj.type!r}")
        line = (f"{obj.type} {obj.truncated:.2f} {int(obj.occluded)} {obj.alpha:.4f} "
                + " ".join(f"{v:.2f}" for v in obj.bbox) + " "
                + " ".join(f"{v:.4f}" for v in (*obj.dimensions, *obj.location, obj.rotation_y)))
        if obj.score is not None:
            line += f" {obj.score:.4f}"
        lines.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in lines))


# --------------------------------------------------------------------------------------------- velodyne

def read_velodyne(path: str | os.PathLike, max_range: float = MAX_LIDAR_RANGE_M) -> np.ndarray:
    """Read a KITTI velodyne scan.

    Points farther than ``max_range`` from the sensor are dropped with a warning naming the file and
    how many (a scan in other units, or corrupt values such as +-1e30); a scan whose points all lie that
    far, or that holds NaN or infinite values, is refused.

    Args:
        path: the ``.bin`` file (float32 N x 4, little-endian).
        max_range: metres; points whose distance from the sensor (the LiDAR frame's origin) exceeds it
            are dropped (default :data:`MAX_LIDAR_RANGE_M`, 1 km). ``math.inf`` keeps every point.

    Returns:
        (M, 4) float32 ``x, y, z`` metres in the LiDAR frame and reflectance in [0, 1], M <= N.

    Raises:
        InputError: the file size is not a multiple of 16 bytes (truncated, or not N x 4 float32), a value
            is NaN or infinite, or every point lies beyond ``max_range``.
    """
    size = os.path.getsize(path)
    if size % 16:
        raise InputError(path, f"truncated or not a KITTI scan: {size} bytes is not a multiple of 16 "
                               "(expected N x 4 float32: x, y, z, reflectance)")
    points = np.fromfile(path, dtype="<f4").reshape(-1, 4)
    finite = np.isfinite(points).all(1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InputError(path, f"{len(bad)} of {len(points)} points hold NaN or infinite values (first: point "
                               f"{bad[0]}, {_fmt(points[bad[0]])}); expected finite x, y, z, reflectance")
    far = np.linalg.norm(points[:, :3].astype(np.float64), axis=1) > max_range
    n_far = int(far.sum())
    if n_far and n_far == len(points):
        raise InputError(path, f"all {n_far} points lie farther than {max_range:g} m from the sensor (e.g. "
                               f"{_fmt(points[0, :3])}): not a LiDAR scan in metres")
    if n_far:
        warnings.warn(f"{path}: dropped {n_far} of {len(points)} points farther than {max_range:g} m from the "
                      "sensor (not LiDAR returns in metres)", stacklevel=2)
        points = points[~far]
    return points


def write_velodyne(path: str | os.PathLike, points: np.ndarray) -> None:
    """Write a KITTI velodyne scan atomically.

    Args:
        path: the ``.bin`` file to write.
        points: (N, 4) ``x, y, z`` metres (LiDAR frame) and reflectance; stored as float32.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f"{path}: points must have shape (N, 4) [x, y, z, reflectance], got {points.shape}")
    atomic_write_bytes(path, np.ascontiguousarray(points, dtype="<f4").tobytes())


# ------------------------------------------------------------------------------------------ calibration

@dataclass
class KittiCalib:
    """The calibration of one KITTI frame (float64 matrices).

    Attributes:
        P0, P1, P2, P3: (3, 4) projection matrices of the rectified cameras (P2: left colour camera).
        R0_rect: (3, 3) rectifying rotation of the reference camera.
        Tr_velo_to_cam: (3, 4) LiDAR -> reference camera (metres).
        Tr_imu_to_velo: (3, 4) IMU -> LiDAR, or None when the file has none (unused by the geometry).
    """

    P0: np.ndarray
    P1: np.ndarray
    P2: np.ndarray
    P3: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    Tr_imu_to_velo: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name, shape in _CALIB_SHAPES.items():
            value = getattr(self, name)
            if value is None and name == "Tr_imu_to_velo":
                continue
            value = np.asarray(value, dtype=np.float64)
            if value.shape != shape:
                raise ValueError(f"KittiCalib.{name}: expected shape {shape}, got {value.shape}")
            setattr(self, name, value)

    def _velo_to_rect(self) -> np.ndarray:
        """(4, 4) homogeneous LiDAR -> rectified camera transform."""
        r0 = np.eye(4)
        r0[:3, :3] = self.R0_rect
        tr = np.eye(4)
        tr[:3] = self.Tr_velo_to_cam
        return r0 @ tr

    def lidar_to_rect(self, points: np.ndarray) -> np.ndarray:
        """LiDAR frame -> rectified camera frame.

        Args:
            points: (N, 3) metres, LiDAR frame.

        Returns:
            (N, 3) float64 metres, rectified camera frame (x right, y down, z forward).
        """
        points = _as_points(points, "points")
        m = self._velo_to_rect()
        return points @ m[:3, :3].T + m[:3, 3]

    def rect_to_lidar(self, points: np.ndarray) -> np.ndarray:
        """Rectified camera frame -> LiDAR frame (the exact inverse of :meth:`lidar_to_rect`).

        Args:
            points: (N, 3) metres, rectified camera frame.

        Returns:
            (N, 3) float64 metres, LiDAR frame.
        """
        points = _as_points(points, "points")
        m = np.linalg.inv(self._velo_to_rect())
        return points @ m[:3, :3].T + m[:3, 3]

    def rect_to_image(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project rectified-camera points into the left colour image with ``P2``.

        Args:
            points: (N, 3) metres, rectified camera frame; depth must be positive for a valid pixel.

        Returns:
            uv: (N, 2) float64 pixel coordinates (u right, v down).
            depth: (N,) float64 rectified z, metres (OpenPCDet's ``pts_rect_depth``).
        """
        points = _as_points(points, "points")
        hom = points @ self.P2[:, :3].T + self.P2[:, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = hom[:, :2] / hom[:, 2:3]
        return uv, points[:, 2].copy()


def read_calib(path: str | os.PathLike) -> KittiCalib:
    """Read a KITTI ``calib`` file (``key: v1 v2 ...`` lines; ``key v1 ...`` also accepted).

    ``R_rect``, ``Tr_velo_cam`` and ``Tr_imu_velo`` are accepted for ``R0_rect``, ``Tr_velo_to_cam`` and
    ``Tr_imu_to_velo``; other keys are ignored.

    Args:
        path: the ``.txt`` file.

    Returns:
        The :class:`KittiCalib`.

    Raises:
        InputError: a missing key (P0-P3, R0_rect, Tr_velo_to_cam), a value that is not a finite number, or a
            matrix with the wrong number of values.
    """
    found: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        key, _, rest = line.partition(":") if ":" in line else line.partition(" ")
        field = _CALIB_KEYS.get(key.strip())
        if field is None:
            continue
        try:
            values = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError:
            raise InputError(path, f"line {lineno}: {key.strip()} has a value that is not a number") from None
        if not np.isfinite(values).all():
            raise InputError(path, f"line {lineno}: {key.strip()} has a value that is not finite (nan or inf)")
        shape = _CALIB_SHAPES[field]
        if values.size != shape[0] * shape[1]:
            raise InputError(path, f"line {lineno}: {key.strip()} expected {shape[0] * shape[1]} values "
                                   f"({shape[0]} x {shape[1]}), got {values.size}")
        found[field] = values.reshape(shape)
    missing = [k for k in _REQUIRED_CALIB if k not in found]
    if missing:
        raise InputError(path, f"missing calibration key(s) {', '.join(missing)} "
                               "(expected P0, P1, P2, P3, R0_rect, Tr_velo_to_cam)")
    return KittiCalib(**found)


def write_calib(path: str | os.PathLike, calib: KittiCalib) -> None:
    """Write a KITTI ``calib`` file atomically (``%.12e`` values, as the KITTI files).

    Args:
        path: the ``.txt`` file to write.
        calib: the calibration; ``Tr_imu_to_velo`` is omitted when None.
    """
    lines = []
    for name in _CALIB_SHAPES:
        value = getattr(calib, name)
        if value is not None:
            lines.append(f"{name}: " + " ".join(f"{v:.12e}" for v in np.asarray(value).reshape(-1)))
    atomic_write_text(path, "\n".join(lines) + "\n\n")


# ---------------------------------------------------------------------------------------- conversions

def objects_to_boxes_lidar(objects: list[KittiObject], calib: KittiCalib,
                           class_names: tuple[str, ...] | list[str]) -> Boxes3D:
    """Convert camera-frame KITTI labels to LiDAR boxes (see the module docstring for the derivation).

    Args:
        objects: labels as read by :func:`read_label`; types not in ``class_names`` (e.g. DontCare) are
            skipped.
        calib: the frame's calibration.
        class_names: the classes to keep; ``labels`` index into it.

    Returns:
        :class:`Boxes3D` with (K, 7) float32 ``x, y, z, dx=l, dy=w, dz=h, yaw`` (LiDAR frame, z at the
        box centre, yaw in [-pi, pi)), labels (K,) int64, scores (K,) float32 when every kept object
        has a score, else None.
    """
    class_names = tuple(class_names)
    kept = [o for o in objects if o.type in class_names]
    boxes = np.zeros((len(kept), 7))
    if kept:
        h, w, l = np.array([o.dimensions for o in kept]).T
        centre = calib.rect_to_lidar(np.array([o.location for o in kept]))
        centre[:, 2] += h / 2
        ry = np.array([o.rotation_y for o in kept])
        boxes = np.column_stack([centre, l, w, h, _wrap(-ry - np.pi / 2)])
    scores = [o.score for o in kept]
    return Boxes3D(
        torch.from_numpy(boxes).float(),
        labels=torch.tensor([class_names.index(o.type) for o in kept], dtype=torch.int64),
        scores=torch.tensor(scores, dtype=torch.float32) if kept and None not in scores else None,
        class_names=class_names,
    )


def boxes_lidar_to_objects(boxes: Boxes3D, calib: KittiCalib,
                           image_size: tuple[int, int] = (1242, 375)) -> list[KittiObject]:
    """Convert LiDAR boxes to KITTI label objects (the inverse of :func:`objects_to_boxes_lidar`).

    The 2D box is the bounding rectangle of the 8 projected corners, clipped to the image
    ``[0, W - 1] x [0, H - 1]``; a box crossing the camera plane is cut at z = 0.1 m first. ``truncated``
    is the fraction of that unclipped rectangle's area outside the image (1 for a box entirely behind
    the camera, whose bbox is then all zeros); ``occluded`` is 0 (a box alone says nothing about
    occlusion). One object per box, in order.

    Args:
        boxes: (N, 7) LiDAR boxes ``x, y, z, dx, dy, dz, yaw``; ``names()`` gives the types and
            ``scores`` (if any) the 16th column.
        calib: the frame's calibration.
        image_size: (width, height) pixels.

    Returns:
        N :class:`KittiObject`, alpha and rotation_y in [-pi, pi).
    """
    width, height = image_size
    b = boxes.boxes.detach().cpu().double().numpy()
    if len(b) == 0:
        return []
    bottom = b[:, :3].copy()
    bottom[:, 2] -= b[:, 5] / 2
    loc = calib.lidar_to_rect(bottom)
    ry = _wrap(-b[:, 6] - np.pi / 2)
    alpha = _wrap(ry - np.arctan2(loc[:, 0], loc[:, 2]))
    corners = calib.lidar_to_rect(box_corners(torch.from_numpy(b)).numpy().reshape(-1, 3)).reshape(-1, 8, 3)
    full = _project_boxes_2d(corners, calib)
    clipped = np.stack([full[:, 0].clip(0, width - 1), full[:, 1].clip(0, height - 1),
                        full[:, 2].clip(0, width - 1), full[:, 3].clip(0, height - 1)], 1)
    clipped = np.nan_to_num(clipped, nan=0.0)
    area_full = (full[:, 2] - full[:, 0]) * (full[:, 3] - full[:, 1])
    area_clip = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        truncated = np.where(area_full > 0, 1 - area_clip / area_full, 1.0)
    truncated = np.nan_to_num(truncated, nan=1.0).clip(0, 1)
    names = boxes.names()
    scores = None if boxes.scores is None else boxes.scores.tolist()
    return [
        KittiObject(
            type=names[i], truncated=float(truncated[i]), occluded=0, alpha=float(alpha[i]),
            bbox=tuple(float(v) for v in clipped[i]), dimensions=(float(b[i, 5]), float(b[i, 4]), float(b[i, 3])),
            location=tuple(float(v) for v in loc[i]), rotation_y=float(ry[i]),
            score=None if scores is None else float(scores[i]),
        )
        for i in range(len(b))
    ]


def points_in_image_fov(points: np.ndarray, calib: KittiCalib,
                        image_size: tuple[int, int] = (1242, 375)) -> np.ndarray:
    """Which LiDAR points project into the left colour image (in front of the camera).

    Args:
        points: (N, 3) metres, LiDAR frame (extra columns are ignored).
        calib: the frame's calibration.
        image_size: (width, height) pixels.

    Returns:
        (N,) bool.
    """
    width, height = image_size
    uv, depth = calib.rect_to_image(calib.lidar_to_rect(np.asarray(points)[:, :3]))
    return (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)


def _project_boxes_2d(corners: np.ndarray, calib: KittiCalib) -> np.ndarray:
    """Unclipped 2D bounding rectangles of boxes given by rectified-camera corners.

    Corners behind the near plane are replaced by the points where the box edges cross it, so a box
    beside the camera still gets the rectangle of its visible part.

    Args:
        corners: (N, 8, 3) float64 metres, rectified camera frame, in :func:`box_corners` order.
        calib: the calibration (``P2``).

    Returns:
        (N, 4) float64 ``left, top, right, bottom`` pixels; NaN for a box wholly behind the plane.
    """
    a, b = corners[:, _BOX_EDGES[:, 0]], corners[:, _BOX_EDGES[:, 1]]  # (N, 12, 3)
    crosses = (a[..., 2] - _NEAR) * (b[..., 2] - _NEAR) < 0
    dz = np.where(crosses, b[..., 2] - a[..., 2], 1.0)
    t = np.where(crosses, (_NEAR - a[..., 2]) / dz, 0.0)
    cut = a + t[..., None] * (b - a)
    pts = np.concatenate([corners, cut], 1)  # (N, 20, 3)
    valid = np.concatenate([corners[..., 2] >= _NEAR, crosses], 1)
    uv, _ = calib.rect_to_image(pts.reshape(-1, 3))
    uv = np.where(valid.reshape(-1, 1), uv, np.nan).reshape(-1, 20, 2)
    out = np.full((len(corners), 4), np.nan)
    ok = valid.any(1)
    out[ok, :2] = np.nanmin(uv[ok], 1)
    out[ok, 2:] = np.nanmax(uv[ok], 1)
    return out


# ------------------------------------------------------------------------------------ splits and frames

def read_split(path: str | os.PathLike) -> list[str]:
    """Read an ``ImageSets/*.txt`` split: one frame id per line (blank lines skipped).

    Args:
        path: the split file.

    Returns:
        Frame ids as strings, e.g. ``["000000", "000003"]``.
    """
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def write_split(path: str | os.PathLike, frame_ids: list[str]) -> None:
    """Write an ``ImageSets/*.txt`` split atomically (one id per line)."""
    with atomic_open(path, "w") as f:
        f.write("".join(f"{i}\n" for i in frame_ids))


@dataclass
class KittiFrame:
    """One KITTI object frame.

    Attributes:
        frame_id: e.g. ``"000001"``.
        points: (N, 4) float32 ``x, y, z`` metres (LiDAR frame), reflectance.
        calib: the frame's calibration.
        objects: the labels, or None when the split has no ``label_2`` file for this frame.
        image_path: ``image_2/<id>.png`` when it exists, else None.
        image_size: (width, height) of the image when it exists, else KITTI's usual (1242, 375).
    """

    frame_id: str
    points: np.ndarray
    calib: KittiCalib
    objects: list[KittiObject] | None
    image_path: Path | None
    image_size: tuple[int, int]


def read_frame(root: str | os.PathLike, frame_id: str | int, split_dir: str = "training") -> KittiFrame:
    """Read ``root/<split_dir>/{velodyne,calib,label_2,image_2}/<frame_id>.*``.

    Args:
        root: the dataset folder (holding ``training/`` and ``ImageSets/``).
        frame_id: ``"000001"`` or 1.
        split_dir: ``"training"`` or ``"testing"``.

    Returns:
        The :class:`KittiFrame`. Velodyne and calib files are required; label and image are optional.
    """
    frame_id = f"{frame_id:06d}" if isinstance(frame_id, int) else str(frame_id)
    base = Path(root) / split_dir
    label_path = base / "label_2" / f"{frame_id}.txt"
    image_path = base / "image_2" / f"{frame_id}.png"
    image_size = (1242, 375)
    if image_path.is_file():
        with Image.open(image_path) as im:
            image_size = im.size
    return KittiFrame(
        frame_id=frame_id,
        points=read_velodyne(base / "velodyne" / f"{frame_id}.bin"),
        calib=read_calib(base / "calib" / f"{frame_id}.txt"),
        objects=read_label(label_path) if label_path.is_file() else None,
        image_path=image_path if image_path.is_file() else None,
        image_size=image_size,
    )


# ---------------------------------------------------------------------------------------------- helpers

def _wrap(angle: np.ndarray) -> np.ndarray:
    """Wrap radians into [-pi, pi)."""
    return angle - np.floor(angle / (2 * math.pi) + 0.5) * 2 * math.pi


def _fmt(values: np.ndarray) -> str:
    """A short ``[x, y, z]`` text of a few numbers for messages (``%g``)."""
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


def _as_points(points, name: str) -> np.ndarray:
    """(N, 3) float64 array, or ValueError naming the field."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{name}: expected shape (N, 3), got {points.shape}")
    return points


def find_kitti_frames(folder: str | os.PathLike) -> tuple[Path, str, list[str]]:
    """Find the frames of a KITTI object folder.

    Args:
        folder: a ``training``-style folder holding ``velodyne/``, ``calib/``, ``label_2/``, or its parent.

    Returns:
        ``(root, split_dir, frame_ids)``: ``root / split_dir`` holds the files; ids sorted.

    Raises:
        InputError: no ``velodyne/`` folder, or no ``.bin`` scan in it.
    """
    folder = Path(folder)
    if (folder / "velodyne").is_dir():
        root, split_dir = folder.parent, folder.name
    elif (folder / "training" / "velodyne").is_dir():
        root, split_dir = folder, "training"
    else:
        if not folder.exists():
            raise InputError(folder, "folder not found (expected a KITTI training folder)")
        raise InputError(folder, "not a KITTI object folder: expected velodyne/, calib/ and label_2/ in it "
                                 "(or in its training/ folder)")
    ids = sorted(p.stem for p in (root / split_dir / "velodyne").glob("*.bin"))
    if not ids:
        raise InputError(root / split_dir / "velodyne", "no .bin scans")
    return root, split_dir, ids
