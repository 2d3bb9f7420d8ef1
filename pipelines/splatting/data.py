"""Posed images for sparse-view splatting: loading, the sparse view split, and the LightningDataModule.

Sources (``SplatDataModule(path=...)``):

* a NeRF-synthetic folder (``transforms_train.json`` [+ ``transforms_test.json``]): training views are drawn
  from ``transforms_train.json``; test views come from ``transforms_test.json`` when it exists, otherwise
  from the training views that were not drawn (the shared *lego* sample has no test split);
* an instant-ngp ``transforms.json`` (a file, or a folder holding one): all frames form one pool, test views
  are held out from it; lens distortion (``k1, k2, p1, p2``) is removed once at load, K kept;
* a COLMAP text model: a folder with ``cameras.txt``/``images.txt`` (or ``sparse/0/`` with them) and the
  images in ``images/`` beside it; the pool and hold-out rule as above.

The split is reproducible: :func:`select_views` picks ``views`` cameras spread around the object by
farthest-point sampling on the camera centres from a seeded first camera, and the test views are an evenly
spaced subset of the disjoint remainder. RGBA images give masks (alpha) and are composited on the chosen
background colour; RGB images have no mask. Images are downscaled by an integer factor with area
averaging, and K with them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, RandomSampler

from geo3d.errors import InputError
from geo3d.io import read_colmap_text, read_transforms
from geo3d.types import Cameras

Background = Literal["white", "black"]
BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


@dataclass
class ViewPool:
    """Every posed image of a source, before any image is read.

    Attributes:
        names: C image names (paths relative to the source folder), unique.
        paths: C image files.
        cameras: C cameras at the images' full resolution (OpenCV, K in pixels).
        distortion: (C, 4) float32 ``k1, k2, p1, p2`` per camera, or None when the source has none.
        test_names: names of a dedicated test split (NeRF-synthetic ``transforms_test.json``), or None.
        test_paths: its image files.
        test_cameras: its cameras.
    """

    names: list[str]
    paths: list[Path]
    cameras: Cameras
    distortion: torch.Tensor | None = None
    test_names: list[str] | None = None
    test_paths: list[Path] | None = None
    test_cameras: Cameras | None = None


@dataclass
class Views:
    """Loaded views of one split, on the CPU.

    Attributes:
        names: V image names.
        images: (V, H, W, 3) float32 RGB in [0, 1], composited on the background where there is a mask.
        masks: (V, H, W) float32 alpha in [0, 1], or None for images without alpha.
        cameras: V cameras at the loaded resolution.
    """

    names: list[str]
    images: torch.Tensor
    masks: torch.Tensor | None
    cameras: Cameras

    def __len__(self) -> int:
        return len(self.names)


def _distortion_matrix(frames) -> torch.Tensor | None:
    dist = frames.distortion
    if not dist:
        return None
    names = ("k1", "k2", "p1", "p2")
    extra = sorted(set(dist) - set(names))
    if extra:
        raise InputError(None, f"distortion coefficients {', '.join(extra)} are not supported (k1, k2, p1, p2 are)")
    columns = [dist.get(k, torch.zeros(len(frames))) for k in names]
    matrix = torch.stack(columns, 1)
    return matrix if bool(matrix.abs().gt(0).any()) else None


def _relative_names(paths: list[Path], root: Path) -> list[str]:
    return [Path(os.path.relpath(p, root)).as_posix() for p in paths]


def read_view_pool(path: str | os.PathLike) -> ViewPool:
    """Find and read the cameras of a NeRF-synthetic, instant-ngp or COLMAP text source (no images yet).

    Args:
        path: a ``transforms*.json`` file, or a folder holding ``transforms_train.json``, ``transforms.json``,
            ``cameras.txt`` + ``images.txt``, or ``sparse/0/`` with them.

    Returns:
        The pool of training-candidate views and the dedicated test split when there is one.

    Raises:
        InputError: naming the path when no known layout is found, or the file and field that is wrong.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "not found (expected a transforms.json file or a scene folder)")
    if path.is_file():
        frames = read_transforms(path)
        root = path.parent
        return ViewPool(_relative_names(frames.image_paths, root), frames.image_paths, frames.cameras,
                        _distortion_matrix(frames))
    if (path / "transforms_train.json").is_file():
        train = read_transforms(path / "transforms_train.json")
        pool = ViewPool(_relative_names(train.image_paths, path), train.image_paths, train.cameras,
                        _distortion_matrix(train))
        if (path / "transforms_test.json").is_file():
            test = read_transforms(path / "transforms_test.json")
            pool.test_names = _relative_names(test.image_paths, path)
            pool.test_paths, pool.test_cameras = test.image_paths, test.cameras
        return pool
    if (path / "transforms.json").is_file():
        return read_view_pool(path / "transforms.json")
    for model_dir in (path, path / "sparse" / "0", path / "sparse"):
        if (model_dir / "cameras.txt").is_file() and (model_dir / "images.txt").is_file():
            return _colmap_pool(path, model_dir)
    raise InputError(path, "no transforms_train.json, transforms.json or COLMAP text model (cameras.txt, "
                           "images.txt, optionally under sparse/0) found")


