"""``geo3d render``: render a 3D Gaussian splatting file into its cameras or a turntable, to PNGs, a GIF, RGB-D.

:func:`render_gaussians` renders :class:`~geo3d.types.Gaussians` into :class:`~geo3d.types.Cameras` with the
op layer's rasterizer (gsplat on CUDA, our tile rasterizer on CPU), without gradients, a few cameras at a
time. :func:`render_to_files` is ``geo3d render``: it writes RGB PNGs, an animated GIF and, with ``depth=True``,
an RGB-D folder in the 7-Scenes layout (:mod:`geo3d.io.rgbd`) that the surface pipeline can fuse. Turntables
come from :mod:`pipelines.splatting.cameras` (:func:`~pipelines.splatting.cameras.turntable_cameras`; a real
capture's turntable stands upright along its cameras' mean up and circles the point they look at).
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
from tqdm import tqdm

from geo3d.errors import InputError
from geo3d.io import RGBDFrame, invert_rigid, read_gaussian_ply, read_transforms, write_intrinsics, write_rgbd_frame
from geo3d.io.atomic import atomic_path
from geo3d.types import Cameras, DepthMap, Gaussians
from ops import rasterize_gaussians
from pipelines.splatting.cameras import center_from_cameras, turntable_cameras, up_from_cameras
from pipelines.splatting.data import BACKGROUNDS

DEPTH_SCALE = 1000.0
"""Depth PNG codes per metre (millimetres, as 7-Scenes); 0 = no surface."""
MAX_DEPTH_M = 65534 / DEPTH_SCALE
"""Largest depth a uint16 PNG holds at :data:`DEPTH_SCALE` (65535 is reserved as invalid), metres."""
SURFACE_ALPHA = 0.5
"""A pixel has a depth where the accumulated opacity exceeds this."""
TURNTABLE_FOV_DEG = 40.0
"""Field of view of the shorter image side for turntables without given cameras, degrees."""
TURNTABLE_SIZE = 512
"""Default turntable image side without given cameras, pixels."""
TURNTABLE_ELEVATION_DEG = 20.0
"""Default turntable elevation without given cameras, degrees above the horizon."""
GIF_MAX_SIDE = 512
"""GIF frames are shrunk to at most this many pixels on their longer side."""
_FRAME_MARGIN = 1.1  # slack around the Gaussians' bounding sphere when framing a turntable
_OPAQUE = 0.5  # Gaussians at least this opaque frame the turntable


@dataclass
class RenderOutput:
    """Images of C cameras.

    Attributes:
        rgb: (C, H, W, 3) float32 colours in [0, 1], background blended in.
        alpha: (C, H, W) float32 accumulated opacity in [0, 1].
        depth: (C, H, W) float32 expected camera depth ``sum_i w_i z_i / alpha`` in metres where
            ``alpha > 0.5``, 0 elsewhere; None unless asked for.
    """

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor | None = None


@torch.no_grad()
def render_gaussians(
    gaussians: Gaussians,
    cameras: Cameras,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    with_depth: bool = False,
    chunk: int = 8,
) -> RenderOutput:
    """Render Gaussians into cameras, with the full SH degree of the Gaussians, without gradients.

    Runs on the Gaussians' device (the cameras are moved there); ``chunk`` cameras go to the rasterizer
    at a time, so memory stays bounded for long camera lists.

    Args:
        gaussians: N Gaussians (means (N, 3) metres, sh (N, K, 3)).
        cameras: C cameras (OpenCV ``world_to_cam`` (C, 4, 4), K (C, 3, 3) pixels, size W x H).
        background: RGB in [0, 1] blended behind the Gaussians.
        with_depth: also return the expected depth.
        chunk: cameras per rasterizer call.

    Returns:
        :class:`RenderOutput` with CPU float32 tensors: rgb (C, H, W, 3), alpha (C, H, W), depth (C, H, W)
        metres or None.
    """
    if chunk < 1:
        raise ValueError(f"render_gaussians: chunk must be >= 1, got {chunk}")
    g, device = gaussians, gaussians.means.device
    rgb, alpha, depth = [], [], []
    for start in range(0, len(cameras), chunk):
        cams = cameras[start:start + chunk].to(device)
        backgrounds = torch.tensor(background, dtype=torch.float32, device=device).expand(len(cams), 3)
        render, acc, _ = rasterize_gaussians(
            g.means, g.unit_quats, g.scales, g.opacities, g.sh, cams.world_to_cam, cams.K, cams.width,
            cams.height, sh_degree=g.sh_degree, backgrounds=backgrounds.contiguous(),
            render_mode="RGB+D" if with_depth else "RGB",
        )
        acc = acc[..., 0].float().cpu()
        rgb.append(render[..., :3].float().clamp(0, 1).cpu())
        alpha.append(acc)
        if with_depth:
            surface = acc > SURFACE_ALPHA
            expected = render[..., 3].float().cpu() / acc.clamp_min(1e-12)
            depth.append(torch.where(surface, expected, torch.zeros_like(expected)))
    return RenderOutput(torch.cat(rgb), torch.cat(alpha), torch.cat(depth) if with_depth else None)


def _framing(gaussians: Gaussians) -> tuple[np.ndarray, float]:
    """Centre (3,) and radius (metres) of the box spanning the 1st-99th percentiles of the opaque means."""
    means = gaussians.means.detach().cpu().double()
    opaque = gaussians.opacities.detach().cpu() > _OPAQUE
    points = means[opaque] if int(opaque.sum()) >= 1 else means
    lo, hi = np.percentile(points.numpy(), [1.0, 99.0], axis=0)
    return (lo + hi) / 2, max(float(np.linalg.norm(hi - lo)) / 2, 1e-3)


def _turntable_from_gaussians(gaussians: Gaussians, n: int, width: int, height: int,
                              elevation: float) -> Cameras:
    """Turntable framing the Gaussians: z up, :data:`TURNTABLE_FOV_DEG` over the shorter side."""
    center, radius = _framing(gaussians)
    half_fov = math.radians(TURNTABLE_FOV_DEG) / 2
    focal = min(width, height) / 2 / math.tan(half_fov)
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    distance = _FRAME_MARGIN * radius / math.sin(half_fov)
    return turntable_cameras(n, center, distance, elevation, np.array([0.0, 0.0, 1.0]), K, width, height)


def _turntable_from_cameras(source: Path, cameras: Cameras, n: int, width: int | None, height: int | None,
                            elevation: float | None) -> Cameras:
    """Turntable around what the cameras look at, at their mean distance and elevation, with their focal
    lengths (principal point at the image centre), upright along their mean up."""
    up = up_from_cameras(cameras).double().numpy()
    center = center_from_cameras(cameras).double().numpy()
    offsets = cameras.centers.double().numpy() - center
    distances = np.linalg.norm(offsets, axis=1)
    if not distances.mean() > 1e-9:
        raise InputError(source, "the cameras' optical axes do not converge on a point to circle around")
    if elevation is None:
        elevation = float(np.degrees(np.arcsin(np.clip(offsets @ up / np.maximum(distances, 1e-12), -1, 1))).mean())
    width, height = width or cameras.width, height or cameras.height
    K = cameras.K[0].double().numpy().copy()
    K[0, 2], K[1, 2] = width / 2, height / 2
    return turntable_cameras(n, center, float(distances.mean()), elevation, up, K, width, height)


def _check_number(name: str, value: float | None, low: float, high: float = math.inf) -> None:
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and low < value < high):
        bounds = f"> {low:g}" if high == math.inf else f"in ({low:g}, {high:g})"
        raise InputError(None, f"{name}: expected a number {bounds}, got {value!r}")


def _names(image_paths: list[Path]) -> list[str]:
    """Output names: the source images' stems when they are unique, else ``000``, ``001``..."""
    stems = [p.stem for p in image_paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{i:03d}" for i in range(len(stems))]


def _save_png(path: Path, image: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def _save_gif(path: Path, frames: list[Image.Image], duration_ms: int = 80) -> Path:
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return path


def render_to_files(
    ply: str | os.PathLike,
    out_dir: str | os.PathLike,
    cameras: str | os.PathLike | None = None,
    turntable: int | None = None,
    depth: bool = False,
    scale: float = 1.0,
    background: str = "white",
    width: int | None = None,
    height: int | None = None,
    elevation: float | None = None,
    chunk: int = 8,
    device: str | None = None,
    progress: bool = True,
) -> list[Path]:
    """Render a 3DGS PLY file into the cameras of a ``transforms.json`` or into a turntable, and write images.

    Views:

    * ``cameras`` without ``turntable``: the file's cameras; images are named after the source images
      (``0001.jpg`` -> ``0001.png``; ``000.png``, ``001.png``... when stems repeat). GIF: ``renders.gif``.
    * ``turntable=N``: N views on a circle, ``000.png``... and ``turntable.gif``. With ``cameras``: around
      the point the cameras look at (:func:`center_from_cameras`), at their mean distance and elevation,
      with their focal lengths, upright along their mean up (:func:`up_from_cameras`). Without: framing
      the Gaussians that are more than 50 % opaque (1st-99th percentile box of their centres), a 40 degree
      field of view over the shorter side, 512 x 512, 20 degrees elevation, z up.

    With ``depth``, ``out_dir/rgbd/`` also gets each view as a 7-Scenes RGB-D frame: ``frame-NNNNNN.color.png``,
    ``frame-NNNNNN.depth.png`` (uint16 millimetres: the expected depth where the opacity exceeds 0.5, else
    0; depths beyond 65.534 m are also written as 0), ``frame-NNNNNN.pose.txt`` (camera-to-world, OpenCV)
    and ``camera-intrinsics.txt``, readable with :func:`geo3d.io.read_rgbd_sequence`.

    Args:
        ply: a 3DGS PLY file.
        out_dir: output folder (created).
        cameras: a ``transforms.json`` file, or None.
        turntable: number of turntable views, or None.
        depth: also write the RGB-D folder.
        scale: image size factor applied to every view (intrinsics scaled with it).
        background: ``"white"`` or ``"black"``.
        width: turntable image width in pixels (default: the cameras' width, else 512).
        height: turntable image height in pixels (default: the cameras' height, else 512).
        elevation: turntable elevation in degrees (default: the cameras' mean, else 20).
        chunk: views per rasterizer call.
        device: torch device; None uses CUDA when available, else the CPU.
        progress: show a tqdm progress bar over views.

    Returns:
        The written files: PNGs in view order, the GIF, then (with ``depth``) the RGB-D files.

    Raises:
        InputError: the PLY is not a 3DGS file, neither ``cameras`` nor ``turntable`` is given, a number
            is out of range, ``width``/``height`` are given for the file's own cameras, or (with
            ``depth``) the file's cameras do not share one K.
    """
    ply, out_dir = Path(ply), Path(out_dir)
    if cameras is None and turntable is None:
        raise InputError(ply, "nothing to render: give cameras (--cameras transforms.json) or a turntable "
                              "(--turntable N)")
    if background not in BACKGROUNDS:
        raise InputError(None, f"background: expected one of {', '.join(BACKGROUNDS)}, got {background!r}")
    if turntable is not None and (isinstance(turntable, bool) or int(turntable) != turntable or turntable < 1):
        raise InputError(None, f"turntable: expected a number of views >= 1, got {turntable!r}")
    _check_number("scale", scale, 0.0)
    for name, value in (("width", width), ("height", height)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(None, f"{name}: expected a positive number of pixels, got {value!r}")
    _check_number("elevation", elevation, -90.0, 90.0)
    if turntable is None and (width is not None or height is not None):
        raise InputError(None, "width/height set the turntable size; to resize the file's cameras use scale")

    gaussians = read_gaussian_ply(ply)
    frames = read_transforms(cameras) if cameras is not None else None
    if turntable is not None:
        if frames is not None:
            views = _turntable_from_cameras(Path(cameras), frames.cameras, int(turntable), width, height, elevation)
        else:
            views = _turntable_from_gaussians(gaussians, int(turntable), width or TURNTABLE_SIZE,
                                              height or TURNTABLE_SIZE, TURNTABLE_ELEVATION_DEG
                                              if elevation is None else elevation)
        names, gif_name = [f"{i:03d}" for i in range(len(views))], "turntable.gif"
    else:
        views, names, gif_name = frames.cameras, _names(frames.image_paths), "renders.gif"
    if scale != 1.0:
        views = views.scaled(scale)
    if depth and not torch.allclose(views.K, views.K[:1].expand_as(views.K)):
        raise InputError(cameras, "the cameras have different intrinsics; an RGB-D folder stores one K "
                                  "(render without depth, or with a turntable)")

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    gaussians = gaussians.to(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    rgbd_dir = out_dir / "rgbd"
    written: list[Path] = []
    rgbd_written: list[Path] = []
    gif_frames: list[Image.Image] = []
    too_far = 0
    with tqdm(total=len(views), desc=f"render {ply.name}", unit="view", disable=not progress) as bar:
        for start in range(0, len(views), chunk):
            batch = views[start:start + chunk]
            out = render_gaussians(gaussians, batch, BACKGROUNDS[background], with_depth=depth, chunk=chunk)
            images = (out.rgb * 255).round().to(torch.uint8).numpy()
            for j, image in enumerate(images):
                i = start + j
                written.append(_save_png(out_dir / f"{names[i]}.png", image))
                frame = Image.fromarray(image)
                frame.thumbnail((GIF_MAX_SIDE, GIF_MAX_SIDE))
                gif_frames.append(frame)
                if depth:
                    values = out.depth[j]
                    too_far += int((values > MAX_DEPTH_M).sum())
                    values = torch.where(values > MAX_DEPTH_M, torch.zeros_like(values), values)
                    pose = invert_rigid(batch.world_to_cam[j].double()).float()
                    write_rgbd_frame(rgbd_dir, i, RGBDFrame(torch.from_numpy(image), DepthMap(values, K=batch.K[j]),
                                                            pose), DEPTH_SCALE)
                    rgbd_written += [rgbd_dir / f"frame-{i:06d}.{kind}" for kind in
                                     ("color.png", "depth.png", "pose.txt")]
            bar.update(len(batch))
    written.append(_save_gif(out_dir / gif_name, gif_frames))
    if depth:
        write_intrinsics(rgbd_dir, views.K[0])
        written += [*rgbd_written, rgbd_dir / "camera-intrinsics.txt"]
        if too_far:
            warnings.warn(f"{too_far} depth pixels beyond {MAX_DEPTH_M} m were written as 0 (no surface)",
                          stacklevel=2)
    return written
