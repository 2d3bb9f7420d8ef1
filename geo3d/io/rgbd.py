"""RGB-D sequences in the Microsoft 7-Scenes layout, read lazily frame by frame.

One folder holds, per frame ``N``: ``frame-NNNNNN.color.jpg`` (or ``.png``), ``frame-NNNNNN.depth.png``
(uint16, ``depth_scale`` codes per metre, 0 and 65535 invalid) and ``frame-NNNNNN.pose.txt`` (4x4
camera-to-world, OpenCV camera frame, metres), plus ``camera-intrinsics.txt`` (3x3 K of the depth camera,
pixels). Depth PNGs go through :mod:`geo3d.io.depth_png`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_path, atomic_write_text
from geo3d.io.depth_png import depth_to_codes, read_depth_png, write_uint16_png
from geo3d.types import DepthMap
from geo3d.types._checks import check_tensor

INVALID_CODES = (0, 65535)
_POSE = re.compile(r"frame-(\d+)\.pose\.txt")
_COLOR_SUFFIXES = (".jpg", ".png")


@dataclass
class RGBDFrame:
    """One RGB-D frame.

    Attributes:
        color: (H, W, 3) uint8 RGB image (its size may differ from the depth's).
        depth: DepthMap, (H', W') float32 metres, with the intrinsics K (3, 3) of the depth camera.
        cam_to_world: (4, 4) float32 camera-to-world pose, OpenCV camera frame, metres.
    """

    color: torch.Tensor
    depth: DepthMap
    cam_to_world: torch.Tensor

    def __post_init__(self) -> None:
        check_tensor("RGBDFrame.color", self.color, (None, None, 3), torch.uint8)
        self.cam_to_world = torch.as_tensor(self.cam_to_world, dtype=torch.float32)
        check_tensor("RGBDFrame.cam_to_world", self.cam_to_world, (4, 4))


def _read_matrix(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    try:
        matrix = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except ValueError as e:
        raise InputError(path, f"expected a {shape[0]}x{shape[1]} {what} of numbers ({e})") from None
    if matrix.shape != shape:
        raise InputError(path, f"expected a {shape[0]}x{shape[1]} {what}, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise InputError(path, f"{what} contains NaN or infinity")
    return matrix


def read_intrinsics(path: str | os.PathLike) -> torch.Tensor:
    """Read ``camera-intrinsics.txt``: (3, 3) float32 K in pixels."""
    path = Path(path)
    K = _read_matrix(path, (3, 3), "intrinsics matrix")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
        raise InputError(path, f"not a pinhole K (positive fx, fy and last row 0 0 1): {K.tolist()}")
    return torch.from_numpy(K).float()


def read_pose(path: str | os.PathLike) -> torch.Tensor:
    """Read a ``frame-N.pose.txt``: (4, 4) float32 camera-to-world, metres."""
    path = Path(path)
    pose = _read_matrix(path, (4, 4), "pose matrix")
    rot = pose[:3, :3]
    if not np.allclose(pose[3], [0, 0, 0, 1]) or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-3):
        raise InputError(path, "not a rigid transform (rotation not orthonormal or last row not 0 0 0 1)")
    return torch.from_numpy(pose).float()


def read_color(path: str | os.PathLike) -> torch.Tensor:
    """Read a colour image as (H, W, 3) uint8 RGB."""
    try:
        with Image.open(path) as im:
            return torch.from_numpy(np.array(im.convert("RGB")))
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(path, f"not a readable image ({e})") from None


class RGBDSequence:
    """A 7-Scenes style RGB-D folder; frames are read from disk on access.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> K = torch.tensor([[50.0, 0, 16], [0, 50.0, 12], [0, 0, 1]])
        >>> frame = RGBDFrame(torch.zeros(24, 32, 3, dtype=torch.uint8), DepthMap(torch.full((24, 32), 1.5), K=K),
        ...                   torch.eye(4))
        >>> write_intrinsics(folder, K); write_rgbd_frame(folder, 0, frame)
        >>> seq = read_rgbd_sequence(folder)
        >>> len(seq), seq.indices, seq[0].depth.depth.shape
        (1, [0], torch.Size([24, 32]))
        >>> world_points = seq[0].depth.to_points(seq[0].cam_to_world)  # (M, 3) metres
        >>> world_points.shape, float(world_points[:, 2].mean())
        (torch.Size([768, 3]), 1.5)
    """

    def __init__(self, root: Path, indices: list[int], color_paths: list[Path], K: torch.Tensor,
                 depth_scale: float) -> None:
        self.root = root
        self.indices = indices
        self.color_paths = color_paths
        self.K = K
        self.depth_scale = depth_scale
        self._depth_size: tuple[int, int] | None = None

    @property
    def depth_size(self) -> tuple[int, int]:
        """(H, W) of the first frame's depth image (its header only), which every frame must share.

        Raises:
            InputError: the first depth image is unreadable, or the intrinsics' principal point lies outside it
                (the intrinsics are for another image size).
        """
        if self._depth_size is None:
            path = self.paths(0)[1]
            try:
                with Image.open(path) as im:
                    width, height = im.size
            except (UnidentifiedImageError, OSError) as e:
                raise InputError(path, f"not a readable image ({e})") from None
            cx, cy = float(self.K[0, 2]), float(self.K[1, 2])
            if not (0 <= cx <= width and 0 <= cy <= height):
                raise InputError(self.root / "camera-intrinsics.txt",
                                 f"principal point ({cx:g}, {cy:g}) lies outside the {width} x {height} depth images "
                                 f"(intrinsics for another image size?)")
            self._depth_size = (height, width)
        return self._depth_size

    def __len__(self) -> int:
        return len(self.indices)

    def paths(self, i: int) -> tuple[Path, Path, Path]:
        """Colour, depth and pose files of the i-th frame (in index order)."""
        name = f"frame-{self.indices[i]:06d}"
        return self.color_paths[i], self.root / f"{name}.depth.png", self.root / f"{name}.pose.txt"

    def __getitem__(self, i: int) -> RGBDFrame:
        """Load the i-th frame (sorted by frame number; negative indices count from the end)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"RGBDSequence: index {i} out of range for {len(self)} frames")
        color, depth, pose = self.paths(i % len(self))
        depth_map = read_depth_png(depth, self.depth_scale, self.K, INVALID_CODES)
        if tuple(depth_map.depth.shape) != self.depth_size:
            height, width = self.depth_size
            raise InputError(depth, f"depth image is {depth_map.depth.shape[0]} x {depth_map.depth.shape[1]}, but "
                                    f"the sequence's first is {height} x {width} (the frames of one folder share "
                                    f"one camera and camera-intrinsics.txt)")
        return RGBDFrame(read_color(color), depth_map, read_pose(pose))

    def __iter__(self) -> Iterator[RGBDFrame]:
        for i in range(len(self)):
            yield self[i]


