"""Where the Gaussians start: a visual hull carved from masks (GaussianObject), a random box, or a point cloud.

Every initialiser returns ``(points, colors)``: points (P, 3) float32 world frame, metres; colours (P, 3)
float32 in [0, 1]. The splatting model turns them into Gaussians (means, SH DC term from the colour).

The visual hull is carved on a voxel grid: every voxel centre is projected into every view (torch,
vectorised, in chunks of bounded size) and the mask is read at the pixel the centre falls in. It is carved
twice, coarse over the search region and then finer over the coarse hull, and only its surface voxels are
kept by default, since the splatting loss only ever sees the surface.
"""

from __future__ import annotations

import math
import os

import torch

from geo3d.errors import InputError, require
from geo3d.io import read_point_cloud
from geo3d.types import Cameras

# Most (view, voxel) pairs one carving chunk holds (a few bytes to a few tens of bytes each).
CHUNK_ELEMENTS = 1 << 22
# A voxel centre must lie at least this far in front of a camera (camera z, metres) for the view to see it.
NEAR = 1e-6
# Visual-hull grids larger than this many voxels are refused (the occupancy grid alone would take > 1 GiB).
MAX_VOXELS = 1 << 30


def visual_hull(
    masks: torch.Tensor,
    images: torch.Tensor,
    cameras: Cameras,
    bounds: torch.Tensor,
    resolution: int = 64,
    refine_resolution: int | None = None,
    min_views: int | None = None,
    mask_threshold: float = 0.5,
    surface_only: bool = True,
    max_points: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on the visual hull of the masked object, coloured from the images (GaussianObject's init).

    The voxel grid has ``resolution`` cubic voxels along the longest axis of ``bounds`` and as many as cover
    the other axes, centred on the box (so it may overhang the box by less than a voxel). Each voxel centre
    is projected into each view and the mask is sampled at the pixel that contains the projection
    (nearest-pixel sampling, no interpolation: pixel column ``floor(u)``, row ``floor(v)``). Per voxel and
    view:

    * the view *sees* the voxel when its centre is in front of the camera (camera z > 1e-6 m) and projects
      inside the image (0 <= u < W, 0 <= v < H);
    * it is *inside* in that view when the view sees it and ``mask >= mask_threshold`` there;
    * a view that does not see the voxel neither votes for it nor carves it.

    **Rule.** A voxel is kept when it is inside the mask in at least ``min_views`` views. Since a view that
    sees a voxel either has it inside or on the background, this also carves every voxel that falls on the
    background in more than ``V - min_views`` of the views that see it. With the default ``min_views =
    V - 1`` one bad mask (or pose) cannot carve away a part of the object; ``min_views = V`` is the strict
    visual hull. A part of the object cropped out of some images needs ``min_views`` votes from the views
    that still see it: lower ``min_views`` for such captures.

    Each kept voxel is coloured by the mean of the image colours at the same pixels, over the views where
    it is inside. Then the hull is carved once more on a finer grid (``refine_resolution`` voxels along the
    longest axis of the coarse hull's bounding box, padded by one coarse voxel and clipped to ``bounds``).

    Args:
        masks: (V, H, W) float in [0, 1] (or bool) object masks, one per camera.
        images: (V, H, W, 3) float RGB in [0, 1].
        cameras: V cameras of size W x H (OpenCV ``world_to_cam``, K in pixels).
        bounds: (2, 3) float ``[min corner, max corner]`` of the search region, world frame, metres.
        resolution: coarse voxels along the longest axis of ``bounds``, >= 1.
        refine_resolution: fine voxels along the longest axis of the refinement region; None: ``2 *
            resolution``; 0: no refinement (the coarse hull is returned).
        min_views: views a voxel must be inside; None: ``max(V - 1, 1)``. Must lie in 1..V.
        mask_threshold: mask values >= this are foreground.
        surface_only: keep only voxels with at least one empty 6-neighbour (cells outside the grid count as
            empty), which keeps the count down to the hull's surface.
        max_points: keep at most this many points, a uniform random subset drawn with ``seed``; None keeps
            all.
        seed: seed of that subset (the same seed gives the same points).

    Returns:
        points: (P, 3) float32 voxel centres, world frame, metres, in grid order (x slowest, z fastest).
        colors: (P, 3) float32 mean colours in [0, 1].
        Both on the device of ``masks``.

    Raises:
        InputError: on bad shapes or values, and ``"visual hull is empty: ..."`` (with per-view counts and
            hints) when no voxel survives.

    Example:
        Four views of a white 8 x 8 pixel square at the image centres, 3 m away: the hull is a small blob around
        the origin (the square spans 0.75 m at 3 m), white.

        >>> from pipelines.splatting.cameras import turntable_cameras
        >>> K = torch.tensor([[32.0, 0.0, 16.0], [0.0, 32.0, 16.0], [0.0, 0.0, 1.0]])
        >>> cameras = turntable_cameras(4, torch.zeros(3), 3.0, 20.0, torch.tensor([0.0, 0.0, 1.0]), K, 32, 32)
        >>> masks = torch.zeros(4, 32, 32)
        >>> masks[:, 12:20, 12:20] = 1.0
        >>> images = masks[..., None].expand(-1, -1, -1, 3)
        >>> points, colors = visual_hull(masks, images, cameras, bounds_from_cameras(cameras), resolution=16)
        >>> points.shape[1], bool(points.abs().max() < 0.45), bool((colors == 1).all())
        (3, True, True)
    """
    masks, images, bounds = _check_hull_inputs(masks, images, cameras, bounds)
    n_views = masks.shape[0]
    min_views = max(n_views - 1, 1) if min_views is None else min_views
    require(isinstance(min_views, int) and 1 <= min_views <= n_views, None,
            f"visual_hull: min_views: expected an integer in 1..{n_views} (the number of views), got {min_views!r}")
    refine_resolution = 2 * resolution if refine_resolution is None else refine_resolution
    for name, value, low in (("resolution", resolution, 1), ("refine_resolution", refine_resolution, 0)):
        require(isinstance(value, int) and not isinstance(value, bool) and value >= low, None,
                f"visual_hull: {name}: expected an integer >= {low}, got {value!r}")
    require(max_points is None or (isinstance(max_points, int) and max_points >= 1), None,
            f"visual_hull: max_points: expected None or an integer >= 1, got {max_points!r}")
    cameras = Cameras(cameras.K.to(masks.device), cameras.world_to_cam.to(masks.device), cameras.width,
                      cameras.height)

    grid = _Grid(bounds, resolution)
    kept, colors = _carve(grid, masks, images, cameras, min_views, mask_threshold)
    if refine_resolution:
        ijk = grid.ijk(kept)
        lo = grid.centers(ijk.min(0).values[None])[0] - 1.5 * grid.size
        hi = grid.centers(ijk.max(0).values[None])[0] + 1.5 * grid.size
        grid = _Grid(torch.stack([torch.maximum(lo, bounds[0]), torch.minimum(hi, bounds[1])]), refine_resolution)
        kept, colors = _carve(grid, masks, images, cameras, min_views, mask_threshold)

    if surface_only:
        occupancy = torch.zeros(grid.count, dtype=torch.bool, device=masks.device)
        occupancy[kept] = True
        on_surface = _surface(occupancy.reshape(grid.shape)).reshape(-1)[kept]
        kept, colors = kept[on_surface], colors[on_surface]
    if max_points is not None and len(kept) > max_points:
        generator = torch.Generator().manual_seed(seed)
        subset = torch.randperm(len(kept), generator=generator)[:max_points].sort().values.to(kept.device)
        kept, colors = kept[subset], colors[subset]
    return grid.centers(grid.ijk(kept)), colors


def bounds_from_cameras(cameras: Cameras) -> torch.Tensor:
    """A cubic search region for the object from the cameras alone (no images).

    **Rule.** The centre is the point nearest to all optical axes in the least-squares sense (it minimises
    the sum of squared distances to the lines through each camera centre along its viewing direction,
    camera +z). The half-size is the largest distance from that centre to a corner of any camera's field of
    view at the centre's depth in that camera (the image rectangle ``[0, W] x [0, H]`` back-projected to
    that depth), so the cube contains, for every camera, everything it sees at the distance of the object.
    Works with any number of cameras >= 2 whose axes converge.

    Args:
        cameras: C >= 2 cameras (OpenCV convention).

    Returns:
        (2, 3) float32 ``[min corner, max corner]``, world frame, metres, on the cameras' device.

    Raises:
        InputError: with fewer than 2 cameras, when the optical axes are (nearly) parallel (no common point;
            pass bounds explicitly), or when the common point lies behind a camera.
    """
    n = len(cameras)
    require(n >= 2, None, f"bounds_from_cameras: need at least 2 cameras with converging axes, got {n}")
    cam_to_world = cameras.cam_to_world.double()
    origins, axes = cam_to_world[:, :3, 3], cam_to_world[:, :3, 2]
    axes = axes / axes.norm(dim=1, keepdim=True)
    # Sum over cameras of the projector onto the plane normal to the axis: A x = b is the least-squares point.
    normal_proj = torch.eye(3, dtype=axes.dtype, device=axes.device) - axes[:, :, None] * axes[:, None, :]
    a, b = normal_proj.sum(0), (normal_proj @ origins[:, :, None]).sum(0)[:, 0]
    # The smallest eigenvalue is 1 - cos(angle) for two axes: below ~2.6 degrees per camera, give up.
    require(float(torch.linalg.eigvalsh(a)[0]) >= 1e-3 * n, None,
            "bounds_from_cameras: the optical axes are (nearly) parallel, so they have no common point; "
            "pass the bounds of the object explicitly")
    center = torch.linalg.solve(a, b)
    depth = ((center - origins) * axes).sum(1)  # (C,)
    behind = (depth <= 0).nonzero().flatten().tolist()
    require(not behind, None, f"bounds_from_cameras: the point nearest to all optical axes lies behind camera(s) "
                              f"{behind}; are the poses world-to-camera in the OpenCV convention?")
    w, h = cameras.width, cameras.height
    corners = torch.tensor([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=axes.dtype, device=axes.device)
    rays = torch.einsum("cij,kj->cki", torch.linalg.inv(cameras.K.double()), corners)  # (C, 4, 3), z = 1
    cam_points = rays * depth[:, None, None]
    world = torch.einsum("cij,ckj->cki", cam_to_world[:, :3, :3], cam_points) + origins[:, None, :]
    half = (world - center).norm(dim=-1).max()
    return torch.stack([center - half, center + half]).float()


def random_init(bounds: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points uniform in the box ``bounds`` with uniform random colours (3DGS's random init).

    Args:
        bounds: (2, 3) float ``[min corner, max corner]``, world frame, metres.
        n: number of points, >= 1.
        seed: the same seed gives the same points and colours.

    Returns:
        points: (n, 3) float32, metres; colors: (n, 3) float32 in [0, 1); on the device of ``bounds``.
    """
    bounds = _check_bounds(bounds)
    require(isinstance(n, int) and not isinstance(n, bool) and n >= 1, None,
            f"random_init: n: expected an integer >= 1, got {n!r}")
    generator = torch.Generator().manual_seed(seed)
    unit = torch.rand((n, 3), generator=generator)
    colors = torch.rand((n, 3), generator=generator)
    points = bounds[0].cpu() + unit * (bounds[1] - bounds[0]).cpu()
    return points.to(bounds.device), colors.to(bounds.device)


def point_cloud_init(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and colours from a point-cloud file (e.g. an SfM or depth-fusion PLY).

    Args:
        path: ``.ply``, ``.pcd`` or ``.obj`` file, read with :func:`geo3d.io.read_point_cloud`.

    Returns:
        points: (N, 3) float32, file units (metres); colors: (N, 3) float32 in [0, 1], grey 0.5 where the file
        has no colours.

    Raises:
        InputError: naming the file when it is missing, unreadable or has no points.
    """
    cloud = read_point_cloud(path)
    if len(cloud) == 0:
        raise InputError(path, "no points in the point cloud; cannot initialise Gaussians from it")
    colors = cloud.colors if cloud.colors is not None else torch.full_like(cloud.points, 0.5)
    return cloud.points, colors


# ----------------------------------------------------------------------------------------------------
# Visual hull pieces


class _Grid:
    """Cubic voxels covering a box: ``resolution`` along its longest axis, centred on the box."""

    def __init__(self, bounds: torch.Tensor, resolution: int):
        extent = (bounds[1] - bounds[0]).double()
        self.size = float(extent.max()) / resolution
        self.shape = tuple(max(1, math.ceil(float(e) / self.size - 1e-6)) for e in extent)
        self.count = math.prod(self.shape)
        if self.count > MAX_VOXELS:
            raise InputError(None, f"visual_hull: a {'x'.join(map(str, self.shape))} grid is too large; "
                                   "lower the resolution")
        center = (bounds[0] + bounds[1]).double() / 2
        self.origin = center - torch.tensor(self.shape, dtype=torch.float64, device=bounds.device) * self.size / 2

    def ijk(self, index: torch.Tensor) -> torch.Tensor:
        """(N,) int64 linear indices (x slowest) -> (N, 3) int64 grid coordinates."""
        _, ny, nz = self.shape
        return torch.stack([index // (ny * nz), (index // nz) % ny, index % nz], 1)

    def centers(self, ijk: torch.Tensor) -> torch.Tensor:
        """(N, 3) int64 grid coordinates -> (N, 3) float32 voxel centres, metres."""
        return (self.origin + (ijk.double() + 0.5) * self.size).float()


def _carve(grid: _Grid, masks: torch.Tensor, images: torch.Tensor, cameras: Cameras, min_views: int,
           threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(K,) int64 linear indices of the kept voxels (ascending) and their (K, 3) float32 mean colours."""
    n_views, height, width = masks.shape
    foreground = (masks >= threshold).reshape(n_views, -1)
    flat_images = images.reshape(n_views, -1, 3)
    kept, colors = [], []
    for start, depth, col, row in _project_grid(grid, cameras):
        seen = (depth > NEAR) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        pixel = row.clamp(0, height - 1) * width + col.clamp(0, width - 1)  # (V, n)
        inside = seen & torch.gather(foreground, 1, pixel)
        votes = inside.sum(0)
        keep = votes >= min_views
        if keep.any():
            pixel, inside, votes = pixel[:, keep], inside[:, keep], votes[keep]
            rgb = torch.gather(flat_images, 1, pixel[..., None].expand(-1, -1, 3))  # (V, k, 3)
            colors.append((rgb * inside[..., None]).sum(0) / votes[:, None])
            kept.append(start + keep.nonzero()[:, 0])
    if not kept:
        raise InputError(None, _empty_hull_message(grid, masks, cameras, threshold, min_views))
    return torch.cat(kept), torch.cat(colors).float().clamp(0, 1)


def _project_grid(grid: _Grid, cameras: Cameras):
    """Project the voxel centres slab by slab (x slowest) into every camera, in chunks of bounded size.

    Yields:
        start: linear index of the chunk's first voxel; depth: (V, n) float32 camera z, metres; col, row:
        (V, n) int64 pixel containing the projection, clamped to [-1, W] and [-1, H].
    """
    n_views = len(cameras)
    nx, ny, nz = grid.shape
    # The projection is affine in the voxel's grid coordinates: h(i, j, k) = h0 + i hx + j hy + k hz.
    proj = cameras.K.double() @ cameras.world_to_cam[:, :3, :].double()  # (V, 3, 4)
    origin = torch.cat([grid.origin + grid.size / 2, grid.origin.new_ones(1)])
    h0 = proj @ origin  # (V, 3)
    steps = [proj[:, :, axis, None] * (grid.size * torch.arange(n, dtype=torch.float64, device=proj.device))
             for axis, n in enumerate(grid.shape)]  # x, y, z: (V, 3, n)
    hyz = (h0[:, :, None, None] + steps[1][..., None] + steps[2][:, :, None, :]).float()  # (V, 3, ny, nz)
    hx = steps[0].float()
    slab = max(1, CHUNK_ELEMENTS // (n_views * ny * nz))
    for x0 in range(0, nx, slab):
        h = (hyz[:, :, None] + hx[:, :, x0 : x0 + slab, None, None]).reshape(n_views, 3, -1)  # (V, 3, n)
        depth = h[:, 2]
        z = depth.clamp_min(NEAR)
        col = (h[:, 0] / z).clamp(-1, cameras.width).floor().long()
        row = (h[:, 1] / z).clamp(-1, cameras.height).floor().long()
        yield x0 * ny * nz, depth, col, row


def _surface(occupancy: torch.Tensor) -> torch.Tensor:
    """(X, Y, Z) bool occupancy -> bool, True where occupied with an empty 6-neighbour (outside = empty)."""
    padded = torch.nn.functional.pad(occupancy, (1, 1, 1, 1, 1, 1), value=False)
    core = (slice(1, -1),) * 3
    interior = occupancy.clone()
    for axis in range(3):
        for shift in (slice(None, -2), slice(2, None)):
            window = list(core)
            window[axis] = shift
            interior &= padded[tuple(window)]
    return occupancy & ~interior


def _empty_hull_message(grid: _Grid, masks: torch.Tensor, cameras: Cameras, threshold: float,
                        min_views: int) -> str:
    n_views, height, width = masks.shape
    seen = torch.zeros(n_views, dtype=torch.int64, device=masks.device)
    inside = torch.zeros_like(seen)
    foreground = masks >= threshold
    for _, depth, col, row in _project_grid(grid, cameras):
        sees = (depth > NEAR) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        pixel = row.clamp(0, height - 1) * width + col.clamp(0, width - 1)
        seen += sees.sum(1)
        inside += (sees & torch.gather(foreground.reshape(n_views, -1), 1, pixel)).sum(1)
    lo = grid.origin.tolist()
    hi = (grid.origin + torch.tensor(grid.shape, dtype=torch.float64, device=grid.origin.device)
          * grid.size).tolist()

    def percent(values) -> str:
        return ", ".join(f"{100 * v:.0f}%" for v in values)

    return (
        f"visual hull is empty: no voxel of the {'x'.join(map(str, grid.shape))} grid over "
        f"[{', '.join(f'{v:.3g}' for v in lo)}] - [{', '.join(f'{v:.3g}' for v in hi)}] m is inside the mask in "
        f">= {min_views} of {n_views} views. Foreground (mask >= {threshold:g}) per view: "
        f"[{percent(foreground.float().mean((1, 2)).tolist())}]; voxels seen per view: "
        f"[{percent(v / grid.count for v in seen.tolist())}]; voxels inside the mask per view: "
        f"[{percent(v / grid.count for v in inside.tolist())}]. Check that the masks are not "
        "empty, that the cameras look at the bounds (try bounds_from_cameras), and that the poses are OpenCV "
        "world-to-camera (x right, y down, z forward), not OpenGL/NeRF or camera-to-world; or lower min_views."
    )


def _check_bounds(bounds) -> torch.Tensor:
    bounds = torch.as_tensor(bounds)
    require(bounds.shape == (2, 3), None, f"bounds: expected shape (2, 3) [min corner, max corner], "
                                          f"got {tuple(bounds.shape)}")
    bounds = bounds.float()
    require(bool(torch.isfinite(bounds).all()), None, "bounds: contains NaN or infinite values")
    require(bool((bounds[1] > bounds[0]).all()), None,
            f"bounds: expected max corner > min corner on every axis, got {bounds.tolist()}")
    return bounds


def _check_hull_inputs(masks, images, cameras, bounds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    require(isinstance(masks, torch.Tensor) and masks.dim() == 3, None,
            f"visual_hull: masks: expected a (V, H, W) tensor, got {getattr(masks, 'shape', type(masks).__name__)}")
    n_views, height, width = masks.shape
    require(n_views >= 1, None, "visual_hull: masks: need at least one view")
    require(isinstance(images, torch.Tensor) and tuple(images.shape) == (n_views, height, width, 3), None,
            f"visual_hull: images: expected shape ({n_views}, {height}, {width}, 3) like masks, "
            f"got {tuple(getattr(images, 'shape', ()))}")
    require(isinstance(cameras, Cameras) and len(cameras) == n_views, None,
            f"visual_hull: cameras: expected {n_views} Cameras (one per mask)")
    require((cameras.width, cameras.height) == (width, height), None,
            f"visual_hull: cameras are {cameras.width}x{cameras.height}, masks are {width}x{height}")
    masks = masks.float()
    images = images.to(masks.device).float()
    for name, x in (("masks", masks), ("images", images)):
        require(bool(torch.isfinite(x).all()), None, f"visual_hull: {name}: contains NaN or infinite values")
        require(float(x.min()) >= 0 and float(x.max()) <= 1, None, f"visual_hull: {name}: expected values in [0, 1]")
    return masks, images, _check_bounds(bounds).to(masks.device)
