"""Depth maps: back-projected point clouds, colour-mapped depth images, comparison panels, and ``geo3d view --depth``.

Conventions:

* Depth is z along the optical axis in metres, ``(H, W)``; 0 (or NaN, or negative) means "no measurement".
* Intrinsics ``K`` are (3, 3) in pixels with integer pixel centres (OpenCV / kornia: pixel ``(u, v)``
  looks along ``((u - cx) / fx, (v - cy) / fy, 1)``). :meth:`geo3d.types.DepthMap.to_points` uses
  pixel centres at ``u + 0.5`` instead; the two differ by half a pixel.
* Back-projected points are in the camera frame (OpenCV: x right, y down, z forward), metres. The viewer
  scene turns them into a z-up frame (x forward, y left, z up, like a LiDAR scan) so that the usual views
  (``auto``, ``bev``, ``front``) work; the camera sits at the origin.
* Colour-mapped depth: near is warm, far is cold. With the default ``turbo`` colormap, the nearest depth
  of the range is red and the farthest blue (the colormap is read from its high end to its low end, and
  only its ``POINT_SPAN`` part is used so that neither end is near-black). Missing pixels are black.

Depth files for :func:`view_depth`: a 16-bit PNG (KITTI depth completion: metres = code / 256, 0 =
missing; ``depth_scale`` changes the 256) or a ``.npy`` (H, W) float array of metres.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from kornia.geometry.depth import depth_to_3d_v2
from PIL import Image, ImageDraw, UnidentifiedImageError

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_path
from geo3d.io.depth_png import read_depth_png
from geo3d.types import DepthMap, PointCloud
from viewers.colors import BACKGROUND, POINT_SPAN, TEXT, colormap_table
from viewers.render import _font, camera_from_pose, render_png
from viewers.scene import Scene
from viewers.window import has_display, show

PathLike = str | os.PathLike
DEPTH_PERCENTILES = (2.0, 98.0)
"""Default colour range of a depth map: these percentiles of its valid depths."""
SPARSE_FRACTION = 0.3
"""Depth maps with fewer valid pixels than this fraction are drawn dilated (3 x 3) in panels, for display only."""
KITTI_FOCAL = 721.5
"""Focal length of KITTI's colour cameras at their full 1242-pixel width, pixels (the default intrinsics)."""
KITTI_WIDTH = 1242
PULL_BACK = 0.15
"""The point-cloud render's camera sits this fraction of the median depth behind the depth camera."""
# Camera frame (x right, y down, z forward) -> viewer frame (x forward, y left, z up): columns are the camera axes.
CAM_TO_VIEW = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


# ------------------------------------------------------------------------------------------- arrays

def _depth_array(depth: torch.Tensor | np.ndarray | DepthMap, name: str = "depth") -> np.ndarray:
    """(H, W) float64 metres with every missing pixel (0, NaN, inf, negative, masked) set to 0."""
    if isinstance(depth, DepthMap):
        values = torch.where(depth.valid, depth.depth, torch.zeros_like(depth.depth)).detach().cpu().numpy()
    elif isinstance(depth, torch.Tensor):
        values = depth.detach().cpu().numpy()
    else:
        values = np.asarray(depth)
    if values.ndim != 2:
        raise ValueError(f"{name}: expected an (H, W) depth map, got shape {values.shape}")
    values = values.astype(np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(values) & (values > 0), values, 0.0)


