"""Training data for the learned TSDF refinement: fused scans with ground-truth targets, and the datamodule.

A *scan* is a folder in the RGB-D layout (:func:`geo3d.io.read_rgbd_sequence`) with its ground-truth ``mesh.ply``
(and ``scene.json`` from ``geo3d synth rgbd``, whose ``diagonal`` sets the voxel size). :func:`prepare_scan` fuses
it (:func:`pipelines.surface.fusion.fuse_rgbd`) at ``voxel_fraction`` of the object's bounding-box diagonal,
reads the observed voxels, computes their target TSDF and occupancy from the mesh
(:func:`pipelines.surface.targets.sdf_targets`) and caches everything in ``<scan>/fused_<voxels>.npz``
(atomically; a later call reuses it). :class:`SurfaceDataModule` serves whole scans, several per batch, packed
with a batch index as the op layer's sparse tensors expect.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from geo3d.errors import InputError
from geo3d.io import read_mesh
from geo3d.io.atomic import atomic_open
from pipelines.surface.fusion import fuse_rgbd
from pipelines.surface.targets import sdf_targets, voxel_centers

FIELDS = ("coords", "tsdf", "weight", "color", "target_tsdf", "occupancy")
_NEIGHBOURS = torch.stack(torch.meshgrid(*[torch.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)


def dilate_voxels(coords: torch.Tensor, radius: int) -> torch.Tensor:
    """Voxels within ``radius`` steps (26-neighbourhood, i.e. a cube of side 2 radius + 1) of ``coords``.

    Args:
        coords: (M, 3) int64 voxel indices.
        radius: dilation steps, >= 0.

    Returns:
        (K, 3) int64 unique voxel indices, K >= M, containing ``coords``.
    """
    if radius <= 0 or len(coords) == 0:
        return coords
    lo = coords.amin(0) - radius
    span = coords.amax(0) + radius - lo + 1
    grid = coords - lo  # non-negative, inside a box that the dilation cannot leave
    keys = torch.unique((grid[:, 0] * span[1] + grid[:, 1]) * span[2] + grid[:, 2])
    step = ((_NEIGHBOURS[:, 0] * span[1] + _NEIGHBOURS[:, 1]) * span[2] + _NEIGHBOURS[:, 2]).to(coords.device)
    for _ in range(radius):  # one 1D unique per step: far cheaper than unique rows
        keys = torch.unique((keys[:, None] + step[None]).reshape(-1))
    x, rest = torch.div(keys, span[1] * span[2], rounding_mode="floor"), keys % (span[1] * span[2])
    y, z = torch.div(rest, span[2], rounding_mode="floor"), rest % span[2]
    return torch.stack([x, y, z], 1) + lo


def candidate_voxels(coords: torch.Tensor, tsdf: torch.Tensor, weight: torch.Tensor, color: torch.Tensor,
                     radius: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The voxels the refinement predicts at: the observed ones plus the unobserved voxels within ``radius`` of an
    observed voxel inside the truncation band (``|tsdf| < 1``), so holes up to about 2 ``radius`` voxels wide
    can be closed. Unobserved voxels get tsdf 0, weight 0 and colour 0 (the weight feature tells them apart).

    Args:
        coords: (M, 3) int64 observed voxel indices; tsdf (M,), weight (M,), color (M, 3) their fused values.
        radius: dilation in voxels (0: the observed voxels only).

    Returns:
        ``(coords, tsdf, weight, color)`` of the K >= M candidates, the observed ones first, in input order.
    """
    if radius <= 0:
        return coords, tsdf, weight, color
    grown = dilate_voxels(coords[tsdf.abs() < 1], radius)
    # keep the grown voxels that are not observed: compare by a collision-free integer key
    lo = torch.minimum(grown.amin(0), coords.amin(0))
    span = torch.maximum(grown.amax(0), coords.amax(0)) - lo + 1

    def key(c: torch.Tensor) -> torch.Tensor:
        c = c - lo
        return (c[:, 0] * span[1] + c[:, 1]) * span[2] + c[:, 2]

    new = grown[~torch.isin(key(grown), key(coords))]
    k = len(new)
    return (torch.cat([coords, new]), torch.cat([tsdf, tsdf.new_zeros(k)]), torch.cat([weight, weight.new_zeros(k)]),
            torch.cat([color, color.new_zeros(k, 3)]))


