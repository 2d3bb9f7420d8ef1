"""Depth-completion data: input loaders with one-line errors, and the frames the model trains and is evaluated on.

Input contract (every method, the model and the baselines): an RGB image (H, W, 3) uint8, a sparse depth map
(H, W) float32 metres with 0 = missing, and optionally K (3, 3). :func:`read_sparse` reads the formats users have:
KITTI depth-completion PNGs (uint16, metres x 256), ``.npy`` arrays in metres, and the depth of an RGB-D frame.

Training and evaluation frames are folders in the KITTI-DC-like layout written by ``geo3d synth depth``
(``image/NNNNNN.png``, ``groundtruth/NNNNNN.png``, ``intrinsics/NNNNNN.txt``). The sparse input is drawn from the
ground truth on the fly with a pattern of :mod:`geo3d.synth.patterns` (random points at any density, LiDAR scan
lines from the camera's centre and from KITTI's mounting, image keypoints, outliers): a random pattern per
training sample, a fixed pattern and seed per evaluation item, so every run evaluates the same inputs.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from geo3d.errors import InputError
from geo3d.io.depth_png import read_depth_png
from geo3d.synth.patterns import PATTERNS_EVAL, sample_sparse

TRAIN_PATTERNS = ("random:0.01", "random:0.003", "random:0.001", "random:0.0003", "lidar:64", "lidar:16",
                  "lidar_offset:64", "lidar_offset:32", "lidar_offset:16", "lidar_offset:8", "keypoints:orb",
                  "keypoints:sift", "outliers:0.05", "outliers:0.1")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an RGB image: (H, W, 3) uint8 (greyscale is repeated, alpha dropped).

    Raises:
        InputError: missing or unreadable file.
    """
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")).copy()
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"not a readable image ({e})") from None


