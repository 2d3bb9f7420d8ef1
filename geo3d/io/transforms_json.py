"""NeRF-synthetic and instant-ngp ``transforms.json`` camera files.

Both store OpenGL camera-to-world matrices per frame (``transform_matrix``). NeRF-synthetic gives only the
horizontal field of view ``camera_angle_x`` (principal point at the image centre, size from the images);
instant-ngp gives ``fl_x, fl_y, cx, cy, w, h`` and distortion ``k1, k2, (k3, k4,) p1, p2``, globally or
overridden per frame. Poses are converted to OpenCV world-to-camera at load time by
:func:`geo3d.io.conventions.opengl_to_opencv`. Translations are kept in the file's units: instant-ngp's
render-time ``scale``/``offset`` keys are not applied.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_write_text
from geo3d.io.conventions import invert_rigid, opencv_to_opengl, opengl_to_opencv
from geo3d.io.json_file import read_json_object
from geo3d.types import Cameras

DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG", ".exr")


@dataclass
class MultiViewFrames:
    """Posed images of one scene.

    Attributes:
        image_paths: C image files, in file order.
        cameras: C pinhole cameras (OpenCV convention, ``world_to_cam``, K in pixels, shared image size).
        distortion: OpenCV-style coefficients by name (``k1, k2, k3, k4, p1, p2``, those present in the
            file), each a (C,) float32 tensor, or None when the file has none.
    """

    image_paths: list[Path]
    cameras: Cameras
    distortion: dict[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        self.image_paths = [Path(p) for p in self.image_paths]
        if len(self.image_paths) != len(self.cameras):
            raise ValueError(f"MultiViewFrames: {len(self.image_paths)} image paths for {len(self.cameras)} cameras")
        for name, values in (self.distortion or {}).items():
            if tuple(values.shape) != (len(self.cameras),):
                raise ValueError(f"MultiViewFrames.distortion[{name!r}]: expected shape ({len(self.cameras)},), "
                                 f"got {tuple(values.shape)}")

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return self.cameras.width

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return self.cameras.height


def _number(path: Path, where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(path, f"{where}{key}: expected a finite number, got {value!r}")
    return float(value)


def _resolve_image(root: Path, file_path: str) -> Path | None:
    """The image a ``file_path`` names: as written, or with an image suffix added (NeRF-synthetic)."""
    candidate = root / file_path
    if candidate.is_file():
        return candidate
    for suffix in _IMAGE_SUFFIXES:
        with_suffix = root / (file_path + suffix)
        if with_suffix.is_file():
            return with_suffix
    return None


def _image_size(path: Path, image: Path) -> tuple[int, int]:
    try:
        with Image.open(image) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(path, f"w/h are missing and the first image {image} is unreadable ({e})") from None


def _pose(path: Path, index: int, frame: dict) -> np.ndarray:
    where = f"frames[{index}].transform_matrix"
    if "transform_matrix" not in frame:
        raise InputError(path, f"frames[{index}]: missing 'transform_matrix'")
    try:
        matrix = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"{where}: expected a 4x4 list of numbers") from None
    if matrix.shape == (3, 4):
        matrix = np.concatenate([matrix, [[0.0, 0.0, 0.0, 1.0]]])
    if matrix.shape != (4, 4):
        raise InputError(path, f"{where}: expected a 4x4 (or 3x4) matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise InputError(path, f"{where}: contains NaN or infinity")
    if not np.allclose(matrix[3], [0, 0, 0, 1]):
        raise InputError(path, f"{where}: last row must be [0, 0, 0, 1], got {matrix[3].tolist()}")
    rot = matrix[:3, :3]
    if not np.allclose(rot @ rot.T, np.eye(3), atol=1e-3) or np.linalg.det(rot) < 0:
        raise InputError(path, f"{where}: rotation part is not a proper rotation (scaled or reflected pose)")
    return matrix


def _intrinsics(path: Path, where: str, params: dict, width: int, height: int) -> np.ndarray:
    """K (3, 3) from fl_x/fl_y/cx/cy or camera_angle_x/y (principal point defaults to the image centre)."""
    if "fl_x" in params:
        fx = _number(path, where, "fl_x", params["fl_x"])
    elif "camera_angle_x" in params:
        fx = 0.5 * width / math.tan(0.5 * _number(path, where, "camera_angle_x", params["camera_angle_x"]))
    else:
        raise InputError(path, f"{where}: no focal length: expected 'fl_x' or 'camera_angle_x'")
    if "fl_y" in params:
        fy = _number(path, where, "fl_y", params["fl_y"])
    elif "camera_angle_y" in params and "fl_x" not in params:
        fy = 0.5 * height / math.tan(0.5 * _number(path, where, "camera_angle_y", params["camera_angle_y"]))
    else:
        fy = fx
    cx = _number(path, where, "cx", params["cx"]) if "cx" in params else width / 2
    cy = _number(path, where, "cy", params["cy"]) if "cy" in params else height / 2
    if fx <= 0 or fy <= 0:
        raise InputError(path, f"{where}: focal lengths must be positive, got fl_x={fx}, fl_y={fy}")
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)


def read_transforms(path: str | os.PathLike, skip_missing: bool = True) -> MultiViewFrames:
    """Read a NeRF-synthetic or instant-ngp ``transforms.json``.

    Image paths are relative to the json's folder; a ``file_path`` without a suffix (NeRF-synthetic
    ``./train/r_0``) is completed with the first existing image suffix (``.png``, ``.jpg``...). Frames
    whose image is missing are skipped with one warning listing them. Without ``w``/``h`` the size is read
    from the first image.

    Args:
        path: the ``transforms.json`` file.
        skip_missing: skip frames whose image file is missing (True) or raise InputError (False).

    Returns:
        MultiViewFrames: image paths, Cameras (C cameras, OpenCV ``world_to_cam`` (C, 4, 4) float32 in the
        file's units, K (C, 3, 3) float32 pixels) and per-camera distortion coefficients.

    Raises:
        InputError: naming the file and the field: unreadable JSON, missing or empty ``frames``, bad
            ``transform_matrix`` shapes or rotations, missing focal length, no existing image, image
            sizes that differ between frames.
    """
    path = Path(path)
    data = read_json_object(path)
    frames = data.get("frames")
    if frames is None:
        raise InputError(path, "missing 'frames' (the list of posed images)")
    if not isinstance(frames, list) or not frames:
        raise InputError(path, "'frames' must be a non-empty list")

    root = path.parent
    kept: list[tuple[int, dict, Path]] = []
    missing: list[str] = []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise InputError(path, f"frames[{i}]: expected an object with a string 'file_path'")
        image = _resolve_image(root, frame["file_path"])
        if image is None:
            missing.append(frame["file_path"])
        else:
            kept.append((i, frame, image))
    if missing and not skip_missing:
        raise InputError(path, f"{len(missing)} of {len(frames)} frame images are missing: {', '.join(missing)}")
    if not kept:
        raise InputError(path, f"none of the {len(frames)} frame images exist (first: {frames[0]['file_path']})")
    if missing:
        warnings.warn(f"{path}: skipping {len(missing)} of {len(frames)} frames whose image is missing: "
                      f"{', '.join(missing)}", stacklevel=2)

    globals_ = {k: data[k] for k in (*_INTRINSIC_KEYS, *DISTORTION_KEYS) if k in data}
    first_size = None
    Ks, poses, sizes = [], [], set()
    dist_keys = [k for k in DISTORTION_KEYS if k in data or any(k in f for _, f, _ in kept)]
    dist = {k: [] for k in dist_keys}
    for i, frame, image in kept:
        params = {**globals_, **{k: frame[k] for k in (*_INTRINSIC_KEYS, *DISTORTION_KEYS) if k in frame}}
        where = f"frames[{i}]." if any(k in frame for k in _INTRINSIC_KEYS) else ""
        if "w" in params and "h" in params:
            size = (round(_number(path, where, "w", params["w"])), round(_number(path, where, "h", params["h"])))
        else:
            first_size = first_size or _image_size(path, image)
            size = first_size
        sizes.add(size)
        Ks.append(_intrinsics(path, where, params, *size))
        poses.append(_pose(path, i, frame))
        for k in dist_keys:
            dist[k].append(_number(path, where, k, params.get(k, 0.0)))
    if len(sizes) > 1:
        raise InputError(path, f"frames have different image sizes {sorted(sizes)}; expected one size (w, h)")
    width, height = sizes.pop()

    cam_to_world = opengl_to_opencv(torch.from_numpy(np.stack(poses)))
    world_to_cam = invert_rigid(cam_to_world).float()
    cameras = Cameras(torch.from_numpy(np.stack(Ks)).float(), world_to_cam, width, height)
    distortion = {k: torch.tensor(v, dtype=torch.float32) for k, v in dist.items()} or None
    return MultiViewFrames([image for _, _, image in kept], cameras, distortion)


def _relative(image: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(image, root)).as_posix()
    except ValueError:  # another drive on Windows
        return image.as_posix()


def write_transforms(
    path: str | os.PathLike, frames: MultiViewFrames, extra: dict[str, Any] | None = None
) -> None:
    """Write an instant-ngp style ``transforms.json`` (OpenGL camera-to-world poses), atomically.

    Intrinsics (``fl_x, fl_y, cx, cy, w, h``, ``camera_angle_x/y`` for NeRF-synthetic readers) and
    distortion coefficients are written once at the top level when all cameras share them, otherwise per
    frame. Image paths are written relative to the json's folder.

    Args:
        path: output json file.
        frames: the posed images (world_to_cam (C, 4, 4) OpenCV, K (C, 3, 3) pixels).
        extra: more top-level keys to write (e.g. ``{"aabb_scale": 4}``).
    """
    path = Path(path)
    cams = frames.cameras
    K = cams.K.detach().cpu().double()
    c2w = opencv_to_opengl(invert_rigid(cams.world_to_cam.detach().cpu().double()))
    per_camera = {
        "fl_x": K[:, 0, 0], "fl_y": K[:, 1, 1], "cx": K[:, 0, 2], "cy": K[:, 1, 2],
        "camera_angle_x": 2 * torch.atan(cams.width / (2 * K[:, 0, 0])),
        "camera_angle_y": 2 * torch.atan(cams.height / (2 * K[:, 1, 1])),
        **{k: v.detach().cpu().double() for k, v in (frames.distortion or {}).items()},
    }
    shared = {k: v for k, v in per_camera.items() if bool((v == v[0]).all())}
    out: dict[str, Any] = {k: float(v[0]) for k, v in shared.items()}
    out.update({"w": cams.width, "h": cams.height})
    out.update(extra or {})
    out["frames"] = []
    for i, image in enumerate(frames.image_paths):
        frame: dict[str, Any] = {"file_path": _relative(image, path.parent)}
        frame.update({k: float(v[i]) for k, v in per_camera.items() if k not in shared})
        frame["transform_matrix"] = c2w[i].tolist()
        out["frames"].append(frame)
    atomic_write_text(path, json.dumps(out, indent=2) + "\n")