def scan_diagonal(scan: Path) -> float:
    """The scan's size in metres: the ``diagonal`` of its ``scene.json``, else of its ``mesh.ply``'s bounding box."""
    meta = scan / "scene.json"
    if meta.is_file():
        diagonal = json.loads(meta.read_text()).get("diagonal")
        if diagonal:
            return float(diagonal)
    mesh = read_mesh(scan / "mesh.ply")
    return float((mesh.vertices.amax(0) - mesh.vertices.amin(0)).norm())


def scan_voxel_size(scan: Path, voxel_fraction: float, voxel_size: float | None = None) -> float:
    """Voxel edge in metres: ``voxel_size`` when given, else ``voxel_fraction`` x :func:`scan_diagonal`."""
    if voxel_size is not None:
        return float(voxel_size)
    return scan_diagonal(scan) * voxel_fraction


def list_scans(root: str | os.PathLike) -> list[Path]:
    """Scan folders under ``root`` (sorted): folders holding ``camera-intrinsics.txt``, or ``root`` itself."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a directory of scans")
    if (root / "camera-intrinsics.txt").is_file():
        return [root]
    scans = sorted(p for p in root.iterdir() if (p / "camera-intrinsics.txt").is_file())
    if not scans:
        raise InputError(root, "no scan folders (folders with camera-intrinsics.txt and frame-*.depth.png)")
    return scans


def prepare_scan(scan: str | os.PathLike, voxel_fraction: float = 1 / 128, trunc_voxels: float = 4.0,
                 voxel_size: float | None = None, dilation: int = 0) -> dict[str, torch.Tensor | float | str]:
    """Fuse a scan and compute its per-voxel targets (cached next to the scan).

    Args:
        scan: RGB-D folder with ``mesh.ply`` (ground truth, same world frame as the poses).
        voxel_fraction: voxel edge as a fraction of the object's bounding-box diagonal.
        trunc_voxels: TSDF truncation in voxels.
        voxel_size: absolute voxel edge in metres (overrides ``voxel_fraction``).
        dilation: add the unobserved voxels within this many voxels of the surface band
            (:func:`candidate_voxels`).

    Returns:
        ``coords`` (M, 3) int64 voxel indices (observed first, then the dilation's), ``tsdf`` (M,) fused TSDF in
        truncation units (0 where unobserved), ``weight`` (M,) (0 where unobserved),
        ``color`` (M, 3) in [0, 1], ``target_tsdf`` (M,) true TSDF in truncation units (positive outside),
        ``occupancy`` (M,) bool (inside the truncation band of the true surface), ``voxel_size``, ``sdf_trunc``
        and ``diagonal`` (metres; :func:`scan_diagonal`), ``scan`` (the folder).
    """
    scan = Path(scan)
    diagonal = scan_diagonal(scan)
    size = float(voxel_size) if voxel_size is not None else diagonal * voxel_fraction
    trunc = trunc_voxels * size
    cache = scan / f"fused_{size * 1000:.3f}mm_t{trunc_voxels:g}_d{dilation}.npz"
    if cache.is_file():
        with np.load(cache) as data:
            out = {k: torch.from_numpy(data[k]) for k in FIELDS}
    else:
        if not (scan / "mesh.ply").is_file():
            raise InputError(scan, "no mesh.ply: a training scan needs its ground-truth mesh")
        volume = fuse_rgbd(scan, size, trunc, progress=False)
        coords, tsdf, weight, color = candidate_voxels(*volume.voxels(), dilation)
        target, occupancy = sdf_targets(read_mesh(scan / "mesh.ply"), voxel_centers(coords, size), trunc)
        out = {"coords": coords, "tsdf": tsdf, "weight": weight, "color": color, "target_tsdf": target,
               "occupancy": occupancy}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{k: v.cpu().numpy() for k, v in out.items()})
        with atomic_open(cache, "wb") as f:
            f.write(buffer.getvalue())
    out.update({"voxel_size": size, "sdf_trunc": trunc, "diagonal": diagonal, "scan": str(scan)})
    return out


class ScanDataset(Dataset):
    """Prepared scans (fused on first use, then cached)."""

    def __init__(self, scans: list[Path], voxel_fraction: float, trunc_voxels: float, dilation: int = 0):
        self.scans = scans
        self.voxel_fraction = voxel_fraction
        self.trunc_voxels = trunc_voxels
        self.dilation = dilation

    def __len__(self) -> int:
        return len(self.scans)

    def __getitem__(self, i: int) -> dict:
        return prepare_scan(self.scans[i], self.voxel_fraction, self.trunc_voxels, dilation=self.dilation)


def collate_scans(items: list[dict]) -> dict:
    """Concatenate scans into one packed batch: voxel fields stacked, ``batch`` (M,) int64 item index, and the
    per-scan ``voxel_size``/``sdf_trunc``/``diagonal``/``scan`` as lists."""
    out = {k: torch.cat([item[k] for item in items]) for k in FIELDS}
    out["batch"] = torch.cat([torch.full((len(item["tsdf"]),), i, dtype=torch.int64) for i, item in enumerate(items)])
    for key in ("voxel_size", "sdf_trunc", "diagonal", "scan"):
        out[key] = [item[key] for item in items]
    return out


class SurfaceDataModule(pl.LightningDataModule):
    """Fused synthetic scans for training and validating the refinement network.

    Args:
        train_dir: folder of training scans (``geo3d synth rgbd`` outputs, or ``scripts/make_surface_data.py``).
        val_dir: folder of validation scans (other objects or seeds).
        voxel_fraction: voxel edge as a fraction of each object's bounding-box diagonal.
        trunc_voxels: TSDF truncation, voxels.
        dilation: unobserved voxels within this many voxels of the surface band are predicted too (hole filling).
            Written once, here: ``geo3d fit`` links it to the model's ``dilation`` (``geo3d/cli/lightning.py``).
        batch_size: scans per training batch.
        num_workers: DataLoader workers (fusion of uncached scans happens there).
    """

    def __init__(self, train_dir: str, val_dir: str, voxel_fraction: float = 1 / 128, trunc_voxels: float = 4.0,
                 dilation: int = 0, batch_size: int = 2, num_workers: int = 0):
        super().__init__()
        self.train_dir = train_dir
        self.val_dir = val_dir
        self.voxel_fraction = voxel_fraction
        self.trunc_voxels = trunc_voxels
        self.dilation = dilation
        self.batch_size = batch_size
        self.num_workers = num_workers

    def setup(self, stage: str | None = None) -> None:
        self.train_scans = list_scans(self.train_dir) if stage in (None, "fit") else []
        self.val_scans = list_scans(self.val_dir)
        for scan in self.train_scans + self.val_scans:  # fuse and cache once, here, with a progress bar
            prepare_scan(scan, self.voxel_fraction, self.trunc_voxels, dilation=self.dilation)

    def _loader(self, scans: list[Path], shuffle: bool, batch_size: int) -> DataLoader:
        dataset = ScanDataset(scans, self.voxel_fraction, self.trunc_voxels, self.dilation)
        return DataLoader(dataset, batch_size=batch_size,
                          shuffle=shuffle, collate_fn=collate_scans, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_scans, True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_scans, False, 1)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_scans, False, 1)
