"""Gaussian initialisation: visual hull against the analytic visual hull of a sphere, bounds, random, PLY.

The masks and images are computed per pixel from the camera ray through the pixel centre (does it pass
within r of the sphere centre? where does it first hit the sphere?), independently of the carving code.
The exact visual hull of the sphere is then known analytically: a point is inside view c's cone when the
line from camera c's centre through the point passes within r of the sphere centre.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from geo3d.errors import InputError
from geo3d.io import write_point_cloud
from geo3d.types import Cameras, PointCloud
from pipelines.splatting.init import bounds_from_cameras, point_cloud_init, random_init, visual_hull

CENTER = torch.tensor([0.1, -0.05, 0.2], dtype=torch.float64)
RADIUS = 0.5
SIZE, FOCAL, DISTANCE = 96, 120.0, 3.0
BOUNDS = torch.stack([CENTER - 1.0, CENTER + 1.0]).float()
# The pixel containing a point's projection has its centre within half a pixel diagonal of it, an angle of
# at most ~0.71 / FOCAL; seen from DISTANCE, that moves the ray's closest approach to the sphere centre by:
PIXEL_TOL = 1.05 * DISTANCE * math.sqrt(0.5) / FOCAL


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """(4, 4) float64 OpenCV world-to-camera: z towards ``target``, x right, y down (``up`` points up)."""
    eye, target, up = (torch.as_tensor(v, dtype=torch.float64) for v in (eye, target, up))
    z = (target - eye) / (target - eye).norm()
    x = torch.linalg.cross(z, up)
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3] = torch.stack([x, y, z])
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    return w2c


def make_cameras(eyes, targets, size=SIZE, focal=FOCAL) -> Cameras:
    w2c = torch.stack([look_at(e, t) for e, t in zip(eyes, targets)])
    K = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]], dtype=torch.float64)
    return Cameras(K.expand(len(w2c), 3, 3).float(), w2c.float(), size, size)


def corner_cameras() -> Cameras:
    """8 cameras at the corners of a cube around the sphere, at DISTANCE from its centre, looking at it."""
    dirs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=3)), dtype=torch.float64) / math.sqrt(3)
    return make_cameras(CENTER + DISTANCE * dirs, [CENTER] * 8)


def ring_cameras(n: int) -> Cameras:
    """n cameras on a tilted ring around the sphere, at DISTANCE from its centre, looking at it."""
    angles = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n + 0.3
    dirs = torch.stack([angles.cos(), angles.sin(), torch.full_like(angles, 0.4)], 1)
    return make_cameras(CENTER + DISTANCE * dirs / dirs.norm(dim=1, keepdim=True), [CENTER] * n)


def pixel_rays(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera centres (V, 3) and unit world directions (V, H, W, 3) of the rays through the pixel centres."""
    c2w = torch.linalg.inv(cameras.world_to_cam.double())
    j, i = torch.meshgrid(torch.arange(cameras.height) + 0.5, torch.arange(cameras.width) + 0.5, indexing="ij")
    pix = torch.stack([i, j, torch.ones_like(i)], -1).double()
    rays = torch.einsum("cij,hwj->chwi", c2w[:, :3, :3] @ torch.linalg.inv(cameras.K.double()), pix)
    return c2w[:, :3, 3], rays / rays.norm(dim=-1, keepdim=True)


