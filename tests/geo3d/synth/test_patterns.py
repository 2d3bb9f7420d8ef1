"""Sparse depth patterns: counts and values of random samples, LiDAR scan lines on the HDL-64E beam angles and
KITTI-like density, keypoints where OpenCV finds them, outlier shares, parsing, determinism."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from geo3d.synth import patterns
from geo3d.synth.patterns import PATTERNS_EVAL, parse_pattern, sample_sparse

H, W = 64, 192
# KITTI's left colour camera, for the 352 x 1216 depth-completion crop (13 columns off each side, 23 rows off the top)
KITTI_K = torch.tensor([[721.5377, 0.0, 609.5593 - 13.0], [0.0, 721.5377, 172.854 - 23.0], [0.0, 0.0, 1.0]])
HDL64_DEG = np.linspace(2.0, -24.8, 64)  # the beam elevations of the model, top first
SPACING_DEG = (2.0 + 24.8) / 63


def _gt(h: int = H, w: int = W, holes: bool = True, seed: int = 0) -> torch.Tensor:
    """(h, w) depth 2-60 m with a missing top band (sky) and scattered holes."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(2.0, 60.0, (h, w)).astype(np.float32)
    if holes:
        depth[: h // 5] = 0
        depth[rng.random((h, w)) < 0.2] = 0
    return torch.from_numpy(depth)


def _image(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 random coloured blocks (corners for the detectors)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(blocks, 8, 0), 8, 1)[:h, :w])


def _crossing_beams(K: np.ndarray, h: int, w: int, beam_deg: np.ndarray) -> np.ndarray:
    """The beams (degrees) whose scan line crosses the whole width: below the top row's lowest elevation and
    above the bottom row's highest, at every column (lines curve, so the extreme beams leave at the sides)."""
    cols = np.arange(w)
    top = _elevations_deg(K, np.zeros(w), cols).min()
    bottom = _elevations_deg(K, np.full(w, h - 1), cols).max()
    return beam_deg[(beam_deg < top - SPACING_DEG / 2) & (beam_deg > bottom + SPACING_DEG / 2)]


