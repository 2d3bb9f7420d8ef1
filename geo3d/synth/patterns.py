"""Sparse depth patterns for training and evaluating depth completion (in the spirit of Robust-DC's test set).

A pattern picks which ground-truth pixels the network sees as sparse input. :func:`sample_sparse` takes a
(H, W) ground-truth depth map (metres, 0 = missing) and returns a sparse map of the same shape holding the
ground truth at the picked pixels and 0 elsewhere; only pixels with valid ground truth are ever picked (the
``outliers`` pattern then corrupts some of the picked values). Pattern strings (:func:`parse_pattern`):

- ``random:F`` (0 < F < 1): round(F * H * W) valid pixels, uniformly without replacement (all valid pixels
  when there are fewer). ``random:N`` (an integer N >= 1): N valid pixels.
- ``lidar:B`` (B = 64, 32, 16, 8, 4, 2 or 1): the scan lines of a Velodyne HDL-64E seen by the camera. The 64
  beams' elevations are evenly spaced from ``LIDAR_TOP_DEG`` (+2.0) to ``LIDAR_BOTTOM_DEG`` (-24.8) degrees;
  B < 64 keeps every (64 / B)-th beam, starting with the top one. Each pixel's ray (through its centre,
  ``K^-1 (u + 0.5, v + 0.5, 1)``) has elevation atan2(-y, sqrt(x^2 + z^2)) and azimuth atan2(x, z) in the
  camera frame (the sensor is assumed level with the camera and at its centre: no parallax). A pixel belongs
  to the beam nearest its elevation if that is within half a beam spacing; per kept beam and azimuth bin
  (``LIDAR_AZIMUTH_BIN_DEG`` = 0.17 degrees wide, a random phase per call: a spinning sensor is not
  synchronised to the camera) the pixel closest to the beam's elevation is the return, kept where the ground
  truth is valid. Beams above or below the image give no points; lines curve like a real scan's projection.
  Without K a KITTI-like camera is assumed (:func:`kitti_like_K`). On a fully valid 352 x 1216 image with
  KITTI's K, ``lidar:64`` keeps about 4.4 % of the pixels (42 beams reach the image; KITTI's velodyne_raw
  density is about 4-5 %).
- ``lidar_offset:B``: the same scan lines from a sensor mounted where KITTI's velodyne is relative to its left
  colour camera (``LIDAR_OFFSET_M``: 0.059 m right, 0.075 m above, 0.269 m behind; axes parallel), so that, as in
  KITTI's ``velodyne_raw``, some returns see past the edges of near objects and land on their pixels with the
  depth of what lies behind. The sensor's view is made from the ground truth alone (:func:`lidar_view_depth`):
  every valid pixel is forward-projected into a camera at the sensor's centre (same K, nearest surface wins), and
  the gaps that open behind near objects (what the sensor sees and the camera does not) are filled with the
  farther neighbouring depth, as if the background continued behind the object. The beams are traced in that
  view (as ``lidar:B``, from the sensor's centre) and every return is projected back into the camera (nearest
  return per pixel), kept where the camera's ground truth is valid. The values are the returns' camera-frame
  depths, so near edges they differ from the ground truth: these are not errors of the pattern but what a
  real, offset sensor measures.
- ``keypoints:orb`` / ``keypoints:sift``: OpenCV ORB or SIFT keypoints (``KEYPOINTS`` = 500 features) on the
  greyscale image; the depth at each keypoint's rounded pixel (OpenCV puts pixel centres at integers) where
  valid. Needs the image. ORB's patch size and edge threshold (31 px) shrink on small images
  (:func:`orb_patch_size`), or keypoints could only come from a band in the middle of a 96-row image.
- ``outliers:P`` (0 <= P <= 1): ``random:0.007``, then round(P * n) of the n picked values are replaced by
  values drawn uniformly between the smallest and largest valid ground-truth depth.

Everything random comes from the ``numpy.random.Generator`` passed in, so the same generator state gives the
same pattern; ``keypoints`` patterns draw nothing.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np
import torch

PATTERNS_EVAL = ("random:0.007", "random:0.001", "random:0.0003", "lidar:64", "lidar:16", "lidar:8",
                 "lidar_offset:64", "keypoints:orb", "keypoints:sift", "outliers:0.05", "outliers:0.1")
LIDAR_BEAMS = 64
LIDAR_TOP_DEG = 2.0  # elevation of the HDL-64E's top beam, degrees
LIDAR_BOTTOM_DEG = -24.8  # elevation of its bottom beam, degrees
LIDAR_AZIMUTH_BIN_DEG = 0.17  # one return per beam per this many degrees of azimuth
LIDAR_OFFSET_M = (0.059, -0.075, -0.269)  # KITTI's velodyne centre in its left colour camera's frame, metres
LIDAR_GAP_FILL = 0.025  # lidar_view_depth fills gaps up to ceil(this * fx) pixels deep (9 at 608 px width)
KEYPOINTS = 500  # nfeatures of the ORB and SIFT detectors
OUTLIER_BASE = "random:0.007"  # the pattern that outliers:P corrupts
_KITTI_FOCAL, _KITTI_WIDTH, _KITTI_CY_SHARE = 721.5377, 1242.0, 172.854 / 375.0


def parse_pattern(pattern: str) -> tuple[str, float]:
    """Split and check a pattern string (see the module docstring).

    Args:
        pattern: e.g. ``"random:0.007"``, ``"random:500"``, ``"lidar:64"``, ``"keypoints:orb"``, ``"outliers:0.1"``.

    Returns:
        ``(kind, value)``: ``("random", F or N)``, ``("lidar", B)``, ``("lidar_offset", B)``, ``("orb", 500.0)`` /
        ``("sift", 500.0)`` (value: the number of features) or ``("outliers", P)``.

    Raises:
        ValueError: naming the pattern, for an unknown kind or a value out of range.
    """
    if not isinstance(pattern, str) or pattern.count(":") != 1:
        raise ValueError(f"sparse pattern {pattern!r}: expected KIND:VALUE, one of random:F (0 < F < 1), "
                         "random:N (integer N >= 1), lidar:B or lidar_offset:B (B divides 64), keypoints:orb, "
                         "keypoints:sift, outliers:P (0 <= P <= 1)")
    kind, text = pattern.split(":")
    if kind == "keypoints":
        if text not in ("orb", "sift"):
            raise ValueError(f"sparse pattern {pattern!r}: expected keypoints:orb or keypoints:sift")
        return text, float(KEYPOINTS)
    if kind not in ("random", "lidar", "lidar_offset", "outliers"):
        raise ValueError(f"sparse pattern {pattern!r}: unknown kind {kind!r}; expected random, lidar, "
                         "lidar_offset, keypoints or outliers")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"sparse pattern {pattern!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"sparse pattern {pattern!r}: {text!r} is not a finite number")
    if kind == "random" and not (0 < value < 1 or (value >= 1 and value == int(value))):
        raise ValueError(f"sparse pattern {pattern!r}: expected a share 0 < F < 1 or a whole count N >= 1")
    beams_ok = value == int(value) and 1 <= value <= LIDAR_BEAMS and LIDAR_BEAMS % value == 0
    if kind in ("lidar", "lidar_offset") and not beams_ok:
        raise ValueError(f"sparse pattern {pattern!r}: expected a beam count dividing {LIDAR_BEAMS} "
                         "(64, 32, 16, 8, 4, 2, 1)")
    if kind == "outliers" and not 0 <= value <= 1:
        raise ValueError(f"sparse pattern {pattern!r}: expected an outlier share 0 <= P <= 1")
    return kind, value


def kitti_like_K(width: int, height: int) -> np.ndarray:
    """The camera assumed by ``lidar`` patterns without K: KITTI's left colour camera scaled to the width.

    fx = fy = 721.5377 * width / 1242 (KITTI's focal length at its 1242-pixel width, so the horizontal field of
    view is KITTI's 81 degrees at any width), cx = width / 2, cy = 0.461 * height (KITTI's 172.854 / 375: the
    horizon slightly above the middle).

    Returns:
        (3, 3) float64 K, pixels.
    """
    f = _KITTI_FOCAL * width / _KITTI_WIDTH
    return np.array([[f, 0.0, width / 2], [0.0, f, _KITTI_CY_SHARE * height], [0.0, 0.0, 1.0]])


def lidar_beam_elevations(beams: int = LIDAR_BEAMS) -> np.ndarray:
    """Elevations (radians, top first) of the beams kept by ``lidar:beams``: every (64 / beams)-th beam of the
    HDL-64E model, starting with the top one. (beams,) float64."""
    all_beams = np.linspace(math.radians(LIDAR_TOP_DEG), math.radians(LIDAR_BOTTOM_DEG), LIDAR_BEAMS)
    return all_beams[:: LIDAR_BEAMS // beams]


def pixel_angles(K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Elevation and azimuth of each pixel centre's ray.

    Args:
        K: (3, 3) float intrinsics, pixels (pixel column i, row j centred at (i + 0.5, j + 0.5)).
        width, height: image size, pixels.

    Returns:
        ``elevation`` and ``azimuth``, each (H, W) float64 radians: atan2(-y, sqrt(x^2 + z^2)) (up positive) and
        atan2(x, z) (right positive) of the camera-frame ray K^-1 (u + 0.5, v + 0.5, 1).
    """
    rows, cols = np.mgrid[0:height, 0:width]
    rays = _pixel_rays(np.asarray(K, np.float64), rows.ravel(), cols.ravel()).reshape(height, width, 3)
    x, y, z = rays[..., 0], rays[..., 1], rays[..., 2]
    return np.arctan2(-y, np.hypot(x, z)), np.arctan2(x, z)