def read_sparse(path: str | os.PathLike, depth_scale: float = 256.0, shape: tuple[int, int] | None = None
                ) -> torch.Tensor:
    """Read a sparse depth map in metres.

    Args:
        path: a 16-bit PNG (``depth_scale`` codes per metre: 256 for KITTI, 1000 for millimetre RGB-D depth) or a
            ``.npy`` (H, W) float array in metres (0, NaN or +inf = missing; negative values, -inf included, are an
            error).
        depth_scale: PNG codes per metre.
        shape: the (H, W) the map must have (the image's), or None.

    Returns:
        (H, W) float32 metres, 0 = missing.

    Raises:
        InputError: naming the file: not a 16-bit PNG, not a 2D numeric array, negative depths, a size other than
            ``shape``, or no valid pixel.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise InputError(path, "file not found") from None
        except (ValueError, OSError) as e:
            raise InputError(path, f"not a readable .npy array ({e})") from None
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
            raise InputError(path, f"expected an (H, W) numeric depth array in metres, got {array.dtype} "
                                   f"{array.shape}")
        array = array.astype(np.float64)
        negative = array < 0  # -inf included (NaN compares False): checked before NaN and +inf become "missing"
        if negative.any():
            first = tuple(int(i) for i in np.argwhere(negative)[0])
            raise InputError(path, f"{int(negative.sum())} negative depth value(s), the first {array[first]:g} at "
                                   f"row {first[0]}, column {first[1]} (expected metres >= 0, 0 = missing)")
        array = np.nan_to_num(array, nan=0.0, posinf=0.0)
        depth = torch.from_numpy(array.astype(np.float32))
    elif path.suffix.lower() == ".png":
        depth = read_depth_png(path, scale=depth_scale).depth
    else:
        raise InputError(path, f"expected a 16-bit depth .png or an .npy array, got {path.suffix or 'no suffix'!r}")
    if shape is not None and tuple(depth.shape) != tuple(shape):
        raise InputError(path, f"sparse depth is {depth.shape[0]} x {depth.shape[1]} but the image is "
                               f"{shape[0]} x {shape[1]}")
    if not bool((depth > 0).any()):
        raise InputError(path, "every pixel is missing (0): no sparse depth to complete from")
    return depth


def read_intrinsics(path: str | os.PathLike) -> torch.Tensor:
    """Read a 3x3 K text file: (3, 3) float32 pixels."""
    try:
        K = np.loadtxt(path, dtype=np.float64)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except ValueError as e:
        raise InputError(path, f"expected a 3x3 matrix of numbers ({e})") from None
    if K.shape != (3, 3):
        raise InputError(path, f"expected a 3x3 intrinsics matrix, got shape {K.shape}")
    return torch.from_numpy(K.astype(np.float32))


def list_frames(root: str | os.PathLike) -> list[str]:
    """Frame ids (``NNNNNN``) of a ``geo3d synth depth`` folder, sorted.

    Raises:
        InputError: no ``image/*.png`` with its ``groundtruth`` PNG.
    """
    root = Path(root)
    ids = sorted(p.stem for p in (root / "image").glob("*.png") if (root / "groundtruth" / p.name).is_file())
    if not ids:
        raise InputError(root, "no frames (expected image/NNNNNN.png with groundtruth/NNNNNN.png: write them with "
                               "`geo3d synth depth`)")
    return ids


def to_tensors(image: np.ndarray, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, 3) uint8 image and (H, W) metres -> (3, H, W) float32 in [0, 1] and (1, H, W) float32 metres."""
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0, sparse[None].float()


class DepthFrames(Dataset):
    """Frames of a ``geo3d synth depth`` folder with sparse depth drawn by a pattern.

    Args:
        root: the folder.
        patterns: pattern names (:func:`geo3d.synth.patterns.sample_sparse`); training draws one at random per
            sample, evaluation uses ``patterns[i % len(patterns)]`` with the seed of item ``i``.
        train: random patterns, crops and horizontal flips (otherwise deterministic).
        crop: (h, w) random crop in training (None: whole frames).
        seed: evaluation sampling seed.
        repeat: evaluation: each frame once per pattern (len = frames x patterns).
    """

    def __init__(self, root: str | os.PathLike, patterns: tuple[str, ...] | list[str], train: bool = False,
                 crop: tuple[int, int] | None = None, seed: int = 0, repeat: bool = False):
        self.root = Path(root)
        self.ids = list_frames(self.root)
        self.patterns = list(patterns)
        self.train = train
        self.crop = crop
        self.seed = seed
        self.repeat = repeat and not train

    def __len__(self) -> int:
        return len(self.ids) * (len(self.patterns) if self.repeat else 1)

    def frame(self, frame_id: str) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """``(image (H, W, 3) uint8, gt (H, W) float32 metres, K (3, 3) float32)`` of one frame."""
        image = read_image(self.root / "image" / f"{frame_id}.png")
        gt = read_depth_png(self.root / "groundtruth" / f"{frame_id}.png", scale=256.0).depth
        K = read_intrinsics(self.root / "intrinsics" / f"{frame_id}.txt")
        return image, gt, K

    def __getitem__(self, index: int) -> dict:
        frame_id = self.ids[index % len(self.ids)]
        image, gt, K = self.frame(frame_id)
        if self.train:
            rng = np.random.default_rng(int(torch.randint(2**31 - 1, ()).item()))  # follows torch's seeding
            pattern = self.patterns[rng.integers(len(self.patterns))]
        else:
            pattern_index = index // len(self.ids) if self.repeat else index % len(self.patterns)
            pattern = self.patterns[pattern_index]
            rng = np.random.default_rng([self.seed, index % len(self.ids), zlib.crc32(pattern.encode())])
        sparse = sample_sparse(gt, pattern, rng, K=K, image=image)
        if not bool((sparse > 0).any()):  # a pattern that found nothing (e.g. no keypoint on a valid pixel)
            sparse = sample_sparse(gt, "random:1", rng)
        img, sp = to_tensors(image, sparse)
        gt = gt[None]
        if self.train and self.crop is not None:
            h, w = self.crop
            top = int(rng.integers(0, gt.shape[1] - h + 1))
            left = int(rng.integers(0, gt.shape[2] - w + 1))
            img, sp, gt = (t[:, top:top + h, left:left + w] for t in (img, sp, gt))
            if not bool((sp > 0).any()):
                sp = sp.clone()
                valid = (gt[0] > 0).nonzero()
                if len(valid):
                    y, x = valid[rng.integers(len(valid))].tolist()
                    sp[0, y, x] = gt[0, y, x]
                else:
                    sp[0, h // 2, w // 2] = 1.0  # no ground truth in the crop: the loss ignores it
        if self.train and rng.random() < 0.5:
            img, sp, gt = (t.flip(-1) for t in (img, sp, gt))
        return {"image": img, "sparse": sp, "gt": gt, "K": K, "frame": frame_id, "pattern": pattern}


class DepthDataModule(pl.LightningDataModule):
    """Synthetic frames for training and evaluating depth completion.

    Args:
        train_dir: ``geo3d synth depth`` folder for training.
        val_dir: held-out folder (other seeds).
        train_patterns: patterns drawn at random per training sample.
        val_patterns: evaluation patterns (each held-out frame once per pattern).
        crop: training crop (h, w); multiples of 16 avoid padding.
        batch_size: training batch size.
        num_workers: DataLoader workers.
        val_frames: use only the first N held-out frames for validation during training (None: all).
    """

    def __init__(self, train_dir: str = "data/depth/train", val_dir: str = "data/depth/val",
                 train_patterns: list[str] | None = None, val_patterns: list[str] | None = None,
                 crop: tuple[int, int] | None = (96, 320), batch_size: int = 4, num_workers: int = 0,
                 val_frames: int | None = None):
        super().__init__()
        self.train_dir, self.val_dir = train_dir, val_dir
        self.train_patterns = list(train_patterns or TRAIN_PATTERNS)
        self.val_patterns = list(val_patterns or PATTERNS_EVAL)
        self.crop = tuple(crop) if crop is not None else None
        self.batch_size, self.num_workers, self.val_frames = batch_size, num_workers, val_frames

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.train_set = DepthFrames(self.train_dir, self.train_patterns, train=True, crop=self.crop)
            ranks = self.trainer.world_size if self.trainer is not None else 1
            if len(self.train_set) < self.batch_size * ranks:  # drop_last: training would take no step at all
                per = f" in each of {ranks} processes" if ranks > 1 else ""
                raise InputError(self.train_dir, f"{len(self.train_set)} training frames: fewer than one batch of "
                                                 f"{self.batch_size}{per} (lower data.batch_size or add frames)")
        self.val_set = DepthFrames(self.val_dir, self.val_patterns, repeat=True)
        if self.val_frames is not None:
            self.val_set.ids = self.val_set.ids[: self.val_frames]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                          drop_last=True, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=1, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()
