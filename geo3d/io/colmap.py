"""COLMAP sparse models in text form: ``cameras.txt``, ``images.txt``, ``points3D.txt``.

COLMAP's poses are world-to-camera in the OpenCV convention (quaternion ``qw qx qy qz`` and
translation), and its pixel coordinates put the centre of the top-left pixel at (0.5, 0.5), the same as
geo3d's :class:`~geo3d.types.Cameras`, so K and poses are used as they are. Only the text format is
handled (``colmap model_converter --output_type TXT`` converts binary models). The parser is our own:
the format is a few whitespace-separated lines, COLMAP's ``read_write_model.py`` is a script rather than
a package, and pycolmap would be a large compiled dependency for it. Quaternions go through scipy's
``Rotation`` (which orders them x, y, z, w).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_write_text
from geo3d.types import Cameras, PointCloud

# Parameter names per camera model, in COLMAP's order (src/colmap/sensor/models.h).
CAMERA_MODELS: dict[str, tuple[str, ...]] = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
    "OPENCV_FISHEYE": ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4"),
    "FULL_OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"),
}


@dataclass
class ColmapCamera:
    """One COLMAP camera (intrinsics shared by the images that use it).

    Attributes:
        camera_id: COLMAP's id.
        model: a key of :data:`CAMERA_MODELS`, e.g. ``"PINHOLE"``.
        width: image width in pixels.
        height: image height in pixels.
        params: (P,) float64 parameters in COLMAP's order for the model (pixels; distortion unitless).
    """

    camera_id: int
    model: str
    width: int
    height: int
    params: np.ndarray

    def __post_init__(self) -> None:
        if self.model not in CAMERA_MODELS:
            raise ValueError(f"ColmapCamera.model: unsupported {self.model!r}; expected one of "
                             f"{', '.join(CAMERA_MODELS)}")
        self.params = np.asarray(self.params, dtype=np.float64).reshape(-1)
        if len(self.params) != len(CAMERA_MODELS[self.model]):
            raise ValueError(f"ColmapCamera.params: {self.model} takes {len(CAMERA_MODELS[self.model])} "
                             f"parameters ({' '.join(CAMERA_MODELS[self.model])}), got {len(self.params)}")

    @property
    def K(self) -> torch.Tensor:
        """(3, 3) float32 pinhole intrinsics in pixels (distortion not included)."""
        p = dict(zip(CAMERA_MODELS[self.model], self.params.tolist()))
        fx, fy = (p["f"], p["f"]) if "f" in p else (p["fx"], p["fy"])
        return torch.tensor([[fx, 0, p["cx"]], [0, fy, p["cy"]], [0, 0, 1]], dtype=torch.float32)

    @property
    def distortion(self) -> dict[str, float]:
        """Distortion coefficients by name (empty for pinhole models; ``k`` of SIMPLE_RADIAL as ``k1``)."""
        names = CAMERA_MODELS[self.model]
        out = {n: v for n, v in zip(names, self.params.tolist()) if n not in ("f", "fx", "fy", "cx", "cy")}
        return {"k1" if n == "k" else n: v for n, v in out.items()}


@dataclass
class ColmapImage:
    """One registered image.

    Attributes:
        image_id: COLMAP's id.
        name: image file name, relative to the image folder.
        camera_id: id of its :class:`ColmapCamera`.
        qvec: (4,) float64 world-to-camera rotation quaternion ``w, x, y, z``.
        tvec: (3,) float64 world-to-camera translation, metres (model units).
        xys: (M, 2) float64 2D keypoints in pixels.
        point3d_ids: (M,) int64 id of the 3D point each keypoint observes, -1 for none.
    """

    image_id: int
    name: str
    camera_id: int
    qvec: np.ndarray
    tvec: np.ndarray
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point3d_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        self.qvec = np.asarray(self.qvec, dtype=np.float64).reshape(4)
        self.tvec = np.asarray(self.tvec, dtype=np.float64).reshape(3)
        self.xys = np.asarray(self.xys, dtype=np.float64).reshape(-1, 2)
        self.point3d_ids = np.asarray(self.point3d_ids, dtype=np.int64).reshape(-1)
        if len(self.point3d_ids) != len(self.xys):
            raise ValueError(f"ColmapImage {self.name}: {len(self.xys)} keypoints but "
                             f"{len(self.point3d_ids)} point ids")
        if not np.linalg.norm(self.qvec) > 0:
            raise ValueError(f"ColmapImage {self.name}: zero quaternion")

    @property
    def world_to_cam(self) -> torch.Tensor:
        """(4, 4) float32 world-to-camera transform (OpenCV camera frame)."""
        out = np.eye(4)
        out[:3, :3] = Rotation.from_quat(np.roll(self.qvec, -1)).as_matrix()  # scipy wants x, y, z, w
        out[:3, 3] = self.tvec
        return torch.from_numpy(out).float()

    @staticmethod
    def pose_from_world_to_cam(world_to_cam: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``(qvec (4,) wxyz, tvec (3,))`` float64 for a (4, 4) world-to-camera transform (qw >= 0)."""
        m = world_to_cam.detach().cpu().double().numpy()
        q = np.roll(Rotation.from_matrix(m[:3, :3]).as_quat(), 1)  # x, y, z, w -> w, x, y, z
        return (q if q[0] >= 0 else -q), m[:3, 3].copy()


