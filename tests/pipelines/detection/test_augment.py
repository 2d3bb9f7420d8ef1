"""Augmentations keep each point inside its box; ground-truth sampling pastes without overlaps; the sensor-noise
augmentations (dropout, position and intensity jitter) have the documented statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.types import points_in_boxes
from pipelines.detection.augment import (
    AugmentConfig,
    GTDatabase,
    augment_frame,
    drop_points,
    flip_x,
    jitter_intensity,
    jitter_points,
    local_ground_heights,
    rotate_z,
    sample_ground_truth,
    scale,
)


def _scene(seed=0):
    """Two boxes with points inside, plus background points."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.tensor([[10.0, 3.0, -0.9, 3.9, 1.6, 1.5, 0.4], [20.0, -5.0, -0.9, 4.2, 1.7, 1.6, -2.0]])
    local = (torch.rand(2, 100, 3, generator=g) - 0.5) * 0.98 * boxes[:, None, 3:6]
    c, s = torch.cos(boxes[:, 6])[:, None], torch.sin(boxes[:, 6])[:, None]
    inside = torch.stack([local[..., 0] * c - local[..., 1] * s, local[..., 0] * s + local[..., 1] * c,
                          local[..., 2]], -1) + boxes[:, None, :3]
    background = torch.rand(300, 3, generator=g) * torch.tensor([40.0, 40.0, 0.1]) + torch.tensor([0, -20, -1.7])
    points = torch.cat([inside.reshape(-1, 3), background])
    points = torch.cat([points, torch.rand(len(points), 1, generator=g)], 1)
    return points, boxes


def test_global_transforms_keep_points_in_boxes():
    points, boxes = _scene()
    before = points_in_boxes(points[:, :3], boxes)
    assert before[:100, 0].all() and before[100:200, 1].all()
    for transform in (flip_x, lambda p, b: rotate_z(p, b, 0.7), lambda p, b: scale(p, b, 1.07)):
        p2, b2 = transform(points, boxes)
        assert torch.equal(points_in_boxes(p2[:, :3], b2), before)
        torch.testing.assert_close(p2[:, 3], points[:, 3])  # reflectance untouched


def test_rotation_and_flip_values():
    points = torch.tensor([[1.0, 0.0, 0.5, 0.2]])
    boxes = torch.tensor([[1.0, 0.0, 0.5, 2.0, 1.0, 1.0, 3.0]])
    p, b = rotate_z(points, boxes, math.pi / 2)
    torch.testing.assert_close(p[0, :3], torch.tensor([0.0, 1.0, 0.5]), atol=1e-6, rtol=0)
    torch.testing.assert_close(b[0, 6], torch.tensor(3.0 + math.pi / 2 - 2 * math.pi))
    p, b = flip_x(torch.tensor([[1.0, 2.0, 0.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 1.0, 1.0, 1.0, 0.5]]))
    assert p[0, 1].item() == -2.0 and b[0, 1].item() == -2.0 and b[0, 6].item() == -0.5


def test_augment_frame_keeps_points_in_boxes():
    points, boxes = _scene(1)
    labels = torch.zeros(2, dtype=torch.int64)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        p, b, lab = augment_frame(points, boxes, labels, AugmentConfig(), rng)
        inside = points_in_boxes(p[:, :3], b)
        assert inside[:100, 0].all() and inside[100:200, 1].all()
        assert torch.equal(lab, labels)


def test_ground_truth_sampling_pastes_without_overlap():
    points, boxes = _scene(2)
    labels = torch.zeros(2, dtype=torch.int64)
    # Database: one object overlapping the scene's first box (must be rejected), two free ones.
    db_boxes = torch.tensor([[10.5, 3.0, -0.9, 3.9, 1.6, 1.5, 0.0], [30.0, 8.0, -0.9, 4.0, 1.7, 1.5, 1.0],
                             [5.0, -10.0, -0.9, 4.0, 1.7, 1.5, -0.5]])
    db_points = [torch.cat([b[:3] + torch.tensor([[0.1 * k, 0.0, 0.0] for k in range(-5, 6)]),
                            torch.full((11, 1), 0.5)], 1) for b in db_boxes]
    database = GTDatabase({0: db_boxes}, {0: db_points})
    for seed in range(3):
        p, b, lab = sample_ground_truth(points, boxes, labels, database, {0: 5}, np.random.default_rng(seed))
        assert len(b) == 4 and lab.tolist() == [0, 0, 0, 0]  # the overlapping object is never pasted
        assert torch.equal(b[:2], boxes)
        pasted = b[2:]
        assert not torch.isin(pasted[:, 0], torch.tensor([10.5])).any()
        inside = points_in_boxes(p[:, :3], pasted)
        assert (inside.sum(0) == 11).all()  # only the pasted points lie in the pasted boxes
        # scene points inside the pasted boxes were removed; the others are all kept
        scene_inside = points_in_boxes(points[:, :3], pasted).any(1)
        assert len(p) == len(points) - int(scene_inside.sum()) + 22
    # No sampling when the frame already has enough boxes of the class.
    p, b, _ = sample_ground_truth(points, boxes, labels, database, {0: 2}, np.random.default_rng(0))
    assert torch.equal(b, boxes) and torch.equal(p, points)