def _colmap_pool(root: Path, model_dir: Path) -> ViewPool:
    model = read_colmap_text(model_dir)
    if not model.images:
        raise InputError(model_dir / "images.txt", "no registered images")
    image_dir = next((d for d in (root / "images", model_dir / "images", root) if d.is_dir()), root)
    paths = [image_dir / im.name for im in model.images]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise InputError(image_dir, f"{len(missing)} of {len(paths)} images of the COLMAP model are missing "
                                    f"(first: {missing[0]})")
    try:
        cameras = model.to_cameras()
    except ValueError as e:
        raise InputError(model_dir / "cameras.txt", str(e)) from None
    dist_rows = []
    for im in model.images:
        d = model.cameras[im.camera_id].distortion
        extra = sorted(set(d) - {"k1", "k2", "p1", "p2"})
        if extra:
            raise InputError(model_dir / "cameras.txt", f"camera {im.camera_id}: distortion {', '.join(extra)} "
                                                        "is not supported (PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV are)")
        dist_rows.append([d.get(k, 0.0) for k in ("k1", "k2", "p1", "p2")])
    dist = torch.tensor(dist_rows, dtype=torch.float32)
    return ViewPool([im.name for im in model.images], paths, cameras, dist if bool(dist.abs().gt(0).any()) else None)


def select_views(centers: torch.Tensor, n: int, seed: int = 0) -> list[int]:
    """Indices of ``n`` cameras spread around the scene: farthest-point sampling on the camera centres.

    Args:
        centers: (C, 3) float camera centres, metres.
        n: how many to pick, 1 <= n <= C.
        seed: picks the first camera (uniformly); the rest follow deterministically.

    Returns:
        ``n`` distinct indices, in the order they were picked.
    """
    c = centers.shape[0]
    if not 1 <= n <= c:
        raise InputError(None, f"views: expected 1 to {c} (the number of images), got {n}")
    generator = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(c, (1,), generator=generator))]
    dist = (centers.double() - centers[chosen[0]].double()).norm(dim=1)
    for _ in range(n - 1):
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, (centers.double() - centers[nxt].double()).norm(dim=1))
    return chosen


def spread_subset(indices: list[int], n: int) -> list[int]:
    """``n`` of ``indices`` (all when fewer), evenly spaced along the list, deterministic."""
    if n >= len(indices):
        return list(indices)
    picks = np.linspace(0, len(indices) - 1, n).round().astype(int)
    return [indices[i] for i in picks]