@dataclass
class ColmapModel:
    """A COLMAP sparse reconstruction.

    Attributes:
        cameras: cameras by id.
        images: registered images, sorted by image id.
        points: the 3D points (P, 3) float32 metres (model units) with colours (P, 3) float32 in [0, 1].
        point_ids: (P,) int64 COLMAP ids of ``points``.
        point_errors: (P,) float32 mean reprojection errors in pixels.
        tracks: per point, (L, 2) int64 ``(image_id, keypoint index)`` observations.
    """

    cameras: dict[int, ColmapCamera]
    images: list[ColmapImage]
    points: PointCloud
    point_ids: torch.Tensor
    point_errors: torch.Tensor
    tracks: list[np.ndarray]

    def __post_init__(self) -> None:
        self.images = sorted(self.images, key=lambda im: im.image_id)
        for im in self.images:
            if im.camera_id not in self.cameras:
                raise ValueError(f"ColmapModel: image {im.name} uses unknown camera id {im.camera_id}")
        n = len(self.points)
        self.point_ids = torch.as_tensor(self.point_ids, dtype=torch.int64).reshape(-1)
        self.point_errors = torch.as_tensor(self.point_errors, dtype=torch.float32).reshape(-1)
        if len(self.point_ids) != n or len(self.point_errors) != n or len(self.tracks) != n:
            raise ValueError(f"ColmapModel: {n} points but {len(self.point_ids)} ids, "
                             f"{len(self.point_errors)} errors and {len(self.tracks)} tracks")

    @property
    def image_names(self) -> list[str]:
        """Image names in image-id order."""
        return [im.name for im in self.images]

    @property
    def K(self) -> torch.Tensor:
        """(C, 3, 3) float32 intrinsics of each image, pixels."""
        if not self.images:
            return torch.zeros(0, 3, 3)
        return torch.stack([self.cameras[im.camera_id].K for im in self.images])

    @property
    def world_to_cam(self) -> torch.Tensor:
        """(C, 4, 4) float32 world-to-camera transform of each image (OpenCV)."""
        if not self.images:
            return torch.zeros(0, 4, 4)
        return torch.stack([im.world_to_cam for im in self.images])

    def to_cameras(self) -> Cameras:
        """All images as one :class:`Cameras` batch (needs a shared image size; distortion ignored)."""
        sizes = {(self.cameras[im.camera_id].width, self.cameras[im.camera_id].height) for im in self.images}
        if len(sizes) != 1:
            raise ValueError(f"ColmapModel.to_cameras: images need one shared size, got {sorted(sizes)}")
        width, height = sizes.pop()
        return Cameras(self.K, self.world_to_cam, width, height)