def ray_miss(cameras: Cameras, point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel (V, H, W): how far along its ray the point is, and how far the ray passes from it."""
    origins, rays = pixel_rays(cameras)
    to_point = point - origins  # (V, 3)
    along = torch.einsum("chwi,ci->chw", rays, to_point)
    return along, (to_point[:, None, None] - along[..., None] * rays).norm(dim=-1)


def sphere_views(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """Analytic masks (V, H, W) and images (V, H, W, 3) of the sphere: red where the ray first hits it at
    x < centre x, blue where at x >= centre x, black background."""
    origins, rays = pixel_rays(cameras)
    along, miss = ray_miss(cameras, CENTER)
    masks = (along > 0) & (miss <= RADIUS)
    first_hit = along - (RADIUS**2 - miss.clamp(max=RADIUS) ** 2).sqrt()
    left = origins[:, None, None, 0] + first_hit * rays[..., 0] < CENTER[0]
    images = torch.zeros(*masks.shape, 3)
    images[..., 0] = (masks & left).float()
    images[..., 2] = (masks & ~left).float()
    return masks.float(), images


def cone_distance(cameras: Cameras, points: torch.Tensor) -> torch.Tensor:
    """(V, N) distance from the sphere centre to the line from each camera centre through each point
    (inf when the sphere centre is behind the camera)."""
    origins = cameras.centers.double()
    to_point = points.double()[None] - origins[:, None]
    to_point = to_point / to_point.norm(dim=-1, keepdim=True)
    to_center = (CENTER - origins)[:, None].expand_as(to_point)
    return torch.linalg.cross(to_center, to_point, dim=-1).norm(dim=-1)


def hull_boundary(cameras: Cameras, n: int = 400, seed: int = 0) -> torch.Tensor:
    """(n, 3) points on the boundary of the exact visual hull (all cones), by bisection along random rays
    from the sphere centre (the hull is convex and contains the centre)."""
    dirs = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    lo, hi = torch.zeros(n, dtype=torch.float64), torch.full((n,), 2.0, dtype=torch.float64)
    for _ in range(40):
        mid = (lo + hi) / 2
        inside = cone_distance(cameras, CENTER + mid[:, None] * dirs).max(0).values <= RADIUS
        lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
    return CENTER + lo[:, None] * dirs


def test_sphere_hull_is_sound_and_complete():
    cams = corner_cameras()
    masks, images = sphere_views(cams)
    resolution = 24
    voxel = 2.0 / resolution
    points, colors = visual_hull(masks, images, cams, BOUNDS, resolution, refine_resolution=0, min_views=8,
                                 surface_only=False)
    assert points.dtype == torch.float32 and colors.dtype == torch.float32 and colors.shape == points.shape
    # Sound: every kept centre is inside every cone (up to the pixel quantisation).
    assert (cone_distance(cams, points) <= RADIUS + PIXEL_TOL).all()
    # Complete: a random point deep enough inside all cones that its voxel's centre is too has a kept centre
    # within half a voxel diagonal.
    half_diag = voxel * math.sqrt(3) / 2
    samples = BOUNDS[0] + torch.rand(20000, 3, generator=torch.Generator().manual_seed(1)) * 2.0
    reach = half_diag * DISTANCE / (DISTANCE - RADIUS - 0.3 - half_diag)  # cone widening over half a diagonal
    deep = (cone_distance(cams, samples) <= RADIUS - PIXEL_TOL - reach).all(0)
    assert deep.sum() > 300
    nearest, _ = cKDTree(points.numpy()).query(samples[deep].numpy())
    assert nearest.max() <= half_diag * 1.001
    # The kept voxels fill the sphere itself (which lies inside its visual hull).
    on_sphere = CENTER + 0.8 * RADIUS * torch.nn.functional.normalize(torch.randn(500, 3, dtype=torch.float64))
    assert cKDTree(points.numpy()).query(on_sphere.float().numpy())[0].max() <= half_diag * 1.001


def test_refined_surface_hull_is_tighter_and_covers_the_sphere():
    cams = corner_cameras()
    masks, images = sphere_views(cams)
    boundary = hull_boundary(cams).float().numpy()
    radius_hull = float((torch.from_numpy(boundary).double() - CENTER).norm(dim=1).max())
    coarse, _ = visual_hull(masks, images, cams, BOUNDS, 24, refine_resolution=0, min_views=8)
    fine, _ = visual_hull(masks, images, cams, BOUNDS, 24, refine_resolution=48, min_views=8)
    for points in (coarse, fine):
        assert (cone_distance(cams, points) <= RADIUS + PIXEL_TOL).all()
        offsets = points.double() - CENTER
        assert (offsets.norm(dim=1) <= radius_hull + PIXEL_TOL).all()
        octants = set(map(tuple, (offsets > 0).int().tolist()))
        assert len(octants) == 8
    # Tighter: the hull's true boundary is nearer to the refined surface points than to the coarse ones.
    gap_coarse = cKDTree(coarse.numpy()).query(boundary)[0]
    gap_fine = cKDTree(fine.numpy()).query(boundary)[0]
    assert gap_fine.mean() < 0.6 * gap_coarse.mean()
    assert gap_fine.max() < 2.0 / 24 * math.sqrt(3)
    # Surface only: far fewer points than the solid hull, and all near the boundary.
    solid, _ = visual_hull(masks, images, cams, BOUNDS, 24, refine_resolution=48, min_views=8, surface_only=False)
    assert len(fine) < 0.5 * len(solid)
    depth_inside = cKDTree(boundary).query(fine.numpy())[0]
    assert np.quantile(depth_inside, 0.9) < 0.08


def test_masks_are_sampled_at_the_pixel_containing_the_projection():
    cams = ring_cameras(1)
    masks = torch.zeros(1, SIZE, SIZE)
    masks[0, :, 40] = 1  # column 40: 40 <= u < 41
    masks[0, 55, :] = 1  # row 55: 55 <= v < 56
    points, _ = visual_hull(masks, torch.zeros(1, SIZE, SIZE, 3), cams, BOUNDS, 48, refine_resolution=0,
                            surface_only=False)
    uv, depth = cams.project(points)
    in_column = (uv[0, :, 0] >= 40) & (uv[0, :, 0] < 41)
    in_row = (uv[0, :, 1] >= 55) & (uv[0, :, 1] < 56)
    assert (depth > 0).all() and (in_column | in_row).all()
    assert in_column.sum() > 100 and in_row.sum() > 100
    assert ((uv >= 0) & (uv < SIZE)).all()


def test_colours_follow_the_sphere_halves():
    cams = corner_cameras()
    masks, images = sphere_views(cams)
    points, colors = visual_hull(masks, images, cams, BOUNDS, 24, refine_resolution=48)
    assert torch.allclose(colors[:, 1], torch.zeros(len(colors)))  # no green anywhere in the images
    assert torch.allclose(colors.sum(1), torch.ones(len(colors)), atol=1e-6)  # always inside the sphere mask
    x = points[:, 0].double() - CENTER[0]
    left, right = x < -0.25, x > 0.25
    assert left.sum() > 50 and right.sum() > 50
    assert (colors[left, 0] > 0.5).float().mean() > 0.95
    assert (colors[right, 2] > 0.5).float().mean() > 0.95
    # Not all views agree: a hull point on the left also sees the right half first from some right-hand views.
    assert colors[left, 0].mean() > 0.7 and colors[right, 2].mean() > 0.7


def test_min_views_rule_default_keeps_v_minus_1():
    cams = ring_cameras(6)
    masks, images = sphere_views(cams)
    points, _ = visual_hull(masks, images, cams, BOUNDS, 24, refine_resolution=0, surface_only=False)
    cones = cone_distance(cams, points)
    # Kept: inside the mask in >= V - 1 = 5 of 6 views, so never in V - 2 = 4 only.
    assert ((cones <= RADIUS + PIXEL_TOL).sum(0) >= 5).all()
    # ... and some kept voxels lie clearly outside one cone: the rule is not "all views".
    assert ((cones > RADIUS + PIXEL_TOL).sum(0) == 1).sum() > 5
    # Voxels in exactly 4 cones exist in the region (so the first check could fail) and are dropped.
    samples = BOUNDS[0] + torch.rand(20000, 3, generator=torch.Generator().manual_seed(2)) * 2.0
    in_four = (cone_distance(cams, samples) <= RADIUS - 0.1).sum(0) == 4
    assert in_four.sum() > 50
    strict, _ = visual_hull(masks, images, cams, BOUNDS, 24, refine_resolution=0, min_views=6, surface_only=False)
    assert len(strict) < len(points)
    assert (cone_distance(cams, strict) <= RADIUS + PIXEL_TOL).all()


def test_min_views_rule_with_probe_points():
    """All-foreground masks with background discs: around A in view 0 (A inside in 3 of 4 views), and around
    B in views 0 and 1 (B inside in 2 of 4)."""
    cams = ring_cameras(4)
    probe_a = CENTER + torch.tensor([0.0, 0.0, 0.3], dtype=torch.float64)
    probe_b = CENTER - torch.tensor([0.0, 0.0, 0.3], dtype=torch.float64)
    disc, near = 0.15, 0.1  # rays within `disc` of a probe are background; points within `near` project there
    masks = torch.ones(4, SIZE, SIZE)
    masks[0][ray_miss(cams[:1], probe_a)[1][0] <= disc] = 0
    for view in (0, 1):
        masks[view][ray_miss(cams[view : view + 1], probe_b)[1][0] <= disc] = 0
    images = torch.rand(4, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0))
    half_diag = 2.0 / 24 * math.sqrt(3) / 2
    # A line through a point passes within that point's distance of the probe; pixel centres add PIXEL_TOL.
    assert half_diag < near and near + 1.2 * PIXEL_TOL < disc

    def distance_to_kept(min_views, probe):
        points, _ = visual_hull(masks, images, cams, BOUNDS, 24, refine_resolution=0, min_views=min_views,
                                surface_only=False)
        return float((points.double() - probe).norm(dim=1).min())

    assert distance_to_kept(None, probe_a) <= half_diag  # default V - 1 = 3: kept
    assert distance_to_kept(None, probe_b) > near  # 2 of 4: dropped
    assert distance_to_kept(4, probe_a) > near  # strict: A dropped too
    assert distance_to_kept(2, probe_b) <= half_diag  # lenient: B kept


def test_views_that_do_not_see_a_voxel_neither_vote_nor_carve():
    seeing = ring_cameras(2)
    away = make_cameras([CENTER + torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64)],
                        [CENTER + torch.tensor([0.0, 0.1, 6.0], dtype=torch.float64)])  # object behind it
    cams = Cameras(torch.cat([seeing.K, away.K]), torch.cat([seeing.world_to_cam, away.world_to_cam]), SIZE, SIZE)
    masks, images = sphere_views(seeing)
    expected, expected_colors = visual_hull(masks, images, seeing, BOUNDS, 16, refine_resolution=32, min_views=2)
    for fill in (0.0, 1.0):  # the view that sees nothing of the bounds neither carves nor votes
        all_masks = torch.cat([masks, torch.full((1, SIZE, SIZE), fill)])
        all_images = torch.cat([images, torch.full((1, SIZE, SIZE, 3), 0.3)])
        points, colors = visual_hull(all_masks, all_images, cams, BOUNDS, 16, refine_resolution=32, min_views=2)
        assert torch.equal(points, expected) and torch.equal(colors, expected_colors)
    with pytest.raises(InputError, match="visual hull is empty"):
        visual_hull(all_masks, all_images, cams, BOUNDS, 16, refine_resolution=32, min_views=3)


def test_empty_masks_raise_a_helpful_error():
    cams = ring_cameras(4)
    masks, images = sphere_views(cams)
    with pytest.raises(InputError, match="visual hull is empty") as info:
        visual_hull(torch.zeros_like(masks), images, cams, BOUNDS, 16)
    assert "masks" in str(info.value) and "OpenCV" in str(info.value) and "0%" in str(info.value)
    # Cameras looking away (poses inverted by mistake): empty as well.
    flipped = Cameras(cams.K, cams.cam_to_world, SIZE, SIZE)
    with pytest.raises(InputError, match="visual hull is empty"):
        visual_hull(masks, images, flipped, BOUNDS, 16)


def test_max_points_is_a_seeded_subset():
    cams = ring_cameras(4)
    masks, images = sphere_views(cams)
    points, colors = visual_hull(masks, images, cams, BOUNDS, 16, refine_resolution=32)
    sub, sub_colors = visual_hull(masks, images, cams, BOUNDS, 16, refine_resolution=32, max_points=100, seed=3)
    again, _ = visual_hull(masks, images, cams, BOUNDS, 16, refine_resolution=32, max_points=100, seed=3)
    other, _ = visual_hull(masks, images, cams, BOUNDS, 16, refine_resolution=32, max_points=100, seed=4)
    assert len(points) > 100 and sub.shape == (100, 3)
    assert torch.equal(sub, again) and not torch.equal(sub, other)
    index = cKDTree(points.numpy()).query(sub.numpy())
    assert index[0].max() == 0 and len(set(index[1].tolist())) == 100
    assert torch.equal(sub_colors, colors[index[1]])


def test_visual_hull_rejects_bad_input():
    cams = ring_cameras(2)
    masks, images = sphere_views(cams)
    with pytest.raises(InputError, match="images"):
        visual_hull(masks, images[:, :-1], cams, BOUNDS)
    with pytest.raises(InputError, match="min_views"):
        visual_hull(masks, images, cams, BOUNDS, min_views=3)
    with pytest.raises(InputError, match="bounds"):
        visual_hull(masks, images, cams, BOUNDS.flip(0))
    with pytest.raises(InputError, match="cameras"):
        visual_hull(masks, images, cams[:1], BOUNDS)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_bounds_from_cameras_contain_the_object(n):
    gen = torch.Generator().manual_seed(n)
    angles = torch.rand(n, generator=gen, dtype=torch.float64) * 0.6 + torch.arange(n) * 2 * math.pi / n
    heights = torch.rand(n, generator=gen, dtype=torch.float64) - 0.3
    dirs = torch.stack([angles.cos(), angles.sin(), heights], 1)
    distances = 2.5 + torch.rand(n, generator=gen, dtype=torch.float64)
    eyes = CENTER + distances[:, None] * dirs / dirs.norm(dim=1, keepdim=True)
    targets = CENTER + 0.15 * (torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5)  # axes not concurrent
    cams = make_cameras(eyes, targets)
    masks, _ = sphere_views(cams)
    assert masks.sum((1, 2)).min() > 0 and masks[:, [0, -1]].sum() + masks[:, :, [0, -1]].sum() == 0  # in view
    bounds = bounds_from_cameras(cams)
    assert bounds.shape == (2, 3) and bounds.dtype == torch.float32
    assert (bounds[0].double() <= CENTER - RADIUS).all() and (bounds[1].double() >= CENTER + RADIUS).all()
    half = float(bounds[1, 0] - bounds[0, 0]) / 2
    assert torch.allclose(bounds[1] - bounds[0], torch.full((3,), 2 * half))
    assert half < 1.5 * float(distances.max())  # not absurdly large: about a field of view at that distance


def test_bounds_from_cameras_exact_when_axes_meet():
    eyes = [CENTER + torch.tensor(v, dtype=torch.float64) for v in ([3.0, 0, 0.5], [0, -2.0, 0.3], [-2.5, 1, 0])]
    cams = make_cameras(eyes, [CENTER] * 3, size=80, focal=100.0)
    bounds = bounds_from_cameras(cams)
    assert torch.allclose((bounds[0] + bounds[1]).double() / 2, CENTER, atol=1e-5)
    # Half-size: the farthest image corner at the centre's depth, distance * sqrt(2) * (W / 2) / f.
    farthest = max(float((e - CENTER).norm()) for e in eyes)
    assert float(bounds[1, 0] - bounds[0, 0]) / 2 == pytest.approx(farthest * math.sqrt(2) * 40 / 100, rel=1e-5)


def test_bounds_from_cameras_rejects_parallel_or_single_cameras():
    eyes = [CENTER + torch.tensor([x, 0.0, 3.0], dtype=torch.float64) for x in (0.0, 1.0)]
    cams = make_cameras(eyes, [e - torch.tensor([0, 0.1, 3.0], dtype=torch.float64) for e in eyes])
    with pytest.raises(InputError, match="parallel"):
        bounds_from_cameras(cams)
    with pytest.raises(InputError, match="2 cameras"):
        bounds_from_cameras(cams[:1])


def test_random_init_is_uniform_in_the_box_and_seeded():
    bounds = torch.tensor([[-1.0, 0.0, 2.0], [1.0, 0.5, 6.0]])
    points, colors = random_init(bounds, 20000, seed=5)
    assert points.shape == colors.shape == (20000, 3) and points.dtype == colors.dtype == torch.float32
    assert (points >= bounds[0]).all() and (points <= bounds[1]).all()
    # Uniform: mean at the box centre, variance size^2 / 12 (to a few standard errors); colours uniform in [0, 1).
    size = bounds[1] - bounds[0]
    assert torch.allclose(points.mean(0), bounds.mean(0), atol=float(size.max()) * 0.01)
    assert torch.allclose(points.var(0), size**2 / 12, rtol=0.05)
    assert torch.allclose(colors.mean(0), torch.full((3,), 0.5), atol=0.01)
    assert torch.allclose(colors.var(0), torch.full((3,), 1 / 12), rtol=0.05)
    again, again_colors = random_init(bounds, 20000, seed=5)
    assert torch.equal(points, again) and torch.equal(colors, again_colors)
    assert not torch.equal(points, random_init(bounds, 20000, seed=6)[0])


def test_point_cloud_init_reads_colours_or_grey(tmp_path):
    points = torch.rand(50, 3)
    colors = torch.rand(50, 3)
    write_point_cloud(tmp_path / "coloured.ply", PointCloud(points, colors=colors))
    write_point_cloud(tmp_path / "plain.ply", PointCloud(points))
    got_points, got_colors = point_cloud_init(tmp_path / "coloured.ply")
    assert torch.allclose(got_points, points, atol=1e-6)
    assert torch.allclose(got_colors, colors, atol=1 / 255)  # 8-bit colours in the file
    got_points, got_colors = point_cloud_init(tmp_path / "plain.ply")
    assert torch.allclose(got_points, points, atol=1e-6)
    assert torch.equal(got_colors, torch.full((50, 3), 0.5))


def test_point_cloud_init_names_an_empty_file(tmp_path):
    path = tmp_path / "empty.ply"
    path.write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                    "property float z\nend_header\n")
    with pytest.raises(InputError, match="empty.ply"):
        point_cloud_init(path)