def _rgb_array(image: np.ndarray | torch.Tensor, shape: tuple[int, int], name: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 from uint8 RGB, or from float RGB in [0, 1]; must match ``shape`` (H, W)."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.shape != (*shape, 3):
        raise ValueError(f"{name}: expected an (H, W, 3) = {(*shape, 3)} RGB image, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating) and np.isfinite(array).all() and 0 <= array.min() <= array.max() <= 1:
        return np.round(array * 255).astype(np.uint8)
    raise ValueError(f"{name}: expected uint8 RGB or floats in [0, 1], got {array.dtype} "
                     f"in [{array.min()}, {array.max()}]")


def depth_range(depth: torch.Tensor | np.ndarray | DepthMap,
                percentiles: tuple[float, float] = DEPTH_PERCENTILES) -> tuple[float, float]:
    """A robust colour range for a depth map: two percentiles of its valid depths.

    Args:
        depth: (H, W) metres, 0 = missing.
        percentiles: (low, high) percentiles; ``(0, 100)`` gives the plain min and max.

    Returns:
        ``(vmin, vmax)`` metres; ``(0, 1)`` when nothing is valid.
    """
    values = _depth_array(depth)
    values = values[values > 0]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, percentiles)
    return float(lo), float(hi)


def _colorize(values: np.ndarray, valid: np.ndarray, vmin: float, vmax: float, cmap: str,
              span: tuple[float, float], reverse: bool) -> np.ndarray:
    """(H, W, 3) uint8: ``values`` through the colormap between vmin and vmax, black where not ``valid``."""
    table = np.round(colormap_table(cmap) * 255).astype(np.uint8)
    if vmax - vmin < 1e-12:
        t = np.full(values.shape, 0.5)
    else:
        t = np.clip((values - vmin) / (vmax - vmin), 0.0, 1.0)
    if reverse:
        t = 1.0 - t
    t = span[0] + t * (span[1] - span[0])
    out = table[np.round(t * (len(table) - 1)).astype(np.int64)]
    out[~valid] = 0
    return out


def colorize_depth(depth: torch.Tensor | np.ndarray | DepthMap, vmin: float | None = None, vmax: float | None = None,
                   cmap: str = "turbo") -> np.ndarray:
    """Colour-map a depth map: near is warm, far is cold; missing pixels are black.

    The nearest depth of the range takes the high end of the colormap (turbo: red), the farthest its low
    end (turbo: blue); only :data:`viewers.colors.POINT_SPAN` of the colormap is used, so no valid pixel is
    near-black. Depths outside the range are clamped to its ends. Panels coloured with the same
    ``vmin``/``vmax`` are directly comparable.

    Args:
        depth: (H, W) metres; 0, NaN, inf and negative values are missing.
        vmin: depth of the near end of the colours, metres; None: the 2nd percentile of the valid depths.
        vmax: depth of the far end, metres; None: the 98th percentile.
        cmap: a colormap name (see :func:`viewers.colors.colormap_table`).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    values = _depth_array(depth)
    if vmin is None or vmax is None:
        lo, hi = depth_range(values)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    return _colorize(values, values > 0, float(vmin), float(vmax), cmap, POINT_SPAN, reverse=True)


def colorize_scalar(values: np.ndarray | torch.Tensor, valid: np.ndarray | torch.Tensor | None = None,
                    vmin: float | None = None, vmax: float | None = None, cmap: str = "plasma") -> np.ndarray:
    """Colour-map an (H, W) scalar image (an error or uncertainty map): low values at the colormap's low end.

    Args:
        values: (H, W) scalars.
        valid: (H, W) bool, pixels to colour (others black); None: the finite pixels.
        vmin: value of the low end; None: 0.
        vmax: value of the high end; None: the 98th percentile of the valid values.
        cmap: colormap name (default ``plasma``: dark blue to yellow, never black).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    values = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    values = values.astype(np.float64)
    mask = np.isfinite(values)
    if valid is not None:
        valid = valid.detach().cpu().numpy() if isinstance(valid, torch.Tensor) else np.asarray(valid)
        mask &= valid.astype(bool)
    vmin = 0.0 if vmin is None else float(vmin)
    if vmax is None:
        vmax = float(np.percentile(values[mask], DEPTH_PERCENTILES[1])) if mask.any() else 1.0
    return _colorize(np.where(mask, values, 0.0), mask, vmin, float(vmax), cmap, (0.0, 1.0), reverse=False)


def dilate_for_display(depth: torch.Tensor | np.ndarray | DepthMap, size: int = 3) -> np.ndarray:
    """Grow each valid pixel of a sparse depth map to a ``size`` x ``size`` square (max filter), for display only.

    Where grown squares meet, the larger depth wins. Never use the result as data.

    Args:
        depth: (H, W) metres, 0 = missing.
        size: odd square size in pixels.

    Returns:
        (H, W) float64 metres, 0 = missing.
    """
    values = torch.from_numpy(_depth_array(depth))[None, None]
    return torch.nn.functional.max_pool2d(values, size, stride=1, padding=size // 2)[0, 0].numpy()


# ----------------------------------------------------------------------------------------- points

def default_K(height: int, width: int) -> torch.Tensor:
    """KITTI-like intrinsics for a depth map without its own: ``fx = fy = 721.5 W / 1242``, ``cx = W/2``, ``cy = H/2``.

    Returns:
        (3, 3) float64 pixels.
    """
    f = KITTI_FOCAL * width / KITTI_WIDTH
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)


def depth_to_points(
    depth: torch.Tensor | np.ndarray | DepthMap,
    K: torch.Tensor | np.ndarray | None = None,
    image: np.ndarray | torch.Tensor | None = None,
    max_depth: float | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "turbo",
) -> PointCloud:
    """Back-project the valid pixels of a depth map with kornia (``depth_to_3d_v2``).

    Pixel ``(u, v)`` with depth ``z`` becomes ``((u - cx) z / fx, (v - cy) z / fy, z)`` (integer pixel
    centres), computed in float64.

    Args:
        depth: (H, W) z-depth in metres, 0 = missing (NaN, inf and negatives are missing too); a
            :class:`~geo3d.types.DepthMap` also gives its mask and, when ``K`` is None, its intrinsics.
        K: (3, 3) intrinsics in pixels.
        image: (H, W, 3) uint8 RGB (or floats in [0, 1]) registered with the depth: the point colours.
            None colours the points by depth as :func:`colorize_depth` does (near warm, far cold).
        max_depth: drop pixels deeper than this, metres; None keeps all.
        vmin: near end of the depth colours (no ``image``), metres; None: 2nd percentile of the kept depths.
        vmax: far end of the depth colours, metres; None: 98th percentile.
        cmap: colormap for the depth colours.

    Returns:
        PointCloud with points (N, 3) float32 in the camera frame (x right, y down, z forward), metres, in
        row-major pixel order, and colours (N, 3) in [0, 1].

    Raises:
        ValueError: shapes do not match, or K is missing or not (3, 3).
    """
    if K is None and isinstance(depth, DepthMap):
        K = depth.K
    if K is None:
        raise ValueError("depth_to_points: intrinsics K are needed (see default_K for KITTI-like ones)")
    values = _depth_array(depth)
    K = torch.as_tensor(np.asarray(K.detach().cpu() if isinstance(K, torch.Tensor) else K), dtype=torch.float64)
    if K.shape != (3, 3) or not torch.isfinite(K).all():
        raise ValueError(f"depth_to_points: K must be a finite (3, 3) matrix, got shape {tuple(K.shape)}")
    valid = values > 0
    if max_depth is not None:
        valid &= values <= max_depth
    xyz = depth_to_3d_v2(torch.from_numpy(values)[None], K[None])[0]  # (H, W, 3)
    mask = torch.from_numpy(valid)
    points = xyz[mask]
    if image is not None:
        colors = _rgb_array(image, values.shape)[valid].astype(np.float32) / 255.0
    else:
        z = values[valid]
        if vmin is None or vmax is None:
            lo, hi = (np.percentile(z, DEPTH_PERCENTILES) if z.size else (0.0, 1.0))
            vmin = lo if vmin is None else vmin
            vmax = hi if vmax is None else vmax
        rgb = _colorize(z[None], np.ones((1, z.size), bool), float(vmin), float(vmax), cmap, POINT_SPAN, True)[0]
        colors = rgb.astype(np.float32) / 255.0
    return PointCloud(points.float(), colors=torch.from_numpy(colors))


# ----------------------------------------------------------------------------------------- panels

def panel_title_height(width: int) -> int:
    """Height in pixels of the title bar above each panel of a :func:`depth_panel` image ``width`` pixels wide."""
    return round(_title_font_size(width) * 1.5)


def _title_font_size(width: int) -> int:
    return max(11, round(width / 64))


def _as_rgb_panel(image: np.ndarray | torch.Tensor, title: str) -> np.ndarray:
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or 0 in array.shape:
        raise ValueError(f"depth_panel: panel {title!r}: expected an (H, W, 3) or (H, W) uint8 image, "
                         f"got {array.dtype} of shape {array.shape}")
    return array


def depth_panel(panels: Sequence[tuple[str, np.ndarray]], out: PathLike, title_height: int | None = None) -> Path:
    """Write images stacked vertically, each under a title bar with its title, as one PNG (atomically).

    Panels narrower than the widest are left-aligned on the background colour. Titles too long for the
    width are drawn smaller (down to 9 px text), then cut.

    Args:
        panels: ``(title, image)`` pairs, images (H_i, W_i, 3) or (H_i, W_i) uint8.
        out: the ``.png`` file to write (folders are created).
        title_height: height of each title bar in pixels; None: :func:`panel_title_height` of the width.

    Returns:
        ``out`` as a Path. The image is ``max W_i`` wide and ``sum(H_i) + len(panels) * title_height`` high.

    Raises:
        InputError: ``out`` does not end in ``.png``.
        ValueError: no panels, or a panel is not a uint8 image.
    """
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise InputError(out, f"expected a .png output file, got suffix {out.suffix or '(none)'!r}")
    if not panels:
        raise ValueError("depth_panel: no panels given")
    images = [(str(title), _as_rgb_panel(image, str(title))) for title, image in panels]
    width = max(image.shape[1] for _, image in images)
    bar = panel_title_height(width) if title_height is None else int(title_height)
    height = sum(image.shape[0] + bar for _, image in images)
    background = tuple(int(round(c * 255)) for c in BACKGROUND)
    canvas = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(canvas)
    text_color = tuple(int(round(c * 255)) for c in TEXT)
    y = 0
    for title, image in images:
        size = min(_title_font_size(width), max(9, round(bar / 1.5)))
        pad = max(3, size // 2)
        font = _font(size)
        while size > 9 and draw.textlength(title, font=font) > width - 2 * pad:
            size -= 1
            font = _font(size)
        text = title
        while text and draw.textlength(text, font=font) > width - 2 * pad:
            text = text[:-4] + "..." if len(text) > 4 else ""
        draw.text((pad, y + (bar - size) / 2 - 1), text, fill=text_color, font=font)
        canvas.paste(Image.fromarray(np.ascontiguousarray(image)), (0, y + bar))
        y += bar + image.shape[0]
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG")
    return out


def _count(n: int) -> str:
    return f"{n:,}"


def _depth_title(label: str, depth: np.ndarray, dilated: bool, note: str | None = None) -> str:
    """``"label: 2,345 points (3x3 dilated for display); note"`` or ``"label: 97.1 % of pixels; note"``."""
    n = int((depth > 0).sum())
    text = f"{label}: {_count(n)} points (3x3 dilated for display)" if dilated else \
        f"{label}: {100 * n / depth.size:.1f} % of pixels"
    return text if note is None else f"{text}; {note}"


def depth_comparison_png(
    image: np.ndarray | torch.Tensor | None,
    sparse: torch.Tensor | np.ndarray | DepthMap,
    pred: torch.Tensor | np.ndarray | DepthMap,
    out: PathLike,
    gt: torch.Tensor | np.ndarray | DepthMap | None = None,
    uncertainty: torch.Tensor | np.ndarray | None = None,
    max_depth: float | None = None,
    cmap: str = "turbo",
) -> Path:
    """The standard depth-completion panel: input RGB, sparse input, completion, ground truth, error, uncertainty.

    All depth panels share one colour range (near warm, far cold, see :func:`colorize_depth`): the 2nd to
    98th percentile of the measured depths (the ground truth when given and not empty, else the sparse
    input, else the prediction), its far end capped at ``max_depth``. The sparse input (and the ground
    truth, and the error, when under :data:`SPARSE_FRACTION` of the pixels are valid) is drawn 3 x 3
    dilated so its points are visible; the data is not changed. The absolute error ``|pred - gt|`` is
    shown where both are valid (and gt <= ``max_depth``), in ``plasma`` from 0 (dark blue) to its 98th
    percentile (yellow), with its MAE and RMSE in the title; the uncertainty in ``viridis`` with its own range.

    Args:
        image: (H, W, 3) uint8 RGB input, or None (no RGB panel).
        sparse: (H, W) sparse input depth, metres, 0 = missing.
        pred: (H, W) completed depth, metres.
        out: the ``.png`` file to write.
        gt: (H, W) ground-truth depth, metres, or None.
        uncertainty: (H, W) per-pixel uncertainty of ``pred`` (e.g. a standard deviation, metres), or None.
        max_depth: cap of the colour range and of the error evaluation, metres; None: no cap.
        cmap: depth colormap.

    Returns:
        ``out`` as a Path.

    Raises:
        ValueError: the inputs do not share one (H, W).
    """
    sparse_d, pred_d = _depth_array(sparse, "sparse"), _depth_array(pred, "pred")
    gt_d = None if gt is None else _depth_array(gt, "gt")
    shape = pred_d.shape
    for name, array in (("sparse", sparse_d), ("gt", gt_d)):
        if array is not None and array.shape != shape:
            raise ValueError(f"depth_comparison_png: {name} has shape {array.shape}, pred {shape}")
    reference = next((d for d in (gt_d, sparse_d, pred_d) if d is not None and (d > 0).any()), pred_d)
    if max_depth is not None:
        reference = np.where(reference <= max_depth, reference, 0.0)
    vmin, vmax = depth_range(reference)
    if max_depth is not None:
        vmax = min(vmax, float(max_depth))
    note = f"colour: {vmin:.1f} m (red) to {vmax:.1f} m (blue)" if cmap == "turbo" else \
        f"colour: {vmin:.1f} m to {vmax:.1f} m ({cmap}, near = high end)"
    panels = []
    if image is not None:
        panels.append(("input RGB", _rgb_array(image, shape)))
    panels.append((_depth_title("sparse input", sparse_d, True), colorize_depth(dilate_for_display(sparse_d),
                                                                               vmin, vmax, cmap)))
    panels.append((_depth_title("completed", pred_d, False, note), colorize_depth(pred_d, vmin, vmax, cmap)))
    if gt_d is not None:
        sparse_gt = (gt_d > 0).mean() < SPARSE_FRACTION
        shown = dilate_for_display(gt_d) if sparse_gt else gt_d
        panels.append((_depth_title("ground truth", gt_d, sparse_gt), colorize_depth(shown, vmin, vmax, cmap)))
        both = (gt_d > 0) & (pred_d > 0)
        if max_depth is not None:
            both &= gt_d <= max_depth
        error = np.where(both, np.abs(pred_d - gt_d), 0.0)
        if both.any():
            e = error[both]
            top = float(np.percentile(e, DEPTH_PERCENTILES[1]))
            title = (f"abs error |completed - gt| at {_count(int(both.sum()))} pixels: MAE {e.mean():.3f} m, "
                     f"RMSE {math.sqrt(float((e ** 2).mean())):.3f} m; colour 0 (blue) to {top:.2f} m (yellow)")
        else:
            top, title = 1.0, "abs error |completed - gt|: no pixel where both are valid"
        if sparse_gt:
            # dilate the error of valid pixels for display: shift by a tiny epsilon so errors of 0 survive the max
            grown = dilate_for_display(np.where(both, error + 1e-9, 0.0))
            error, both = np.maximum(grown - 1e-9, 0.0), grown > 0
        panels.append((title, colorize_scalar(error, both, 0.0, top, "plasma")))
    if uncertainty is not None:
        u = uncertainty.detach().cpu().numpy() if isinstance(uncertainty, torch.Tensor) else np.asarray(uncertainty)
        if u.shape != shape:
            raise ValueError(f"depth_comparison_png: uncertainty has shape {u.shape}, pred {shape}")
        u = u.astype(np.float64)
        ok = np.isfinite(u) & (pred_d > 0)
        lo, hi = (np.percentile(u[ok], DEPTH_PERCENTILES) if ok.any() else (0.0, 1.0))
        panels.append((f"uncertainty (colour: {lo:.3g} dark blue to {hi:.3g} yellow)",
                       colorize_scalar(u, ok, float(lo), float(hi), "viridis")))
    return depth_panel(panels, out)


# ------------------------------------------------------------------------------------------ files

def load_depth(path: PathLike, scale: float = 256.0) -> np.ndarray:
    """Read a depth file: a 16-bit PNG (metres = code / ``scale``) or a ``.npy`` (H, W) float array of metres.

    Returns:
        (H, W) float64 metres, 0 = missing (NaN, inf and negative values of a ``.npy`` are missing).

    Raises:
        InputError: naming the file: missing, another type, an 8-bit or colour PNG, a ``.npy`` that is
            not an (H, W) array of numbers, or no valid depth at all.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".npy"):
        raise InputError(path, f"unknown depth file type {suffix or '(no extension)'!r}; expected a 16-bit "
                               ".png or an (H, W) .npy of metres")
    if not path.is_file():
        raise InputError(path, "file not found")
    if suffix == ".png":
        if not scale > 0:
            raise InputError(None, f"depth scale must be positive, got {scale}")
        depth = read_depth_png(path, scale).depth.numpy().astype(np.float64)
    else:
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InputError(path, f"not a readable .npy array ({e})") from None
        if array.ndim != 2 or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise InputError(path, f"expected an (H, W) float array of depths in metres, got {array.dtype} "
                                   f"of shape {array.shape}")
        depth = _depth_array(array)
    if not (depth > 0).any():
        raise InputError(path, f"no valid depth: every pixel is 0 or invalid ({depth.shape[1]}x{depth.shape[0]})")
    return depth


def load_rgb(path: PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read an RGB image as (H, W, 3) uint8; with ``shape`` (H, W), it must have that size."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"not a readable image ({e})") from None
    if shape is not None and rgb.shape[:2] != tuple(shape):
        raise InputError(path, f"the image is {rgb.shape[1]}x{rgb.shape[0]} but the depth map is "
                               f"{shape[1]}x{shape[0]} (they must be registered pixel to pixel)")
    return rgb


def parse_intrinsics(value: str | PathLike | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Intrinsics from ``"fx,fy,cx,cy"``, a 3x3 text file (3 lines of 3 numbers, or 9 numbers), or a matrix.

    Returns:
        (3, 3) float64 pixels.

    Raises:
        InputError: naming the file (or the text): malformed, not 3x3, non-finite or non-positive focal lengths.
    """
    if isinstance(value, (np.ndarray, torch.Tensor)):
        K = torch.as_tensor(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value),
                            dtype=torch.float64)
        return _check_K(K, None)
    text = os.fspath(value)
    parts = text.split(",")
    if len(parts) > 1 and not Path(text).is_file():
        try:
            fx, fy, cx, cy = (float(p) for p in parts)
        except ValueError:
            raise InputError(None, f"K {text!r}: expected 'fx,fy,cx,cy' (4 numbers, pixels) or a 3x3 intrinsics "
                                   "text file") from None
        return _check_K(torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64), None)
    path = Path(text)
    if not path.is_file():
        raise InputError(path, "file not found (K takes 'fx,fy,cx,cy' or a 3x3 intrinsics text file)")
    try:
        numbers = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise InputError(path, f"malformed intrinsics: expected a 3x3 matrix of numbers ({e})") from None
    if numbers.size != 9:
        raise InputError(path, f"malformed intrinsics: expected a 3x3 matrix (9 numbers), got {numbers.size} "
                               f"numbers in shape {numbers.shape}")
    return _check_K(torch.from_numpy(numbers.reshape(3, 3)), path)