def _data_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a COLMAP text file, comments removed; blank lines kept (images.txt needs them)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except UnicodeDecodeError:
        raise InputError(path, "not a text file (binary model? convert it with colmap model_converter)") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.lstrip().startswith("#"):
            yield number, line.strip()


def _parse(path: Path, number: int, what: str, convert, values: list[str]):
    try:
        return [convert(v) for v in values]
    except ValueError:
        raise InputError(path, f"line {number}: bad {what} {' '.join(values)!r}") from None


def _read_cameras(path: Path) -> dict[int, ColmapCamera]:
    cameras = {}
    for number, line in _data_lines(path):
        if not line:
            continue
        parts = line.split()
        if len(parts) < 5:
            raise InputError(path, f"line {number}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[], got {line!r}")
        camera_id, width, height = _parse(path, number, "camera id/size", int, [parts[0], parts[2], parts[3]])
        params = _parse(path, number, "camera parameters", float, parts[4:])
        try:
            cameras[camera_id] = ColmapCamera(camera_id, parts[1], width, height, np.array(params))
        except ValueError as e:
            raise InputError(path, f"line {number}: {e}") from None
    return cameras


def _read_images(path: Path) -> list[ColmapImage]:
    lines = list(_data_lines(path))
    images, i = [], 0
    while i < len(lines):
        number, line = lines[i]
        if not line:  # blank lines between entries
            i += 1
            continue
        parts = line.split(maxsplit=9)
        if len(parts) != 10:
            raise InputError(path, f"line {number}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, "
                                   f"got {line!r}")
        image_id, camera_id = _parse(path, number, "image/camera id", int, [parts[0], parts[8]])
        pose = _parse(path, number, "pose", float, parts[1:8])
        points_line = lines[i + 1][1] if i + 1 < len(lines) else ""
        values = points_line.split()
        if len(values) % 3:
            raise InputError(path, f"line {number + 1}: expected POINTS2D[] as (X, Y, POINT3D_ID) triples, "
                                   f"got {len(values)} numbers")
        xy = np.array(_parse(path, number + 1, "2D points", float, values[0::3] + values[1::3])).reshape(2, -1).T
        ids = np.array(_parse(path, number + 1, "3D point ids", int, values[2::3]), dtype=np.int64)
        try:
            images.append(ColmapImage(image_id, parts[9], camera_id, pose[:4], pose[4:], xy, ids))
        except ValueError as e:
            raise InputError(path, f"line {number}: {e}") from None
        i += 2
    return images