@lru_cache(maxsize=8)
def _beam_geometry(K: tuple[float, ...], width: int, height: int) -> tuple[np.ndarray, ...]:
    """Per pixel on some beam of the 64 (within half a spacing of the nearest): flat pixel index, beam number
    (0 = top), distance to the beam's elevation (radians) and azimuth (radians), each (M,). Cached per camera."""
    elevation, azimuth = pixel_angles(np.array(K).reshape(3, 3), width, height)
    spacing = math.radians(LIDAR_TOP_DEG - LIDAR_BOTTOM_DEG) / (LIDAR_BEAMS - 1)
    beam = np.rint((math.radians(LIDAR_TOP_DEG) - elevation.ravel()) / spacing).astype(np.int64)  # nearest beam
    residual = np.abs(elevation.ravel() - (math.radians(LIDAR_TOP_DEG) - beam * spacing))
    index = np.flatnonzero((beam >= 0) & (beam < LIDAR_BEAMS) & (residual < spacing / 2))
    arrays = (index, beam[index], residual[index], azimuth.ravel()[index])
    for array in arrays:
        array.flags.writeable = False
    return arrays


def _lidar_mask(K: np.ndarray, width: int, height: int, beams: int, phase: float) -> np.ndarray:
    """(H, W) bool: the pixels hit by the kept beams (one per beam and azimuth bin), before the validity test."""
    index, beam, residual, azimuth = _beam_geometry(tuple(np.asarray(K, np.float64).ravel()), width, height)
    kept = beam % (LIDAR_BEAMS // beams) == 0
    index, beam, residual, azimuth = index[kept], beam[kept], residual[kept], azimuth[kept]
    bins = np.floor(azimuth / math.radians(LIDAR_AZIMUTH_BIN_DEG) + phase).astype(np.int64)
    key = beam * (2 * 10**6) + bins  # |bins| < 10**6 for any azimuth in (-pi, pi]
    order = np.lexsort((residual, key))  # by key, then by distance to the beam
    first = np.ones(len(order), bool)
    first[1:] = key[order][1:] != key[order][:-1]
    mask = np.zeros(height * width, bool)
    mask[index[order[first]]] = True
    return mask.reshape(height, width)


def _project_nearest(points: np.ndarray, K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Project camera-frame points into pixels, nearest point per pixel.

    Args:
        points: (N, 3) float64, camera frame (x right, y down, z forward), metres.
        K: (3, 3) float64 intrinsics (pixel column i covers [i, i + 1)).

    Returns:
        ``flat`` (M,) int64 pixel indices (row * width + column), each once, and ``z`` (M,) float64 their nearest
        point's depth, metres; points behind the camera or outside the image are dropped.
    """
    front = points[:, 2] > 1e-6
    points = points[front]
    uvw = points @ K.T
    u = np.floor(uvw[:, 0] / uvw[:, 2])
    v = np.floor(uvw[:, 1] / uvw[:, 2])
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    flat = (v[inside] * width + u[inside]).astype(np.int64)
    z = points[inside, 2]
    order = np.lexsort((z, flat))  # by pixel, nearest first
    first = np.ones(len(order), bool)
    first[1:] = flat[order][1:] != flat[order][:-1]
    return flat[order[first]], z[order[first]]


def _pixel_rays(K: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(N, 3) float64 rays K^-1 (col + 0.5, row + 0.5, 1) (z = 1) of the given pixels' centres."""
    uv1 = np.stack([cols + 0.5, rows + 0.5, np.ones(len(rows))], 1)
    return uv1 @ np.linalg.inv(K).T


def lidar_view_depth(depth: np.ndarray, K: np.ndarray, offset: tuple[float, float, float] = LIDAR_OFFSET_M,
                     ) -> np.ndarray:
    """The depth a camera at ``offset`` would see, made from this camera's depth map alone (``lidar_offset``).

    Every valid pixel is back-projected through its centre and projected into a camera with the same K and
    axes, centred at ``offset``; per pixel the nearest point wins. Pixels left empty (gaps that open behind near
    objects: surfaces the offset camera sees and this one does not; and cracks) are filled, up to
    ``ceil(LIDAR_GAP_FILL * fx)`` pixels deep, with the farthest depth among their 3 x 3 neighbours, one ring
    per step, as if the background continued behind the near object; wider gaps stay empty.

    Args:
        depth: (H, W) float metres (z), 0 or non-finite = missing.
        K: (3, 3) float intrinsics, pixels.
        offset: the other camera's centre in this camera's frame (x right, y down, z forward), metres.

    Returns:
        (H, W) float64 depth (z of the other camera), metres; 0 = nothing seen.
    """
    from scipy.ndimage import grey_dilation

    height, width = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    rows, cols = np.nonzero(valid)
    points = _pixel_rays(K, rows, cols) * depth[rows, cols, None].astype(np.float64) - np.asarray(offset)
    flat, z = _project_nearest(points, K, width, height)
    view = np.zeros(height * width)
    view[flat] = z
    view = view.reshape(height, width)
    for _ in range(math.ceil(LIDAR_GAP_FILL * K[0, 0])):
        empty = view == 0
        if not empty.any():
            break
        view = np.where(empty, grey_dilation(view, size=(3, 3)), view)
    return view


def _lidar_offset_returns(depth: np.ndarray, K: np.ndarray, beams: int, phase: float) -> tuple[np.ndarray, ...]:
    """The ``lidar_offset`` pattern's returns in the camera: flat pixel indices (M,) int64 and camera-frame
    depths (M,) float64, metres (nearest return per pixel; before the camera's validity test)."""
    height, width = depth.shape
    view = lidar_view_depth(depth, K)
    rows, cols = np.nonzero(_lidar_mask(K, width, height, beams, phase) & (view > 0))
    points = _pixel_rays(K, rows, cols) * view[rows, cols, None] + np.asarray(LIDAR_OFFSET_M)
    return _project_nearest(points, K, width, height)


def _grey(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An (H, W, 3) RGB or (H, W) grey image (uint8, or float in [0, 1]) as (H, W) uint8 grey."""
    image = np.asarray(image)
    if image.shape[:2] != shape or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"sample_sparse: image must be (H, W, 3) or (H, W) with (H, W) = {shape}, "
                         f"got {image.shape}")
    if image.dtype != np.uint8:
        image = np.round(np.clip(image.astype(np.float64), 0.0, 1.0) * 255).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else np.ascontiguousarray(image)


def orb_patch_size(height: int, width: int) -> int:
    """ORB's patch size and edge threshold for an image: OpenCV's 31 pixels, shrunk to min(H, W) // 6 (at least
    7) on small images, where a 31-pixel border would confine the keypoints to a band (rows 31-64 of 96)."""
    return int(np.clip(min(height, width) // 6, 7, 31))


def keypoint_pixels(image: np.ndarray, detector: str, shape: tuple[int, int]) -> np.ndarray:
    """(N, 2) int64 (row, column) pixels of the ORB or SIFT keypoints of ``image`` (rounded, in the image,
    duplicates merged), detector ``"orb"`` or ``"sift"`` with ``KEYPOINTS`` features (ORB's patch size and
    edge threshold from :func:`orb_patch_size`, other settings OpenCV's defaults)."""
    grey = _grey(image, shape)
    if detector == "orb":
        patch = orb_patch_size(*shape)
        found = cv2.ORB_create(nfeatures=KEYPOINTS, edgeThreshold=patch, patchSize=patch).detect(grey, None)
    else:
        found = cv2.SIFT_create(nfeatures=KEYPOINTS).detect(grey, None)
    if not found:
        return np.zeros((0, 2), np.int64)
    xy = np.rint(np.array([k.pt for k in found], np.float64)).astype(np.int64)
    rows = np.clip(xy[:, 1], 0, shape[0] - 1)
    cols = np.clip(xy[:, 0], 0, shape[1] - 1)
    return np.unique(np.stack([rows, cols], 1), axis=0)


def _random_pixels(valid: np.ndarray, count: int, generator: np.random.Generator) -> np.ndarray:
    """Flat indices of ``count`` valid pixels (all when fewer), uniformly without replacement, sorted."""
    candidates = np.flatnonzero(valid)
    if count >= len(candidates):
        return candidates
    return np.sort(candidates[generator.choice(len(candidates), count, replace=False)])


def sample_sparse(gt: torch.Tensor, pattern: str, generator: np.random.Generator, K: torch.Tensor | None = None,
                  image: np.ndarray | None = None) -> torch.Tensor:
    """Sample a sparse depth map from ground truth with ``pattern`` (see the module docstring).

    Args:
        gt: (H, W) float32 metres, 0 (or non-finite) = missing.
        pattern: a pattern string, e.g. one of :data:`PATTERNS_EVAL`.
        generator: draws the random choices.
        K: (3, 3) float intrinsics in pixels, used by ``lidar`` patterns (None: :func:`kitti_like_K`).
        image: (H, W, 3) RGB or (H, W) grey, uint8 (or float in [0, 1]); needed by ``keypoints`` patterns.

    Returns:
        (H, W) float32 metres on ``gt``'s device, 0 = missing; nonzero only at pixels with valid ``gt``, equal
        to ``gt`` there (``outliers``: except the corrupted values; ``lidar_offset``: the returns' own depths).

    Raises:
        ValueError: a bad pattern, ``gt`` not (H, W), a keypoints pattern without ``image``, or a bad K / image.
    """
    kind, value = parse_pattern(pattern)
    if not isinstance(gt, torch.Tensor) or gt.ndim != 2:
        raise ValueError(f"sample_sparse: gt must be an (H, W) tensor, got {getattr(gt, 'shape', type(gt))}")
    depth = gt.detach().cpu().numpy().astype(np.float32)
    height, width = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    picked = np.zeros(height * width, bool)
    sparse = np.zeros(height * width, np.float32)

    if kind in ("random", "outliers"):
        share = value if kind == "random" else parse_pattern(OUTLIER_BASE)[1]
        count = int(round(share * height * width)) if share < 1 else int(share)
        picked[_random_pixels(valid, count, generator)] = True
    elif kind in ("lidar", "lidar_offset"):
        if K is None:
            K_np = kitti_like_K(width, height)
        else:
            K_np = K.detach().cpu().double().numpy() if isinstance(K, torch.Tensor) else np.asarray(K, np.float64)
            if K_np.shape != (3, 3):
                raise ValueError(f"sample_sparse: K must be (3, 3), got {K_np.shape}")
        phase = float(generator.uniform())
        if kind == "lidar":
            picked = (_lidar_mask(K_np, width, height, int(value), phase) & valid).ravel()
        else:
            flat, z = _lidar_offset_returns(np.where(valid, depth, 0.0), K_np, int(value), phase)
            keep = valid.ravel()[flat]
            picked[flat[keep]] = True
            sparse[flat[keep]] = z[keep]
    else:  # orb, sift
        if image is None:
            raise ValueError(f"sample_sparse: pattern {pattern!r} needs the image (got image=None)")
        rows, cols = keypoint_pixels(image, kind, (height, width)).T
        picked[(rows * width + cols)[valid[rows, cols]]] = True

    if kind != "lidar_offset":
        sparse[picked] = depth.ravel()[picked]
    if kind == "outliers" and picked.any():
        index = np.flatnonzero(picked)
        corrupt = generator.choice(len(index), int(round(value * len(index))), replace=False)
        low, high = float(depth[valid].min()), float(depth[valid].max())
        sparse[index[corrupt]] = generator.uniform(low, high, len(corrupt)).astype(np.float32)
    return torch.from_numpy(sparse.reshape(height, width)).to(gt.device)