def _check_K(K: torch.Tensor, path: Path | None) -> torch.Tensor:
    where = "K" if path is None else "intrinsics"
    if K.shape != (3, 3) or not torch.isfinite(K).all():
        raise InputError(path, f"{where}: expected a finite 3x3 matrix, got shape {tuple(K.shape)}")
    if not (K[0, 0] > 0 and K[1, 1] > 0) or not torch.allclose(K[2], torch.tensor([0.0, 0.0, 1.0], dtype=K.dtype)):
        raise InputError(path, f"{where}: expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, got "
                               f"{K.tolist()}")
    return K


def _render_camera(depths: list[np.ndarray], K: torch.Tensor, depth_height: int):
    """The depth camera in the viewer frame, pulled back by :data:`PULL_BACK` of the median depth.

    Its vertical field of view is the depth camera's, ``2 atan(H / (2 fy))`` of the depth map's height H.
    """
    valid = np.concatenate([d[d > 0] for d in depths])
    back = PULL_BACK * float(np.median(valid))
    fov = math.degrees(2 * math.atan(depth_height / (2 * float(K[1, 1]))))
    pose = np.eye(4)
    pose[:3, :3] = CAM_TO_VIEW
    far = float(valid.max()) * 1.05 + back + 1.0
    return camera_from_pose(pose, fov, near=max(0.01, 0.002 * far), far=far, back=back), back