def _read_points(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    ids, xyz, rgb, errors, tracks = [], [], [], [], []
    for number, line in _data_lines(path):
        if not line:
            continue
        parts = line.split()
        if len(parts) < 8 or (len(parts) - 8) % 2:
            raise InputError(path, f"line {number}: expected POINT3D_ID X Y Z R G B ERROR TRACK[] as "
                                   f"(IMAGE_ID, POINT2D_IDX) pairs, got {len(parts)} values")
        ids.append(_parse(path, number, "point id", int, parts[:1])[0])
        xyz.append(_parse(path, number, "position", float, parts[1:4]))
        rgb.append(_parse(path, number, "colour", int, parts[4:7]))
        errors.append(_parse(path, number, "error", float, parts[7:8])[0])
        tracks.append(np.array(_parse(path, number, "track", int, parts[8:]), dtype=np.int64).reshape(-1, 2))
    rgb_array = np.array(rgb, dtype=np.int64).reshape(-1, 3)
    if rgb_array.size and (rgb_array.min() < 0 or rgb_array.max() > 255):
        raise InputError(path, "point colours must be 0-255 integers")
    return (np.array(ids, np.int64), np.array(xyz, np.float64).reshape(-1, 3), rgb_array,
            np.array(errors, np.float64), tracks)


def read_colmap_text(directory: str | os.PathLike) -> ColmapModel:
    """Read a COLMAP text model (``cameras.txt``, ``images.txt``, ``points3D.txt``).

    Args:
        directory: folder holding the three files (e.g. ``sparse/0``).

    Returns:
        ColmapModel with per-image K (C, 3, 3) and world_to_cam (C, 4, 4) float32 (see its properties),
        image names, and the points as a PointCloud with colours.

    Raises:
        InputError: naming the file and line of a missing file or malformed entry, an unknown camera
            model or wrong parameter count, or an image that uses an unknown camera.
    """
    directory = Path(directory)
    cameras = _read_cameras(directory / "cameras.txt")
    images = _read_images(directory / "images.txt")
    ids, xyz, rgb, errors, tracks = _read_points(directory / "points3D.txt")
    for im in images:
        if im.camera_id not in cameras:
            raise InputError(directory / "images.txt", f"image {im.name} uses camera id {im.camera_id}, which "
                                                       f"cameras.txt does not define")
    points = PointCloud(torch.from_numpy(xyz).float(), colors=torch.from_numpy(rgb).float() / 255.0)
    return ColmapModel(cameras, images, points, torch.from_numpy(ids), torch.from_numpy(errors).float(), tracks)


def _fmt(values) -> str:
    return " ".join(repr(float(v)) if isinstance(v, (float, np.floating)) else str(int(v)) for v in values)


def write_colmap_text(directory: str | os.PathLike, model: ColmapModel) -> None:
    """Write a COLMAP text model (three files, each atomically) that COLMAP itself can import.

    Floats are written with full precision, so reading the files back gives the same numbers.

    Args:
        directory: output folder (created if needed).
        model: the model; point colours are written as 0-255 integers (rounded).
    """
    directory = Path(directory)
    cams = ["# Camera list with one line of data per camera:",
            "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
            f"# Number of cameras: {len(model.cameras)}"]
    for cid in sorted(model.cameras):
        cam = model.cameras[cid]
        cams.append(f"{cid} {cam.model} {cam.width} {cam.height} {_fmt(cam.params.tolist())}")
    n_obs = sum(len(im.xys) for im in model.images)
    mean_obs = n_obs / len(model.images) if model.images else 0
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)",
             f"# Number of images: {len(model.images)}, mean observations per image: {mean_obs}"]
    for im in model.images:
        lines.append(f"{im.image_id} {_fmt(im.qvec.tolist())} {_fmt(im.tvec.tolist())} {im.camera_id} {im.name}")
        lines.append(" ".join(f"{_fmt(xy.tolist())} {pid}" for xy, pid in zip(im.xys, im.point3d_ids.tolist())))
    xyz = model.points.points.detach().cpu().double().numpy()
    colors = model.points.colors
    rgb = (np.zeros_like(xyz, dtype=np.int64) if colors is None
           else np.round(colors.detach().cpu().numpy() * 255).astype(np.int64))
    mean_track = sum(len(t) for t in model.tracks) / len(model.tracks) if model.tracks else 0
    pts = ["# 3D point list with one line of data per point:",
           "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
           f"# Number of points: {len(xyz)}, mean track length: {mean_track}"]
    errors = model.point_errors.detach().cpu().double().tolist()
    for pid, p, c, err, track in zip(model.point_ids.tolist(), xyz.tolist(), rgb.tolist(), errors, model.tracks):
        pts.append(f"{pid} {_fmt(p)} {_fmt(c)} {_fmt([err])} {_fmt(np.asarray(track).reshape(-1).tolist())}".rstrip())
    atomic_write_text(directory / "cameras.txt", "\n".join(cams) + "\n")
    atomic_write_text(directory / "images.txt", "\n".join(lines) + "\n")
    atomic_write_text(directory / "points3D.txt", "\n".join(pts) + "\n")