def _elevations_deg(K: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Elevation of the ray through pixel centres, from K^-1 (u + 0.5, v + 0.5, 1), in degrees."""
    rays = np.stack([cols + 0.5, rows + 0.5, np.ones(len(rows))], 1) @ np.linalg.inv(K).T
    return np.degrees(np.arctan2(-rays[:, 1], np.hypot(rays[:, 0], rays[:, 2])))


# ------------------------------------------------------------------------------------------------ parse

@pytest.mark.parametrize("pattern, expected", [
    ("random:0.007", ("random", 0.007)), ("random:500", ("random", 500.0)), ("random:1", ("random", 1.0)),
    ("lidar:64", ("lidar", 64.0)), ("lidar:8", ("lidar", 8.0)), ("keypoints:orb", ("orb", 500.0)),
    ("keypoints:sift", ("sift", 500.0)), ("outliers:0.05", ("outliers", 0.05)), ("outliers:0", ("outliers", 0.0)),
])
def test_parse_pattern(pattern, expected):
    assert parse_pattern(pattern) == expected


@pytest.mark.parametrize("pattern", ["foo", "random:-1", "random:0", "random:1.5", "random:nan", "random:", "random",
                                     "lidar:0", "lidar:3", "lidar:128", "lidar:8.5", "keypoints:surf",
                                     "outliers:1.5", "outliers:-0.1", "random:0.1:2", "orb:1"])
def test_parse_pattern_rejects(pattern):
    with pytest.raises(ValueError, match=f"sparse pattern '{pattern}'"):
        parse_pattern(pattern)


def test_eval_patterns_parse_and_sample():
    gt = _gt()
    for pattern in PATTERNS_EVAL:
        parse_pattern(pattern)
        sparse = sample_sparse(gt, pattern, np.random.default_rng(0), image=_image())
        assert sparse.shape == (H, W) and sparse.dtype == torch.float32 and (sparse > 0).any(), pattern


# ----------------------------------------------------------------------------------------------- random

@pytest.mark.parametrize("pattern, count", [("random:100", 100), ("random:0.007", round(0.007 * H * W)),
                                            ("random:0.001", round(0.001 * H * W)), ("random:1", 1)])
def test_random_counts_and_values(pattern, count):
    gt = _gt()
    sparse = sample_sparse(gt, pattern, np.random.default_rng(1))
    picked = sparse > 0
    assert int(picked.sum()) == count
    assert (gt[picked] > 0).all()
    assert torch.equal(sparse[picked], gt[picked])
    assert (sparse[~picked] == 0).all()


def test_random_takes_all_valid_pixels_when_fewer():
    gt = torch.zeros(H, W)
    gt[3, 4], gt[10, 100], gt[60, 7] = 1.0, 2.0, 3.0
    sparse = sample_sparse(gt, "random:50", np.random.default_rng(0))
    assert torch.equal(sparse, gt)


def test_random_is_uniform_over_valid_pixels():
    """Over many draws every valid pixel is picked about equally often (chi-square-like bound)."""
    gt = _gt(16, 24)
    hits = torch.zeros(16, 24)
    rng = np.random.default_rng(3)
    for _ in range(400):
        hits += (sample_sparse(gt, "random:20", rng) > 0).float()
    valid = gt > 0
    mean = 400 * 20 / int(valid.sum())
    assert (hits[~valid] == 0).all()
    assert abs(float(hits[valid].mean()) - mean) < 1e-3 and float(hits[valid].std()) < 0.5 * mean


def test_deterministic_given_the_generator():
    gt, image = _gt(), _image()
    for pattern in PATTERNS_EVAL:
        a = sample_sparse(gt, pattern, np.random.default_rng(7), image=image)
        b = sample_sparse(gt, pattern, np.random.default_rng(7), image=image)
        assert torch.equal(a, b), pattern
    a = sample_sparse(gt, "random:0.007", np.random.default_rng(7))
    assert not torch.equal(a, sample_sparse(gt, "random:0.007", np.random.default_rng(8)))


# ------------------------------------------------------------------------------------------------ lidar

@pytest.mark.parametrize("beams", [64, 16, 8])
def test_lidar_points_lie_on_the_beams(beams):
    K = np.array([[180.0, 0.0, 96.0], [0.0, 180.0, 22.0], [0.0, 0.0, 1.0]])
    gt = _gt(holes=False)
    sparse = sample_sparse(gt, f"lidar:{beams}", np.random.default_rng(0), K=torch.from_numpy(K))
    rows, cols = np.nonzero(sparse.numpy())
    assert len(rows) > 0 and torch.equal(sparse[rows, cols], gt[rows, cols])
    # where the ground truth has holes, the same returns are kept where it is valid (a beam's pixel is chosen
    # by its direction alone)
    holey = _gt(holes=True)
    sparse_holey = sample_sparse(holey, f"lidar:{beams}", np.random.default_rng(0), K=torch.from_numpy(K))
    assert torch.equal(sparse_holey > 0, (sparse > 0) & (holey > 0))
    assert torch.equal(sparse_holey[sparse_holey > 0], holey[sparse_holey > 0])
    beam_deg = HDL64_DEG[:: 64 // beams]
    elevation = _elevations_deg(K, rows, cols)
    nearest = np.abs(elevation[:, None] - beam_deg[None]).argmin(1)
    assert np.all(np.abs(elevation - beam_deg[nearest]) < SPACING_DEG / 2)
    assert len(np.unique(nearest)) <= beams
    # scan lines: each beam that crosses the image has points from edge to edge
    crossing = _crossing_beams(K, H, W, beam_deg)
    assert len(crossing) >= min(beams, 3)
    for b in np.flatnonzero(np.isin(beam_deg, crossing)):
        assert cols[nearest == b].min() <= 2 and cols[nearest == b].max() >= W - 3


def test_lidar_without_K_uses_a_kitti_like_camera():
    """Default camera: fx = fy = 721.5377 W / 1242, cx = W / 2, cy = 172.854 / 375 H."""
    sparse = sample_sparse(_gt(holes=False), "lidar:16", np.random.default_rng(0))
    f = 721.5377 * W / 1242
    K = np.array([[f, 0.0, W / 2], [0.0, f, 172.854 / 375 * H], [0.0, 0.0, 1.0]])
    rows, cols = np.nonzero(sparse.numpy())
    elevation = _elevations_deg(K, rows, cols)
    beam_deg = HDL64_DEG[::4]
    assert np.all(np.abs(elevation[:, None] - beam_deg[None]).min(1) < SPACING_DEG / 2)
    # the beams inside the vertical field of view all appear; those above or below it give nothing
    top, bottom = _elevations_deg(K, np.array([0, H - 1]), np.array([W // 2, W // 2]))
    inside = beam_deg[(beam_deg < top - SPACING_DEG) & (beam_deg > bottom + SPACING_DEG)]
    nearest = np.abs(elevation[:, None] - beam_deg[None]).argmin(1)
    assert set(beam_deg[np.unique(nearest)]) >= set(inside) and len(inside) >= 3


def test_lidar_density_on_a_kitti_crop():
    """A fully valid 352 x 1216 map with KITTI's K: 64 beams give 3-8 % of the pixels (KITTI: about 5 %), one
    return per beam per 0.17 degrees of azimuth; fewer beams, proportionally fewer points."""
    gt = torch.full((352, 1216), 20.0)
    K = KITTI_K.numpy().astype(np.float64)
    density = {}
    for beams in (64, 16):
        sparse = sample_sparse(gt, f"lidar:{beams}", np.random.default_rng(0), K=KITTI_K)
        density[beams] = float((sparse > 0).float().mean())
    assert 0.03 < density[64] < 0.08
    assert density[16] == pytest.approx(density[64] / 4, rel=0.1)
    rows, cols = np.nonzero(sample_sparse(gt, "lidar:64", np.random.default_rng(1), K=KITTI_K).numpy())
    elevation = _elevations_deg(K, rows, cols)
    nearest = np.abs(elevation[:, None] - HDL64_DEG[None]).argmin(1)
    fov_deg = 2 * math.degrees(math.atan(1216 / 2 / 721.5377))
    counts = np.bincount(nearest, minlength=64)
    crossing = np.isin(HDL64_DEG, _crossing_beams(K, 352, 1216, HDL64_DEG))
    assert crossing.sum() > 30
    assert np.all(np.abs(counts[crossing] / (fov_deg / 0.17) - 1) < 0.02)  # one return per 0.17 degrees


# ----------------------------------------------------------------------------------------- lidar_offset

def _box_on_wall(h: int, w: int, K: np.ndarray, near: float, far: float, box_xy: tuple[float, ...]):
    """Ground truth of a fronto-parallel rectangle at depth ``near`` (x0, x1, y0, y1 in metres, camera frame) in
    front of a wall at ``far``, ray-cast through the pixel centres. Returns (H, W) float64 depth."""
    rows, cols = np.mgrid[0:h, 0:w]
    return _cast_box_on_wall(K, rows.ravel(), cols.ravel(), np.zeros(3), near, far, box_xy).reshape(h, w)


def _cast_box_on_wall(K, rows, cols, centre, near, far, box_xy) -> np.ndarray:
    """z (in the frame of a camera at ``centre``, axes parallel) of the first surface hit through pixel centres."""
    rays = np.stack([cols + 0.5, rows + 0.5, np.ones(len(rows))], 1) @ np.linalg.inv(K).T
    hit = centre + rays * (near - centre[2])  # where each ray meets the plane z = near (camera frame)
    x0, x1, y0, y1 = box_xy
    on_box = (hit[:, 0] >= x0) & (hit[:, 0] <= x1) & (hit[:, 1] >= y0) & (hit[:, 1] <= y1)
    return np.where(on_box, near, far) - centre[2]


def test_lidar_view_depth_matches_a_ray_cast_from_the_sensor():
    """The offset view made from the camera's depth equals an independent ray cast of the same two-plane scene
    from the sensor's centre (including the strips behind the box that the camera never saw), except on the
    box's silhouette edge (1 pixel) and where the camera's view ends."""
    h, w = 96, 256
    K = np.array([[200.0, 0.0, 128.0], [0.0, 200.0, 40.0], [0.0, 0.0, 1.0]])
    box = (-0.8, 0.6, -0.5, 0.4)
    gt = _box_on_wall(h, w, K, 4.0, 12.0, box)
    view = patterns.lidar_view_depth(gt, K)
    rows, cols = np.mgrid[0:h, 0:w]
    offset = np.array(patterns.LIDAR_OFFSET_M)
    reference = _cast_box_on_wall(K, rows.ravel(), cols.ravel(), offset, 4.0, 12.0, box).reshape(h, w)
    on_box = np.isclose(reference, 4.0 - offset[2])
    edge = on_box ^ _erode(on_box) | on_box ^ _dilate(on_box)
    border = np.zeros((h, w), bool)
    border[:4], border[-4:], border[:, :4], border[:, -4:] = True, True, True, True  # the camera's view ends there
    inside = ~edge & ~border
    assert np.allclose(view[inside], reference[inside], rtol=0, atol=1e-9)
    # the strips the sensor sees behind the box's right and top edges were not in the camera's depth
    seen_behind = inside & ~on_box & (gt == 4.0)
    assert seen_behind.sum() > 50


def _erode(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion
    return binary_erosion(mask, np.ones((3, 3), bool))


def _dilate(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_dilation
    return binary_dilation(mask, np.ones((3, 3), bool))


def test_lidar_offset_returns_see_past_the_near_edges():
    """On a box in front of a wall, most returns carry the ground truth; those that do not carry the wall's
    depth, lie on the box's pixels within the parallax band of its right and top edges (the sensor sits right
    of and above the camera) and never near its left or bottom edges."""
    h, w = 96, 256
    K = np.array([[200.0, 0.0, 128.0], [0.0, 200.0, 40.0], [0.0, 0.0, 1.0]])
    box = (-0.8, 0.6, -0.5, 0.4)
    gt = torch.from_numpy(_box_on_wall(h, w, K, 4.0, 12.0, box).astype(np.float32))
    sparse = sample_sparse(gt, "lidar_offset:64", np.random.default_rng(0), K=torch.from_numpy(K)).numpy()
    plain = sample_sparse(gt, "lidar:64", np.random.default_rng(0), K=torch.from_numpy(K)).numpy()
    picked = sparse > 0
    assert abs(picked.sum() / (plain > 0).sum() - 1) < 0.1  # about as dense as the plain pattern
    wrong = picked & ~np.isclose(sparse, gt.numpy(), rtol=0, atol=1e-3)
    assert 0 < wrong.sum() < 0.05 * picked.sum()
    # a return on the box's edge may land one pixel off it (its ray from the sensor's pixel centre is not the
    # camera's); every other wrong return is the wall behind, seen past the box
    box_pixels = gt.numpy() == 4.0
    off_edge = wrong & ~box_pixels
    assert np.allclose(sparse[off_edge], 4.0) and not np.any(off_edge & ~_dilate(box_pixels))
    wrong &= box_pixels
    assert wrong.sum() > 0 and np.allclose(sparse[wrong], 12.0, atol=1e-3)
    rows, cols = np.nonzero(wrong)
    u0, u1 = 200 * box[0] / 4 + 128, 200 * box[1] / 4 + 128  # the box's columns and rows in the camera
    v0, v1 = 200 * box[2] / 4 + 40, 200 * box[3] / 4 + 40
    # the band's width: the parallax between the box (4 m) and the wall (12 m) from the sensor's offset
    offset = np.array(patterns.LIDAR_OFFSET_M)
    band_u = 200 * offset[0] * (1 / 4 - 1 / 12) + 200 * abs(offset[2]) * max(abs(box[0]), box[1]) / 4 / 4 + 2
    band_v = 200 * abs(offset[1]) * (1 / 4 - 1 / 12) + 200 * abs(offset[2]) * max(abs(box[2]), box[3]) / 4 / 4 + 2
    near_right = cols + 0.5 > u1 - band_u
    near_top = rows + 0.5 < v0 + band_v
    assert np.all(near_right | near_top)
    assert not np.any((cols + 0.5 < u0 + 2) & ~near_top) and not np.any((rows + 0.5 > v1 - 2) & ~near_right)


# -------------------------------------------------------------------------------------------- keypoints

@pytest.mark.parametrize("detector", ["orb", "sift"])
def test_keypoints_at_detector_locations(detector):
    h, w = 120, 200
    image, gt = _image(h, w, seed=2), _gt(h, w, seed=2)
    sparse = sample_sparse(gt, f"keypoints:{detector}", np.random.default_rng(0), image=image)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if detector == "orb":  # patch size and edge threshold min(H, W) // 6 on small images (OpenCV: 31)
        found = cv2.ORB_create(nfeatures=500, edgeThreshold=20, patchSize=20).detect(grey, None)
    else:
        found = cv2.SIFT_create(nfeatures=500).detect(grey, None)
    expected = {(min(max(round(k.pt[1]), 0), h - 1), min(max(round(k.pt[0]), 0), w - 1)) for k in found}
    expected = {(r, c) for r, c in expected if gt[r, c] > 0}
    rows, cols = np.nonzero(sparse.numpy())
    assert set(zip(rows.tolist(), cols.tolist())) == expected and len(expected) > 20
    assert rows.min() < h / 3 and rows.max() > 2 * h / 3  # spread over the image, not a band
    assert cols.min() < w / 3 and cols.max() > 2 * w / 3
    assert torch.equal(sparse[rows, cols], gt[rows, cols])


def test_keypoints_need_the_image():
    with pytest.raises(ValueError, match="keypoints:orb"):
        sample_sparse(_gt(), "keypoints:orb", np.random.default_rng(0))
    with pytest.raises(ValueError, match="image"):
        sample_sparse(_gt(), "keypoints:sift", np.random.default_rng(0), image=np.zeros((H, W + 1, 3), np.uint8))


# --------------------------------------------------------------------------------------------- outliers

@pytest.mark.parametrize("share", [0.05, 0.1, 0.0])
def test_outliers_corrupt_the_given_share(share):
    gt = _gt()
    sparse = sample_sparse(gt, f"outliers:{share}", np.random.default_rng(4))
    picked = sparse > 0
    n = round(0.007 * H * W)
    assert int(picked.sum()) == n and (gt[picked] > 0).all()
    changed = sparse[picked] != gt[picked]
    assert int(changed.sum()) == round(share * n)
    valid = gt[gt > 0]
    assert (sparse[picked] >= valid.min()).all() and (sparse[picked] <= valid.max()).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="gt"):
        sample_sparse(torch.zeros(2, H, W), "random:10", np.random.default_rng(0))
    with pytest.raises(ValueError, match="K"):
        sample_sparse(_gt(), "lidar:64", np.random.default_rng(0), K=torch.eye(4))
    with pytest.raises(ValueError, match="foo"):
        sample_sparse(_gt(), "foo", np.random.default_rng(0))
    empty = sample_sparse(torch.zeros(H, W), "outliers:0.1", np.random.default_rng(0))
    assert (empty == 0).all()
    assert patterns.kitti_like_K(1242, 375)[1, 2] == pytest.approx(172.854)