def read_rgbd_sequence(directory: str | os.PathLike, depth_scale: float = 1000.0) -> RGBDSequence:
    """Open a 7-Scenes style RGB-D folder (frames load lazily; file presence is checked now).

    Args:
        directory: folder with ``frame-NNNNNN.{color.jpg|color.png,depth.png,pose.txt}`` files and
            ``camera-intrinsics.txt``.
        depth_scale: depth codes per metre (1000: millimetres).

    Returns:
        RGBDSequence: ``len(seq)`` frames sorted by frame number; ``seq[i]`` is an :class:`RGBDFrame`;
        ``seq.K`` is the (3, 3) float32 depth intrinsics, ``seq.indices`` the frame numbers.

    Raises:
        InputError: naming the folder or file: no frames, a frame lacking its colour or depth image,
            missing or malformed ``camera-intrinsics.txt``.
    """
    root = Path(directory)
    if not root.is_dir():
        raise InputError(root, "not a directory")
    if not depth_scale > 0:
        raise ValueError(f"read_rgbd_sequence: depth_scale must be positive, got {depth_scale}")
    K = read_intrinsics(root / "camera-intrinsics.txt")
    indices = sorted(int(m.group(1)) for p in root.iterdir() if (m := _POSE.fullmatch(p.name)))
    if not indices:
        raise InputError(root, "no frame-NNNNNN.pose.txt files")
    color_paths = []
    for index in indices:
        name = f"frame-{index:06d}"
        colors = [root / f"{name}.color{s}" for s in _COLOR_SUFFIXES if (root / f"{name}.color{s}").is_file()]
        if not colors:
            raise InputError(root, f"{name}: missing colour image {name}.color.jpg or .png")
        if not (root / f"{name}.depth.png").is_file():
            raise InputError(root, f"{name}: missing depth image {name}.depth.png")
        color_paths.append(colors[0])
    return RGBDSequence(root, indices, color_paths, K, float(depth_scale))


def _matrix_text(matrix: torch.Tensor) -> str:
    return "\n".join(" ".join(f"{v:.18e}" for v in row) for row in matrix.detach().cpu().double().tolist()) + "\n"


def write_intrinsics(directory: str | os.PathLike, K: torch.Tensor) -> None:
    """Write ``camera-intrinsics.txt`` (K: (3, 3) float pixels), atomically."""
    K = torch.as_tensor(K)
    check_tensor("write_intrinsics: K", K, (3, 3))
    atomic_write_text(Path(directory) / "camera-intrinsics.txt", _matrix_text(K))


def write_rgbd_frame(
    directory: str | os.PathLike, index: int, frame: RGBDFrame, depth_scale: float = 1000.0,
    color_format: str = "png",
) -> None:
    """Write one frame's colour, depth and pose files (each atomically).

    Args:
        directory: output folder (created if needed).
        index: frame number N, written as ``frame-NNNNNN.*``.
        frame: the frame; invalid depth pixels are written as 0.
        depth_scale: depth codes per metre (1000: millimetres).
        color_format: ``"png"`` (lossless) or ``"jpg"`` (as 7-Scenes ships).

    Raises:
        ValueError: when a depth exceeds 65.534 m at the default scale (65535 is reserved as invalid).
    """
    if color_format not in ("png", "jpg"):
        raise ValueError(f"write_rgbd_frame: color_format must be 'png' or 'jpg', got {color_format!r}")
    root = Path(directory)
    name = f"frame-{int(index):06d}"
    codes = depth_to_codes(frame.depth, depth_scale, max_code=65534, name=str(root / f"{name}.depth.png"))
    options = {"format": "PNG"} if color_format == "png" else {"format": "JPEG", "quality": 95}
    with atomic_path(root / f"{name}.color.{color_format}") as tmp:
        Image.fromarray(frame.color.detach().cpu().numpy()).save(tmp, **options)
    write_uint16_png(root / f"{name}.depth.png", codes)
    atomic_write_text(root / f"{name}.pose.txt", _matrix_text(frame.cam_to_world))
