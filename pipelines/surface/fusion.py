"""TSDF fusion of RGB-D frames on sparse voxel blocks, with Open3D's ``VoxelBlockGrid`` as the engine.

The volume is a hash map from block coordinates to dense 8 x 8 x 8 voxel blocks; only blocks near an observed
surface are allocated, so memory grows with the touched surface, not with the scene's bounding box. Frames are
integrated one at a time (a lazily read :class:`~geo3d.io.rgbd.RGBDSequence` never holds more than one frame).

Conventions (all checked by the tests against independent references):

* Voxel ``(i, j, k)`` (global index, ``block_key * 8 + local index``) sits at ``(i, j, k) * voxel_size`` metres
  in the world frame (no half-voxel offset).
* TSDF is Open3D's *projective* signed distance, in units of ``sdf_trunc``: ``clip((depth - z_cam) / sdf_trunc,
  -1, 1)`` averaged over the frames, where ``z_cam`` is the voxel's depth in the camera and ``depth`` the
  measured depth at the pixel it projects to. Positive in front of the surface (free space), negative behind;
  voxels more than ``sdf_trunc`` behind the surface are not updated. Weight = number of frames that updated the
  voxel. Colour is the running mean of the pixel colours, RGB in [0, 1].
* Cameras are OpenCV (x right, y down, z forward); Open3D's ``extrinsic`` is world-to-camera, so each frame's
  ``cam_to_world`` pose is inverted. Pixel ``(u, v)`` covers ``[u, u + 1) x [v, v + 1)`` (its centre is at
  ``u + 0.5``), as :meth:`geo3d.types.DepthMap.to_points` assumes: Open3D truncates projected coordinates, which
  is the same convention, so K is passed unchanged. Open3D's bounds test (``u <= W - 1``) leaves the last pixel
  column and row of each depth image unused.
* Depth goes to Open3D as float32 metres with ``depth_scale = 1`` (float depth needs float colour, so colour
  goes as float32 in [0, 1]; Open3D stores it times 255, and :meth:`TSDFVolume.voxels` divides it back).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open3d as o3d
import open3d.core as o3c
import torch
from torch.utils import dlpack

from geo3d.errors import InputError
from geo3d.io.rgbd import RGBDFrame, RGBDSequence, read_rgbd_sequence
from geo3d.types import Mesh, PointCloud

BLOCK_RESOLUTION = 8
_NO_VOXEL = "no voxel was touched: check depth scale and pose convention"


_OPEN3D_DEVICE_TYPES = {"cpu": "CPU", "cuda": "CUDA"}


def open3d_device(device: str | torch.device) -> o3c.Device:
    """Map a torch-style device (``"cpu"``, ``"cuda"``, ``"cuda:1"``) to an Open3D device (``CPU:0``, ``CUDA:1``):
    a name translation (the fusion runs wherever the caller puts it; nothing here chooses a backend)."""
    device = torch.device(device)
    if device.type not in _OPEN3D_DEVICE_TYPES:
        raise ValueError(f"open3d_device: expected a cpu or cuda device, got {device}")
    return o3c.Device(f"{_OPEN3D_DEVICE_TYPES[device.type]}:{device.index or 0}")


def _torch(tensor: o3c.Tensor) -> torch.Tensor:
    """Zero-copy torch view of an Open3D tensor (``torch.from_dlpack(tensor)`` takes seconds on big buffers)."""
    return dlpack.from_dlpack(tensor.to_dlpack())


def _open3d(tensor: torch.Tensor) -> o3c.Tensor:
    """Zero-copy Open3D view of a contiguous torch tensor."""
    return o3c.Tensor.from_dlpack(dlpack.to_dlpack(tensor.contiguous()))


def _peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _padded_color(color: torch.Tensor) -> np.ndarray:
    """(H, W, 3) uint8 -> (H + 2, W + 2, 3) float32 in [0, 1], edge pixels repeated (see _color_intrinsics)."""
    color = color.detach().cpu().numpy().astype(np.float32) / 255.0
    return np.pad(color, ((1, 1), (1, 1), (0, 0)), mode="edge")


def _color_intrinsics(K: np.ndarray, height: int, width: int, color_height: int, color_width: int) -> np.ndarray:
    """The colour K (3, 3) float64 to give Open3D so that depth pixel (u, v) takes its colour from the colour
    pixel containing its centre, ``floor((u + 0.5) * color_width / width)`` (likewise v).

    Open3D maps depth pixel ``u`` to colour pixel ``round(fx_c (u - cx) / fx + cx_c)``, and skips the colour
    (while still counting the weight, which darkens it) when that falls outside ``[0, W_c - 1]``, which float
    round-off does at the image's first or last column. So the colour image is padded by one pixel per side
    (:func:`_padded_color`) and ``cx_c = s (cx + 0.5) - 0.5 + 1``, with ``s`` the colour/depth size ratio.
    """
    sx, sy = color_width / width, color_height / height
    return np.array([
        [sx * K[0, 0], 0.0, sx * (K[0, 2] + 0.5) + 0.5],
        [0.0, sy * K[1, 1], sy * (K[1, 2] + 0.5) + 0.5],
        [0.0, 0.0, 1.0],
    ])


@dataclass
class FusionStats:
    """Cost of a fusion and of the last extraction.

    Attributes:
        frames: frames integrated.
        empty_frames: frames whose depth touched no block (no valid depth in ``(0, depth_max]``).
        blocks: allocated 8^3 voxel blocks.
        fuse_seconds: wall time of :func:`fuse_rgbd`, frame reading included.
        extract_seconds: wall time of the last :meth:`TSDFVolume.extract_mesh` or ``extract_points``.
        peak_rss_mib: the whole process's peak resident memory (``ru_maxrss``) after the last step, MiB. Open3D
            allocates in C++, so ``tracemalloc`` cannot see it; this is a process-wide high-water mark.
        rss_growth_mib: how much that peak rose since the volume was created (allocation, fusion, extraction),
            MiB: a lower bound on what they used (zero when the process had already peaked higher before).
    """

    frames: int = 0
    empty_frames: int = 0
    blocks: int = 0
    fuse_seconds: float = 0.0
    extract_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    rss_growth_mib: float = 0.0


class TSDFVolume:
    """A TSDF volume on hash-mapped 8^3 voxel blocks (Open3D ``VoxelBlockGrid`` with tsdf, weight, colour).

    Args:
        voxel_size: voxel edge, metres.
        sdf_trunc: truncation distance, metres; None for 4 voxels.
        block_count: initial hash-map capacity in blocks (it grows by rehashing when exceeded; each block
            holds 512 voxels x 20 bytes).
        device: ``"cpu"`` or ``"cuda[:i]"`` (torch style).
        source: the scene's path, for error messages (None when unknown).

    Example (:func:`fuse_rgbd` builds one from an RGB-D folder, here a tiny synthetic scan):
        >>> import tempfile
        >>> from geo3d.synth.rgbd import generate_rgbd
        >>> tmp = tempfile.TemporaryDirectory()
        >>> scan = generate_rgbd(Path(tmp.name) / "blob", object="blob", frames=3, width=48, height=36,
        ...                      progress=False)
        >>> volume = fuse_rgbd(scan, voxel_size=1 / 16, progress=False)  # the object's diagonal is 1 m
        >>> volume.stats.frames, volume.sdf_trunc  # truncation: 4 voxels by default
        (3, 0.25)
        >>> mesh = volume.extract_mesh()  # geo3d Mesh, metres
        >>> bool(mesh.num_faces > 0 and mesh.vertices.abs().max() < 1)  # around the object at the origin
        True
        >>> tmp.cleanup()
    """

    def __init__(self, voxel_size: float, sdf_trunc: float | None = None, block_count: int = 10_000,
                 device: str | torch.device = "cpu", source: str | os.PathLike | None = None) -> None:
        if not voxel_size > 0:
            raise ValueError(f"TSDFVolume: voxel_size must be positive metres, got {voxel_size}")
        sdf_trunc = 4.0 * voxel_size if sdf_trunc is None else float(sdf_trunc)
        if not sdf_trunc > 0:
            raise ValueError(f"TSDFVolume: sdf_trunc must be positive metres, got {sdf_trunc}")
        self.voxel_size = float(voxel_size)
        self.sdf_trunc = sdf_trunc
        self.device = open3d_device(device)
        self.source = None if source is None else str(source)
        self._rss_start = _peak_rss_mib()
        self.stats = FusionStats(peak_rss_mib=self._rss_start)
        self.grid = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
            attr_channels=((1,), (1,), (3,)),
            voxel_size=self.voxel_size,
            block_resolution=BLOCK_RESOLUTION,
            block_count=int(block_count),
            device=self.device,
        )

    @property
    def trunc_voxels(self) -> float:
        """``sdf_trunc`` in voxels (Open3D's ``trunc_voxel_multiplier``)."""
        return self.sdf_trunc / self.voxel_size

    @property
    def num_blocks(self) -> int:
        return int(self.grid.hashmap().size())

    def integrate(self, frame: RGBDFrame, depth_max: float = 3.0) -> int:
        """Integrate one frame (depth, and colour resampled with K scaled to the colour image's size).

        Args:
            frame: an RGB-D frame; ``frame.depth.K`` (3, 3) pixels is required.
            depth_max: depths beyond this (metres) are ignored.

        Returns:
            The number of blocks the frame touched (0 when it has no valid depth in ``(0, depth_max]``).
        """
        K = frame.depth.K
        if K is None:
            raise InputError(self.source, "frame depth has no intrinsics K")
        depth = frame.depth.depth.detach().cpu().numpy()
        if not ((depth > 0) & (depth <= depth_max)).any():
            return 0  # (Open3D would raise "No block is touched")
        depth_K = K.detach().cpu().double().numpy()
        world_to_cam = o3c.Tensor(np.linalg.inv(frame.cam_to_world.detach().cpu().double().numpy()))
        depth = o3d.t.geometry.Image(o3c.Tensor(depth)).to(self.device)
        color = o3d.t.geometry.Image(o3c.Tensor(_padded_color(frame.color))).to(self.device)
        color_K = o3c.Tensor(_color_intrinsics(depth_K, depth.rows, depth.columns, *frame.color.shape[:2]))
        depth_K = o3c.Tensor(depth_K)
        blocks = self.grid.compute_unique_block_coordinates(depth, depth_K, world_to_cam, 1.0, depth_max,
                                                            self.trunc_voxels)
        self.grid.integrate(blocks, depth, color, depth_K, color_K, world_to_cam, 1.0, depth_max, self.trunc_voxels)
        return int(blocks.shape[0])

    def _attributes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Zero-copy torch views of the block buffers: tsdf, weight (capacity, 512), colour (capacity, 512, 3).

        Voxel ``l`` of a block is local ``(x, y, z) = (l % 8, l // 8 % 8, l // 64)``. Views go stale when the
        hash map grows: take them after any activation.
        """
        r3 = BLOCK_RESOLUTION**3
        tsdf = _torch(self.grid.attribute("tsdf")).reshape(-1, r3)
        weight = _torch(self.grid.attribute("weight")).reshape(-1, r3)
        color = _torch(self.grid.attribute("color")).reshape(-1, r3, 3)
        return tsdf, weight, color

    def _local_offsets(self, device: torch.device) -> torch.Tensor:
        """(512, 3) int64 local voxel indices (x, y, z) in buffer order."""
        r = BLOCK_RESOLUTION
        local = torch.arange(r**3, device=device)
        return torch.stack([local % r, local // r % r, local // (r * r)], 1)

    def voxels(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The observed voxels (weight > 0) of the allocated blocks.

        Returns:
            ``(coords, tsdf, weight, color)`` on the volume's device: coords (M, 3) int64 global voxel indices
            (x, y, z), the voxel at ``coords * voxel_size`` metres; tsdf (M,) float32 in [-1, 1], in units of
            ``sdf_trunc`` (positive in front of the surface); weight (M,) float32 observation count; color (M, 3)
            float32 RGB in [0, 1]. Copies, in block-buffer order.
        """
        hashmap = self.grid.hashmap()
        buf = _torch(hashmap.active_buf_indices()).long()  # (B,)
        keys = _torch(hashmap.key_tensor()).long()[buf]  # (B, 3) block coordinates
        tsdf, weight, color = self._attributes()
        coords = (keys[:, None, :] * BLOCK_RESOLUTION + self._local_offsets(keys.device)).reshape(-1, 3)
        tsdf, weight, color = tsdf[buf].reshape(-1), weight[buf].reshape(-1), color[buf].reshape(-1, 3)
        seen = weight > 0
        return coords[seen], tsdf[seen].clone(), weight[seen].clone(), (color[seen] / 255.0).clamp_(0, 1)

    def set_voxels(self, coords: torch.Tensor, tsdf: torch.Tensor, weight: torch.Tensor,
                   color: torch.Tensor | None = None) -> None:
        """Overwrite voxels (e.g. with a learned refinement); blocks not yet allocated are allocated (zeroed).

        Args:
            coords: (M, 3) integer global voxel indices (x, y, z), unique.
            tsdf: (M,) float in [-1, 1], units of ``sdf_trunc``.
            weight: (M,) float >= 0; 0 marks a voxel unobserved (ignored by extraction).
            color: (M, 3) float RGB in [0, 1], or None to keep the stored colours.
        """
        m = coords.shape[0] if coords.dim() == 2 else -1
        if m < 0 or coords.shape[1] != 3 or coords.is_floating_point():
            raise ValueError(f"set_voxels: coords must be (M, 3) integers, got {tuple(coords.shape)} {coords.dtype}")
        for name, value, shape in (("tsdf", tsdf, (m,)), ("weight", weight, (m,)),
                                   ("color", color, (m, 3))):
            if value is not None and (tuple(value.shape) != shape or not bool(torch.isfinite(value).all())):
                raise ValueError(f"set_voxels: {name} must be finite {shape}, got {tuple(value.shape)}")
        if bool((tsdf.abs() > 1).any()) or bool((weight < 0).any()):
            raise ValueError("set_voxels: expected tsdf in [-1, 1] and weight >= 0")
        if color is not None and bool(((color < 0) | (color > 1)).any()):
            raise ValueError("set_voxels: expected color in [0, 1]")
        if m == 0:
            return
        device = torch.device(str(self.device).lower())
        coords = coords.to(device).long()
        block = torch.div(coords, BLOCK_RESOLUTION, rounding_mode="floor")
        local = coords - block * BLOCK_RESOLUTION
        keys, inverse = torch.unique(block, dim=0, return_inverse=True)
        hashmap = self.grid.hashmap()
        o3d_keys = _open3d(keys.int())
        new_buf, new = (_torch(t) for t in hashmap.activate(o3d_keys))
        tsdf_buf, weight_buf, color_buf = self._attributes()  # after activate: the buffers may have grown
        fresh = new_buf[new.bool()].long()
        tsdf_buf[fresh], weight_buf[fresh], color_buf[fresh] = 0.0, 0.0, 0.0
        buf = _torch(hashmap.find(o3d_keys)[0]).long()[inverse]
        slot = (local[:, 2] * BLOCK_RESOLUTION + local[:, 1]) * BLOCK_RESOLUTION + local[:, 0]
        tsdf_buf[buf, slot] = tsdf.to(device, torch.float32)
        weight_buf[buf, slot] = weight.to(device, torch.float32)
        if color is not None:
            color_buf[buf, slot] = color.to(device, torch.float32) * 255.0

    def extract_mesh(self, weight_threshold: float = 0.5) -> Mesh:
        """Marching cubes over the blocks (Open3D): welded vertices with colours.

        Args:
            weight_threshold: voxels with weight <= this are skipped (Open3D's rule; weight = observation
                count, so 0.5 keeps every observed voxel; Open3D's own default of 3 suits long sequences).

        Returns:
            Mesh: vertices (V, 3) float32 metres, faces (F, 3) int64, vertex colours (V, 3) float32 [0, 1].

        Raises:
            InputError: naming the scene when the volume yields no triangle.
        """
        start = time.perf_counter()
        if self.num_blocks == 0:
            raise InputError(self.source, _NO_VOXEL)
        mesh = self.grid.extract_triangle_mesh(float(weight_threshold)).cpu()
        vertices = mesh.vertex.positions.numpy()
        faces = mesh.triangle.indices.numpy().astype(np.int64) if "indices" in mesh.triangle else np.zeros((0, 3))
        if len(faces) == 0:
            raise InputError(self.source, f"the volume has no surface with weight > {weight_threshold} "
                                          f"({_NO_VOXEL})")
        colors = mesh.vertex.colors.numpy().clip(0, 1) if "colors" in mesh.vertex else None
        self._finish_extraction(start)
        return Mesh(vertices, faces, colors)

    def extract_points(self, weight_threshold: float = 0.5) -> PointCloud:
        """Zero-crossing points of the TSDF (Open3D), with colours and TSDF-gradient normals.

        Returns:
            PointCloud: points (N, 3) float32 metres, colours (N, 3) [0, 1], normals (N, 3) unit, pointing
            to the observed free space.

        Raises:
            InputError: naming the scene when the volume yields no point.
        """
        start = time.perf_counter()
        if self.num_blocks == 0:
            raise InputError(self.source, _NO_VOXEL)
        cloud = self.grid.extract_point_cloud(float(weight_threshold)).cpu()
        points = cloud.point.positions.numpy() if "positions" in cloud.point else np.zeros((0, 3))
        if len(points) == 0:
            raise InputError(self.source, f"the volume has no surface with weight > {weight_threshold} "
                                          f"({_NO_VOXEL})")
        colors = cloud.point.colors.numpy().clip(0, 1) if "colors" in cloud.point else None
        normals = None
        if "normals" in cloud.point:
            normals = cloud.point.normals.numpy()
            normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        self._finish_extraction(start)
        return PointCloud(points, colors=colors, normals=normals)

    def _record_memory(self) -> None:
        self.stats.blocks = self.num_blocks
        self.stats.peak_rss_mib = _peak_rss_mib()
        self.stats.rss_growth_mib = self.stats.peak_rss_mib - self._rss_start

    def _finish_extraction(self, start: float) -> None:
        self.stats.extract_seconds = time.perf_counter() - start
        self._record_memory()


def fuse_rgbd(
    sequence: RGBDSequence | Iterable[RGBDFrame] | str | os.PathLike,
    voxel_size: float,
    sdf_trunc: float | None = None,
    depth_max: float = 3.0,
    depth_scale: float = 1000.0,
    device: str | torch.device = "cpu",
    block_count: int = 10_000,
    progress: bool = True,
) -> TSDFVolume:
    """Fuse an RGB-D sequence into a TSDF on sparse voxel blocks, one frame at a time.

    Args:
        sequence: a 7-Scenes style folder (read with :func:`~geo3d.io.rgbd.read_rgbd_sequence`), an
            :class:`RGBDSequence`, or any iterable of :class:`RGBDFrame` (depth in metres with K,
            ``cam_to_world`` OpenCV poses in metres).
        voxel_size: voxel edge, metres.
        sdf_trunc: truncation distance, metres; None for 4 voxels.
        depth_max: depths beyond this (metres) are ignored.
        depth_scale: depth codes per metre of the PNGs, used only when ``sequence`` is a folder.
        device: ``"cpu"`` or ``"cuda[:i]"``.
        block_count: initial hash-map capacity in 8^3 blocks (grows when exceeded).
        progress: show a progress bar on stderr.

    Returns:
        TSDFVolume, with ``volume.stats`` (:class:`FusionStats`) filled in.

    Raises:
        InputError: naming the scene when no frame's depth touched the volume (no valid depth within
            ``depth_max``: typically a wrong depth scale), or a frame lacks intrinsics.
    """
    if isinstance(sequence, (str, os.PathLike)):
        sequence = read_rgbd_sequence(sequence, depth_scale)
    source = getattr(sequence, "root", None)
    start = time.perf_counter()
    volume = TSDFVolume(voxel_size, sdf_trunc, block_count, device, source)
    frames = sequence
    if progress:
        from tqdm import tqdm

        frames = tqdm(sequence, desc=f"fusing {Path(source).name if source else 'frames'}", unit="frame",
                      total=len(sequence) if hasattr(sequence, "__len__") else None)
    stats = volume.stats
    for frame in frames:
        touched = volume.integrate(frame, depth_max)
        stats.frames += 1
        stats.empty_frames += touched == 0
    stats.fuse_seconds = time.perf_counter() - start
    volume._record_memory()
    if stats.frames == stats.empty_frames:
        raise InputError(source, f"{_NO_VOXEL} ({stats.frames} frames, none with valid depth in "
                                 f"(0, {depth_max}] m)")
    return volume
