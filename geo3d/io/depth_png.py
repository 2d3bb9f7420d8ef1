"""16-bit depth PNGs: KITTI depth completion (metres = value / 256, 0 = missing) and similar formats.

The same encoding with another scale is used by RGB-D datasets (7-Scenes, TUM: millimetres, scale 1000),
so ``scale`` and the invalid codes are parameters. Pillow reads and writes the PNGs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_path
from geo3d.types import DepthMap

_UINT16_MODES = ("I;16", "I;16L", "I;16B")


def read_uint16_png(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel 16-bit PNG.

    Args:
        path: PNG file.

    Returns:
        (H, W) uint16 array of raw codes.

    Raises:
        InputError: the file is missing, not a PNG, 8-bit, or has colour channels.
    """
    try:
        with Image.open(path) as im:
            im.load()
            fmt, mode = im.format, im.mode
            array = np.asarray(im)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"not a readable image ({e})") from None
    if fmt != "PNG":
        raise InputError(path, f"expected a 16-bit single-channel PNG, got a {fmt} image")
    # Pillow opens 16-bit greyscale PNGs as "I;16" (recent versions) or "I" (32-bit int, older versions).
    if mode in _UINT16_MODES or (mode == "I" and array.size and 0 <= array.min() and array.max() <= 65535):
        return array.astype(np.uint16)
    kind = {"L": "an 8-bit greyscale", "1": "a 1-bit", "P": "a palette", "LA": "an 8-bit greyscale+alpha",
            "RGB": "an RGB", "RGBA": "an RGBA"}.get(mode, "a")
    raise InputError(path, f"expected a 16-bit single-channel depth PNG, got {kind} PNG (mode {mode!r})")


def read_depth_png(
    path: str | os.PathLike,
    scale: float = 256.0,
    K: torch.Tensor | None = None,
    invalid_values: Sequence[int] = (0,),
) -> DepthMap:
    """Read a 16-bit depth PNG into metres.

    Args:
        path: PNG file, uint16 codes; depth in metres = code / ``scale``.
        scale: codes per metre (256 for KITTI depth completion, 1000 for millimetre RGB-D depth).
        K: (3, 3) float32 intrinsics in pixels to attach, or None (KITTI DC PNGs carry none).
        invalid_values: codes meaning "no measurement" (0 for KITTI; 0 and 65535 for 7-Scenes).

    Returns:
        DepthMap with depth (H, W) float32 metres (0 where invalid) and valid (H, W) bool.

    Raises:
        InputError: naming the file, if it is missing, not a PNG, 8-bit or RGB.
    """
    if not scale > 0:
        raise ValueError(f"read_depth_png: scale must be positive, got {scale}")
    codes = read_uint16_png(path)
    valid = ~np.isin(codes, np.asarray(invalid_values, dtype=np.int64))
    depth = np.where(valid, codes.astype(np.float32) / np.float32(scale), np.float32(0))
    return DepthMap(torch.from_numpy(depth), torch.from_numpy(valid), K)


def depth_to_codes(
    depth: DepthMap | torch.Tensor | np.ndarray, scale: float, max_code: int = 65535, name: str = "depth"
) -> np.ndarray:
    """Encode metric depth as uint16 codes: ``round(depth * scale)``, 0 where invalid.

    Args:
        depth: DepthMap, or (H, W) float metres where 0 / NaN / negative mean missing.
        scale: codes per metre.
        max_code: largest allowed code (65535; 65534 when 65535 itself means invalid).
        name: what to call the input in error messages (e.g. the output file).

    Returns:
        (H, W) uint16 codes. A valid depth below ``0.5 / scale`` rounds to 0 and so reads back as missing.

    Raises:
        ValueError: when a valid depth exceeds ``max_code / scale`` metres, or the input is not 2D.
    """
    if isinstance(depth, DepthMap):
        values, valid = depth.depth.detach().cpu().numpy(), depth.valid.cpu().numpy()
    else:
        values = depth.detach().cpu().numpy() if isinstance(depth, torch.Tensor) else np.asarray(depth)
        values = values.astype(np.float64)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(values) & (values > 0)
    if values.ndim != 2:
        raise ValueError(f"{name}: expected an (H, W) depth image, got shape {values.shape}")
    codes = np.zeros(values.shape, dtype=np.float64)
    codes[valid] = np.round(values[valid].astype(np.float64) * scale)
    if valid.any() and codes.max() > max_code:
        raise ValueError(
            f"{name}: depth {float(values[valid].max()):.3f} m exceeds the largest encodable depth "
            f"{max_code / scale:.3f} m (code {max_code} at scale {scale} per metre)"
        )
    return codes.astype(np.uint16)


def write_uint16_png(path: str | os.PathLike, codes: np.ndarray) -> None:
    """Write an (H, W) uint16 array as a 16-bit greyscale PNG, atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.ascontiguousarray(codes, dtype=np.uint16)).save(tmp, format="PNG")


def write_depth_png(
    path: str | os.PathLike, depth: DepthMap | torch.Tensor | np.ndarray, scale: float = 256.0,
    max_code: int = 65535,
) -> None:
    """Write metric depth as a 16-bit PNG (KITTI depth completion encoding by default).

    Args:
        path: output PNG file (written atomically).
        depth: DepthMap, or (H, W) float metres; invalid pixels (mask, 0, NaN, negative) are written as 0.
        scale: codes per metre; code = round(depth * scale).
        max_code: largest code allowed.

    Raises:
        ValueError: naming the file when a depth exceeds ``max_code / scale`` metres.
    """
    if not scale > 0:
        raise ValueError(f"write_depth_png: scale must be positive, got {scale}")
    write_uint16_png(path, depth_to_codes(depth, scale, max_code, name=str(path)))