def _render_size(width: int | None, height: int | None, w: int, h: int) -> tuple[int, int]:
    """The point-cloud render size: the depth map's aspect, at least 640 pixels wide, unless given."""
    if width is None and height is None:
        width = max(w, 640)
    if width is None:
        width = max(16, round(height * w / h))
    if height is None:
        height = max(16, round(width * h / w))
    return int(width), int(height)


def view_depth(
    paths: Sequence[PathLike] | PathLike,
    image: PathLike | None = None,
    K: str | PathLike | np.ndarray | torch.Tensor | None = None,
    depth_scale: float = 256.0,
    out: PathLike | None = None,
    width: int | None = None,
    height: int | None = None,
    view: str = "auto",
    max_depth: float | None = None,
) -> list[Path]:
    """Show depth maps as coloured 3D point clouds (window) or write a colour-mapped panel and a point-cloud render.

    The depth maps must share one size and camera. Points are coloured from ``image`` when given, else by
    depth (near warm, far cold), with one colour range for all maps.

    Args:
        paths: depth files: 16-bit PNGs (metres = code / ``depth_scale``) or ``.npy`` (H, W) float metres.
        image: an RGB image registered with the depth maps: point colours, and the first panel.
        K: intrinsics: ``"fx,fy,cx,cy"``, a 3x3 text file or a matrix. None assumes KITTI-like ones
            (:func:`default_K`: ``fx = fy = 721.5 * W / 1242``, ``cx = W / 2``, ``cy = H / 2``) and prints a note.
        depth_scale: PNG codes per metre (256: KITTI depth completion; 1000: millimetres).
        out: ``X.png``: write the panel PNG (the image above each depth map, colour-mapped) to ``X.png`` and the
            point-cloud render to ``X_points.png``. None: open a window when there is a display, else write
            ``<first file's stem>_view.png`` and ``..._view_points.png`` in the current folder.
        width: render / window width in pixels; None: from the depth map's aspect and ``height``, at least 640.
        height: render / window height in pixels; None: from the depth map's aspect and ``width``.
        view: ``"auto"``: the PNG is rendered from the depth camera, pulled back along its axis by
            :data:`PULL_BACK` of the median depth, so the cloud is seen as the camera saw it (the window
            starts behind and above the camera); ``"bev"`` / ``"front"``: see :func:`viewers.render.frame_camera`.
        max_depth: drop depths beyond this from the cloud, metres.

    Returns:
        The written PNGs (panel, points), or ``[]`` when a window was shown.

    Raises:
        InputError: naming the file, for a missing or unreadable depth file, image or intrinsics file,
            mismatched sizes, or a depth map with no valid pixel.
    """
    paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not paths:
        raise InputError(None, "no depth files given")
    if out is not None and Path(out).suffix.lower() != ".png":
        raise InputError(out, f"expected a .png output file, got suffix {Path(out).suffix or '(none)'!r}")
    depths = [load_depth(p, depth_scale) for p in paths]
    h, w = depths[0].shape
    for p, d in zip(paths[1:], depths[1:]):
        if d.shape != (h, w):
            raise InputError(p, f"the depth map is {d.shape[1]}x{d.shape[0]} but {paths[0].name} is {w}x{h}")
    rgb = None if image is None else load_rgb(image, (h, w))
    if K is None:
        K = default_K(h, w)
        print(f"note: no K given: assuming KITTI-like intrinsics fx = fy = 721.5 * {w} / 1242 = {float(K[0, 0]):.1f}, "
              f"cx = {w / 2:g}, cy = {h / 2:g} (pass --K fx,fy,cx,cy or a 3x3 text file)")
    else:
        K = parse_intrinsics(K)
    kept = [np.where(d <= max_depth, d, 0.0) if max_depth is not None else d for d in depths]
    if not any((d > 0).any() for d in kept):
        raise InputError(paths[0], f"no depth within max_depth {max_depth} m")
    vmin, vmax = depth_range(np.concatenate([d[d > 0] for d in kept])[None])
    width, height = _render_size(width, height, w, h)

    scene = Scene()
    parts = []
    for p, d in zip(paths, kept):
        cloud = depth_to_points(d, K, rgb, vmin=vmin, vmax=vmax)
        points = cloud.points.double().numpy() @ CAM_TO_VIEW.T
        size = max(2.0, 1.2 * width / w)
        scene.add_points(PointCloud(points.astype(np.float32), colors=cloud.colors), color_by="rgb",
                         point_size=size, sensor=(0.0, 0.0, 0.0))
        parts.append(f"{p.name}: {len(cloud):,} points")
    title = ", ".join(parts)
    if out is None and has_display():
        show(scene, title, width, height, view)
        return []
    if out is None:
        out = Path.cwd() / f"{paths[0].stem}_view.png"
        print(f"no display found: rendering headless to {out} and {out.stem}_points.png "
              "(choose the file with out=... / --out)")
    out = Path(out)
    panels = [(f"input RGB: {Path(image).name}", rgb)] if rgb is not None else []
    for p, d in zip(paths, kept):
        sparse = (d > 0).mean() < SPARSE_FRACTION
        heading = _depth_title(p.name, d, sparse, f"colour {vmin:.1f} m (red) to {vmax:.1f} m (blue)")
        panels.append((heading, colorize_depth(dilate_for_display(d) if sparse else d, vmin, vmax)))
    panel_path = depth_panel(panels, out)
    points_path = out.with_name(f"{out.stem}_points.png")
    if view == "auto":
        camera, back = _render_camera(kept, K, h)
        points_path = render_png(scene, points_path, width, height, title=f"{title} (camera view, {back:.1f} m back)",
                                 camera=camera)
    else:
        points_path = render_png(scene, points_path, width, height, view, title)
    return [panel_path, points_path]