def _sloped_ground(slope: float, n: int = 6000, seed: int = 0) -> torch.Tensor:
    """(n, 4) points on the plane z = -1.7 + slope * x over x in [0, 40], y in [-20, 20], plus shrubs."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([40.0, 40.0]) - torch.tensor([0.0, 20.0])
    z = -1.7 + slope * xy[:, :1]
    ground = torch.cat([xy, z], 1)
    shrubs = ground[:300] + torch.rand(300, 3, generator=g) * torch.tensor([0.0, 0.0, 1.5])  # tall clutter
    points = torch.cat([ground, shrubs])
    return torch.cat([points, torch.rand(len(points), 1, generator=g)], 1)


def test_local_ground_heights_find_the_plane_under_each_box():
    points = _sloped_ground(0.03)  # geo3d synth kitti's steepest terrain
    boxes = torch.tensor([[10.0, 2.0, 5.0, 3.9, 1.6, 1.5, 0.0],  # their own z plays no part
                          [25.0, 2.0, 5.0, 3.9, 1.6, 1.5, 1.1],
                          [80.0, 0.0, 0.0, 3.9, 1.6, 1.5, 0.0]])  # no points there
    grounds = local_ground_heights(points, boxes)
    for ground, x in zip(grounds[:2].tolist(), (10.0, 25.0)):
        assert abs(ground - (-1.7 + 0.03 * x)) < 0.02  # the ring's two sides average the slope out
    assert grounds[2].isnan()
    one_at_a_time = local_ground_heights(points, boxes, chunk=1)
    torch.testing.assert_close(one_at_a_time, grounds, rtol=0, atol=0, equal_nan=True)


def test_ground_truth_sampling_aligns_pasted_objects_with_the_ground():
    points = _sloped_ground(0.03, seed=1)
    labels = torch.zeros(0, dtype=torch.int64)
    # Database objects cut from a flat scene (bottom at -1.7); pasted here they must rise with the slope
    # (by 0.3 and 0.9 m).
    db_boxes = torch.tensor([[10.0, 5.0, -0.95, 3.9, 1.6, 1.5, 0.0], [30.0, -6.0, -0.95, 4.0, 1.7, 1.5, 1.0],
                             [90.0, 0.0, -0.95, 4.0, 1.7, 1.5, 0.0]])  # the last one has no ground around it
    db_points = [torch.cat([b[:3] + torch.tensor([[0.1 * k, 0.0, 0.2 * (k % 3)] for k in range(-5, 6)]),
                            torch.full((11, 1), 0.5)], 1) for b in db_boxes]
    database = GTDatabase({0: db_boxes.clone()}, {0: [q.clone() for q in db_points]})
    p, b, lab = sample_ground_truth(points, torch.zeros(0, 7), labels, database, {0: 3}, np.random.default_rng(0),
                                    align_ground=True)
    assert len(b) == 2 and lab.tolist() == [0, 0]
    order = b[:, 0].argsort()
    b = b[order]
    bottoms = b[:, 2] - b[:, 5] / 2
    torch.testing.assert_close(bottoms, -1.7 + 0.03 * b[:, 0], atol=0.03, rtol=0)  # shrub points bias it by 2 cm
    torch.testing.assert_close(b[:, [0, 1, 3, 4, 5, 6]], db_boxes[:2][:, [0, 1, 3, 4, 5, 6]])  # only z moves
    inside = points_in_boxes(p[:, :3], b)
    assert (inside.sum(0) == 11).all()  # the objects' points moved with their boxes
    assert torch.equal(database.boxes[0], db_boxes)  # the database is untouched
    assert all(torch.equal(q, r) for q, r in zip(database.points[0], db_points))
    # Without alignment the same objects keep their source heights.
    _, b2, _ = sample_ground_truth(points, torch.zeros(0, 7), labels, database, {0: 3}, np.random.default_rng(0))
    assert len(b2) == 3 and torch.equal(b2[:, 2].sort().values, db_boxes[:, 2].sort().values)


def _big_cloud(n=50000, seed=0):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=g) * torch.tensor([50.0, 50.0, 3.0]) - torch.tensor([0.0, 25.0, 2.0])
    return torch.cat([xyz, torch.rand(n, 1, generator=g)], 1)


def test_drop_points_rate_order_and_determinism():
    points = _big_cloud()
    kept = drop_points(points, 0.2, np.random.default_rng(0))
    assert kept.dtype == torch.float32 and kept.shape[1] == 4
    n = len(points)
    assert abs((1 - len(kept) / n) - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n)  # binomial, 4 sigma
    # the kept points are unchanged rows of the input, in order: one uniform draw per point, kept when >= 0.2
    assert torch.equal(kept, points[torch.from_numpy(np.random.default_rng(0).random(n) >= 0.2)])
    torch.testing.assert_close(kept, drop_points(points, 0.2, np.random.default_rng(0)), rtol=0, atol=0)
    assert len(drop_points(points, 0.0, np.random.default_rng(0))) == n
    with pytest.raises(ValueError, match="fraction"):
        drop_points(points, 1.0, np.random.default_rng(0))


def test_jitter_points_std_and_untouched_columns():
    points = _big_cloud()
    out = jitter_points(points, 0.015, np.random.default_rng(0))
    assert out.shape == points.shape and out.dtype == torch.float32
    delta = (out[:, :3] - points[:, :3]).double()
    for axis in range(3):  # per-axis std 1.5 cm, mean 0 (50k samples: std within 2 %)
        assert float(delta[:, axis].std()) == pytest.approx(0.015, rel=0.02)
        assert abs(float(delta[:, axis].mean())) < 4 * 0.015 / math.sqrt(len(points))
    torch.testing.assert_close(out[:, 3], points[:, 3], rtol=0, atol=0)
    assert not torch.equal(out, points) and points.data_ptr() != out.data_ptr()


def test_jitter_intensity_gain_noise_and_clip():
    points = _big_cloud()
    points[:, 3] = 0.5
    out = jitter_intensity(points, 1.2, 0.03, np.random.default_rng(0))
    r = out[:, 3].double()
    assert float(r.mean()) == pytest.approx(0.6, abs=1e-3) and float(r.std()) == pytest.approx(0.03, rel=0.02)
    torch.testing.assert_close(out[:, :3], points[:, :3], rtol=0, atol=0)
    points[:, 3] = torch.linspace(0, 1, len(points))
    wide = jitter_intensity(points, 1.5, 0.2, np.random.default_rng(0))[:, 3]
    assert float(wide.min()) == 0.0 and float(wide.max()) == 1.0  # clipped to [0, 1]
    exact = jitter_intensity(points, 0.5, 0.0, np.random.default_rng(0))[:, 3]  # gain only: no noise drawn
    torch.testing.assert_close(exact, points[:, 3] * 0.5)
    with pytest.raises(ValueError, match="reflectance"):
        jitter_intensity(points[:, :3], 1.0, 0.1, np.random.default_rng(0))


def test_augment_frame_sensor_noise_keeps_boxes_and_is_seeded():
    points, boxes = _scene()
    points = torch.cat([points] * 50)  # 25k points for the statistics
    labels = torch.zeros(len(boxes), dtype=torch.int64)
    plain = AugmentConfig(flip_x=False, rotation_range=(0.0, 0.0), scale_range=(1.0, 1.0))
    noisy = AugmentConfig(flip_x=False, rotation_range=(0.0, 0.0), scale_range=(1.0, 1.0), point_dropout=0.2,
                          point_jitter_std=0.01, intensity_gain_range=(0.8, 1.2), intensity_noise_std=0.02)
    dropped = []
    for seed in range(40):
        p, b, lab = augment_frame(points, boxes, labels, noisy, np.random.default_rng(seed))
        torch.testing.assert_close(b, boxes, rtol=0, atol=0)
        assert torch.equal(lab, labels) and p.dtype == torch.float32 and p.shape[1] == 4
        assert float(p[:, 3].min()) >= 0 and float(p[:, 3].max()) <= 1
        dropped.append(1 - len(p) / len(points))
    dropped = np.array(dropped)  # uniform in [0, 0.2] per frame: mean 0.1, none above 0.2 (+ binomial noise)
    assert dropped.max() < 0.2 + 0.01 and dropped.min() < 0.05 and abs(dropped.mean() - 0.1) < 0.03
    one = augment_frame(points, boxes, labels, noisy, np.random.default_rng(7))
    two = augment_frame(points, boxes, labels, noisy, np.random.default_rng(7))
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    # off (the default): the same generator state gives exactly the previous augmentation, and nothing else drawn
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    base = augment_frame(points, boxes, labels, AugmentConfig(), rng_a)
    same = augment_frame(points, boxes, labels, AugmentConfig(intensity_gain_range=(1.0, 1.0)), rng_b)
    assert all(torch.equal(a, b) for a, b in zip(base, same)) and rng_a.random() == rng_b.random()
    p, _, _ = augment_frame(points, boxes, labels, plain, np.random.default_rng(0))
    assert torch.equal(p, points)


def test_sensor_noise_config_is_checked():
    for bad in ({"point_dropout": 1.0}, {"point_dropout": -0.1}, {"point_jitter_std": -1.0},
                {"intensity_gain_range": (1.2, 0.8)}, {"intensity_noise_std": -0.1}):
        with pytest.raises(ValueError):
            AugmentConfig(**bad)