def _load_rgba(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(H, W, 3) float32 RGB in [0, 1] (not premultiplied) and (H, W) alpha (None without alpha)."""
    try:
        with Image.open(path) as im:
            im.load()
            has_alpha = im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info)
            im = im.convert("RGBA" if has_alpha else "RGB")
    except FileNotFoundError:
        raise InputError(path, "image file not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(path, f"unreadable image ({e})") from None
    array = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)
    if has_alpha:
        return array[..., :3], array[..., 3]
    return array, None


def _undistort(image: torch.Tensor, K: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """(H, W, C) image with lens distortion ``k1, k2, p1, p2`` removed, same K (pixel centres at i + 0.5)."""
    import kornia

    K_int = K.clone()
    K_int[:2, 2] -= 0.5  # kornia puts pixel centres at integer coordinates
    out = kornia.geometry.calibration.undistort_image(image.permute(2, 0, 1)[None], K_int[None], dist[None])
    return out[0].permute(1, 2, 0)


def load_views(pool: ViewPool, indices: list[int], downscale: int, background: Background,
               test_split: bool = False) -> Views:
    """Read, undistort, downscale and composite the chosen views.

    Args:
        pool: cameras and image files.
        indices: which views (into the pool, or into its test split with ``test_split``).
        downscale: integer factor >= 1; K is scaled by ``1 / downscale`` (pixel-centre aware).
        background: colour behind the object where alpha < 1.
        test_split: take the views from the pool's dedicated test split.

    Returns:
        Views on the CPU; masks when every chosen image has alpha, else None.
    """
    names = pool.test_names if test_split else pool.names
    paths = pool.test_paths if test_split else pool.paths
    cameras = pool.test_cameras if test_split else pool.cameras
    bg = torch.tensor(BACKGROUNDS[background])
    images, masks = [], []
    for i in indices:
        rgb, alpha = _load_rgba(paths[i])
        expected = (cameras.height, cameras.width)
        if tuple(rgb.shape[:2]) != expected:
            raise InputError(paths[i], f"image is {rgb.shape[1]}x{rgb.shape[0]}, the camera file says "
                                       f"{expected[1]}x{expected[0]}")
        if pool.distortion is not None and not test_split and bool(pool.distortion[i].abs().gt(0).any()):
            stacked = rgb if alpha is None else torch.cat([rgb * alpha[..., None], alpha[..., None]], -1)
            stacked = _undistort(stacked, cameras.K[i], pool.distortion[i])
            if alpha is None:
                rgb = stacked
            else:
                alpha = stacked[..., 3].clamp(0, 1)
                rgb = torch.where(alpha[..., None] > 0, stacked[..., :3] / alpha[..., None].clamp_min(1e-8), 0.0)
        if downscale > 1:
            rgb, alpha = _downscale(rgb, alpha, downscale)
        if alpha is not None:
            rgb = rgb * alpha[..., None] + bg * (1 - alpha[..., None])
        images.append(rgb.clamp(0, 1))
        masks.append(alpha)
    chosen = cameras[torch.tensor(indices)]
    if downscale > 1:
        chosen = _scaled_cameras(chosen, downscale, images[0].shape[1], images[0].shape[0])
    has_masks = all(m is not None for m in masks)
    return Views([names[i] for i in indices], torch.stack(images), torch.stack(masks) if has_masks else None, chosen)


def _downscale(rgb: torch.Tensor, alpha: torch.Tensor | None, f: int):
    """Area-average f x f blocks; with alpha, colours are averaged over the covered part only
    (premultiply, pool, un-premultiply), so silhouettes do not bleed the background in."""
    h, w = rgb.shape[0] // f * f, rgb.shape[1] // f * f
    if alpha is None:
        return rgb[:h, :w].reshape(h // f, f, w // f, f, 3).mean((1, 3)), None
    pre = (rgb * alpha[..., None])[:h, :w].reshape(h // f, f, w // f, f, 3).mean((1, 3))
    a = alpha[:h, :w].reshape(h // f, f, w // f, f).mean((1, 3))
    return torch.where(a[..., None] > 0, pre / a[..., None].clamp_min(1e-8), 0.0), a


def _scaled_cameras(cameras: Cameras, f: int, width: int, height: int) -> Cameras:
    """Cameras for images downscaled by the integer factor ``f`` (pixel (i, j) of the small image covers
    pixels ``f i .. f i + f - 1`` of the large one, so continuous coordinates simply divide by f)."""
    K = cameras.K.clone()
    K[:, :2] /= f
    return Cameras(K, cameras.world_to_cam, width, height)


@dataclass(frozen=True)
class SplatScene:
    """What the splatting model takes from the data (``SplatDataModule.scene``): the loaded views and the split.

    Attributes:
        train: the training views (the model's initial Gaussians and scene size come from them).
        test: the test views (evaluated at the end of training).
        background: RGB in [0, 1] composited behind the object in the images and rendered behind the Gaussians.
        source: the data source (for messages).
        split: the view split as written next to the outputs (``split.json``; see ``SplatDataModule.split``).
    """

    train: Views
    test: Views
    background: tuple[float, float, float]
    source: str
    split: dict


class ViewDataset(Dataset):
    """One view per item: ``{"image": (H, W, 3), "mask": (H, W) or absent, "K": (3, 3), "world_to_cam":
    (4, 4), "index": int, "name": str}`` (tensors float32)."""

    def __init__(self, views: Views):
        self.views = views

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, i: int) -> dict:
        item = {"image": self.views.images[i], "K": self.views.cameras.K[i],
                "world_to_cam": self.views.cameras.world_to_cam[i], "index": i, "name": self.views.names[i]}
        if self.views.masks is not None:
            item["mask"] = self.views.masks[i]
        return item


class SplatDataModule(pl.LightningDataModule):
    """Sparse posed views of one object or scene.

    Args:
        path: the source (see the module docstring): NeRF-synthetic folder, ``transforms.json``, COLMAP folder.
        views: number of training views, picked by :func:`select_views`.
        test_views: number of test views (disjoint from the training views), evenly spread.
        val_views: how many of the test views are rendered at each validation during training (the
            ``test`` stage uses all of them).
        downscale: integer image downscale factor (K scaled with it).
        background: ``"white"`` or ``"black"``: colour composited behind RGBA images and rendered behind
            the Gaussians.
        seed: seed of the view split.
        steps_per_epoch: training items per epoch (views are drawn at random with replacement).
    """

    def __init__(self, path: str, views: int = 4, test_views: int = 25, val_views: int = 5, downscale: int = 1,
                 background: Background = "white", seed: int = 0, steps_per_epoch: int = 500):
        super().__init__()
        if background not in BACKGROUNDS:
            raise InputError(None, f"background: expected 'white' or 'black', got {background!r}")
        if not (isinstance(downscale, int) and downscale >= 1):
            raise InputError(None, f"downscale: expected an integer >= 1, got {downscale!r}")
        self.path = path
        self.views = views
        self.test_views = test_views
        self.val_views = val_views
        self.downscale = downscale
        self.background = background
        self.seed = seed
        self.steps_per_epoch = steps_per_epoch
        self.train: Views | None = None
        self.test: Views | None = None

    def __str__(self) -> str:
        """One line (Lightning's lists the dataloaders on several): error messages quote it."""
        return (f"SplatDataModule(path={self.path!r}, views={self.views}, test_views={self.test_views}, "
                f"downscale={self.downscale}, background={self.background!r}, seed={self.seed})")

    @property
    def background_color(self) -> tuple[float, float, float]:
        """RGB in [0, 1] of the background."""
        return BACKGROUNDS[self.background]

    def setup(self, stage: str | None = None) -> None:
        """Read the cameras, draw the split, load the chosen images (once)."""
        if self.train is not None:
            return
        pool = read_view_pool(self.path)
        n_pool = len(pool.names)
        if not 1 <= self.views <= n_pool:
            raise InputError(self.path, f"views: {self.views} training views asked for, but the source has "
                                        f"{n_pool} images")
        train_idx = select_views(pool.cameras.centers, self.views, self.seed)
        self.train = load_views(pool, train_idx, self.downscale, self.background)
        if pool.test_names is not None:
            test_idx = spread_subset(list(range(len(pool.test_names))), self.test_views)
            self.test = load_views(pool, test_idx, self.downscale, self.background, test_split=True)
        else:
            rest = [i for i in range(n_pool) if i not in set(train_idx)]
            if not rest:
                raise InputError(self.path, f"views: all {n_pool} images are training views; none is left to test")
            self.test = load_views(pool, spread_subset(rest, self.test_views), self.downscale, self.background)

    @property
    def scene(self) -> SplatScene:
        """The loaded views, background and split that the model needs (:meth:`setup` runs first if it has not):
        ``geo3d fit`` links this into ``GaussianSplatting(scene=...)`` when it builds the model."""
        self.setup()
        return SplatScene(self.train, self.test, self.background_color, str(self.path), self.split())

    def split(self) -> dict:
        """The view split as written next to the outputs: names of the training and test views."""
        return {"source": str(self.path), "seed": self.seed, "train": self.train.names, "test": self.test.names,
                "downscale": self.downscale, "width": self.train.cameras.width,
                "height": self.train.cameras.height, "background": self.background}

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        sampler = RandomSampler(range(len(self.train)), replacement=True, num_samples=self.steps_per_epoch,
                                generator=generator)
        return DataLoader(ViewDataset(self.train), batch_size=1, sampler=sampler, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        subset = spread_subset(list(range(len(self.test))), self.val_views)
        return DataLoader(torch.utils.data.Subset(ViewDataset(self.test), subset), batch_size=1)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(ViewDataset(self.test), batch_size=1)
