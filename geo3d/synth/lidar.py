"""A spinning-LiDAR sensor model for the synthetic KITTI scenes (HDL-64E-like), on Open3D ray casting.

What one revolution does (:func:`scan`), and why each part is there (the "Synth It Like KITTI" / PCGen
observation: a sensor that drops and scatters rays as real ones do closes most of the sim-to-real gap):

* **Beams**: the HDL-64E's two laser blocks (:data:`HDL64E_ELEVATIONS_DEG`): the upper 32 lasers from +2.0 to
  -8.33 degrees (about 1/3 degree apart), the lower 32 from -8.83 to -24.33 degrees (1/2 degree apart): the
  non-uniform spacing of Velodyne's published S2 geometry. Each frame draws a per-beam elevation error
  (``elevation_jitter_deg``) and each firing an azimuth error (``azimuth_jitter_deg``): calibration and encoder
  noise.
* **Solid hits** from the scene mesh. Triangles of material :data:`GLASS` (car windows, shop windows) transmit
  most rays (``glass_transmit``: the ray is cast on from behind the pane and returns from what is inside),
  reflect a few back and lose the rest.
* **Volumetric scatter** (:class:`ScatterVolumes`): tree crowns, bushes, hedges and wire fences are not
  surfaces but clouds of leaves or wires. A ray entering one returns after an exponentially distributed free
  path (density ``sigma`` per metre), so returns come from inside the volume, and a ray that crosses it without
  scattering goes on (partial transmission) to what is behind.
* **Ray drop**: a return needs enough received power, ``P = rho (0.2 + 0.8 cos(incidence)) / r^2`` (Lambertian
  target with a floor for rough surfaces); the return probability is a lognormal detection curve,
  :func:`return_probability`, ``Phi((ln P - ln P50) / sigma)``. Dark paint (rho 0.05), far and grazing
  surfaces drop more; a small range-independent drop (``dropout``) models everything else.
* **Mixed pixels**: the beam has a footprint (``divergence_deg``). Where its two halves see surfaces more
  than ``mixed_min_gap`` metres apart (a depth edge), the return is, with probability ``mixed_prob``, a range
  between the two: the points that float between a car's silhouette and the wall behind it in real scans.
* **Range noise**: gaussian along the ray (``range_noise``).
* **Intensity**: ``rho (0.5 + 0.5 cos) g(r)`` plus noise (:func:`intensity`): falls with incidence, and with
  range beyond 25 m; values below the noise floor read 0, as most of KITTI's beyond 40 m do; rounded to 0.01.

Randomness comes from the caller's ``numpy.random.Generator``, so a frame stays a pure function of its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import open3d as o3d
from scipy.special import ndtr

OPAQUE, GLASS = 0, 1
"""Triangle materials: opaque surfaces and glass (see the module docstring)."""

HDL64E_ELEVATIONS_DEG = np.concatenate([np.linspace(2.0, -8.33, 32), np.linspace(-8.83, -24.33, 32)])
"""Beam elevations of the HDL-64E (upper block, then lower block), degrees: (64,) float64."""


@dataclass(frozen=True)
class LidarSpec:
    """The simulated spinning LiDAR (defaults: HDL-64E as mounted on the KITTI car).

    Attributes:
        elevations_deg: beam elevations, degrees, top first (default :data:`HDL64E_ELEVATIONS_DEG`).
        azimuth_steps: firings per revolution (360 degrees).
        max_range: metres; farther returns are lost.
        range_noise: gaussian sigma along the ray, metres.
        dropout: (low, high) range of the per-frame random drop rate applied to every return.
        elevation_jitter_deg: per-beam elevation error drawn per frame, sigma, degrees.
        azimuth_jitter_deg: per-firing azimuth error, sigma, degrees.
        p50: received power ``rho cos-term / r^2`` (1/m^2) at which half the returns are lost.
        p_sigma: spread of the detection curve in natural-log units of power.
        glass_transmit: share of rays that pass through glass; ``glass_reflect`` return from the pane; the rest
            are lost.
        glass_reflect: share of rays that return from a glass pane.
        divergence_deg: beam footprint across the scan direction, degrees (mixed pixels).
        mixed_min_gap: range difference between the footprint's halves that makes a mixed pixel, metres.
        mixed_prob: chance that such a return is mixed (a range between the two).
        intensity_noise: gaussian sigma of the reflectance noise.
        intensity_floor: reflectances below this read 0.
    """

    elevations_deg: tuple[float, ...] = tuple(HDL64E_ELEVATIONS_DEG.tolist())
    azimuth_steps: int = 2000
    max_range: float = 120.0
    range_noise: float = 0.02
    dropout: tuple[float, float] = (0.01, 0.04)
    elevation_jitter_deg: float = 0.03
    azimuth_jitter_deg: float = 0.01
    p50: float = 1.6e-5
    p_sigma: float = 0.7
    glass_transmit: float = 0.6
    glass_reflect: float = 0.2
    divergence_deg: float = 0.12
    mixed_min_gap: float = 0.3
    mixed_prob: float = 0.5
    intensity_noise: float = 0.03
    intensity_floor: float = 0.06

    @property
    def beams(self) -> int:
        return len(self.elevations_deg)

    @property
    def num_rays(self) -> int:
        return self.beams * self.azimuth_steps

    def directions(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """Unit ray directions: (beams * azimuth_steps, 3) float64, beam-major, azimuth from -pi.

        Args:
            rng: draws the per-beam elevation and per-firing azimuth errors; None: the nominal directions.
        """
        el = np.deg2rad(np.asarray(self.elevations_deg, dtype=np.float64))
        az = np.linspace(-np.pi, np.pi, self.azimuth_steps, endpoint=False)
        el, az = np.meshgrid(el, az, indexing="ij")
        if rng is not None:
            el = el + np.deg2rad(self.elevation_jitter_deg) * rng.standard_normal((self.beams, 1))
            az = az + np.deg2rad(self.azimuth_jitter_deg) * rng.standard_normal(az.shape)
        return _unit_directions(el.reshape(-1), az.reshape(-1))


def _unit_directions(elevation: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], -1)


def return_probability(reflectance: np.ndarray, cos_incidence: np.ndarray, distance: np.ndarray,
                       lidar: LidarSpec) -> np.ndarray:
    """Chance that a hit gives a return (before the range-independent ``dropout``).

    Args:
        reflectance: (P,) material reflectance rho in [0, 1].
        cos_incidence: (P,) |cos| of the angle between the ray and the surface normal.
        distance: (P,) metres.
        lidar: the sensor (``p50``, ``p_sigma``).

    Returns:
        (P,) float64 in [0, 1]: ``Phi((ln P - ln p50) / p_sigma)`` with ``P = rho (0.2 + 0.8 cos) / r^2``.
    """
    power = np.maximum(reflectance, 1e-6) * (0.2 + 0.8 * np.abs(cos_incidence)) / np.maximum(distance, 0.1) ** 2
    return ndtr((np.log(power) - math.log(lidar.p50)) / lidar.p_sigma)


def intensity(reflectance: np.ndarray, cos_incidence: np.ndarray, distance: np.ndarray, lidar: LidarSpec,
              rng: np.random.Generator) -> np.ndarray:
    """Reported reflectance of each return, in [0, 1], rounded to 0.01 (KITTI's resolution).

    Args:
        reflectance: (P,) material reflectance.
        cos_incidence: (P,) |cos| of the incidence angle.
        distance: (P,) metres.
        lidar: the sensor (``intensity_noise``, ``intensity_floor``).
        rng: noise.

    Returns:
        (P,) float64: ``rho (0.5 + 0.5 cos) g(r) + noise``, values below the floor 0, with ``g = 1.3`` up to 25 m
        and ``1.3 exp(-((r - 25) / 15)^2)`` beyond (KITTI's reflectances are near-constant with range close by and
        mostly 0 beyond 40 m: 70 % of the returns there in the shared frames).
    """
    falloff = 1.3 * np.exp(-(np.maximum(distance - 25.0, 0.0) / 15.0) ** 2)
    value = reflectance * (0.5 + 0.5 * np.abs(cos_incidence)) * falloff
    value = value + lidar.intensity_noise * rng.standard_normal(len(value))
    value = np.where(value < lidar.intensity_floor, 0.0, value)
    return np.round(np.clip(value, 0.0, 1.0), 2)


@dataclass
class ScatterVolumes:
    """Volumes that scatter rays from inside (foliage, wire mesh): ellipsoids and boxes, yawed about z.

    Attributes:
        centres: (V, 3) float64 metres.
        half_sizes: (V, 3) float64 semi-axes (ellipsoids) or half-extents (boxes) in the volume's frame, metres.
        yaws: (V,) float64 radians about +z.
        is_box: (V,) bool, True for boxes.
        sigma: (V,) float64 scattering density, 1/m: the chance of returning within a path s is ``1 - exp(-sigma s)``.
        reflectance: (V,) float64 material reflectance of the leaves or wires.
    """

    centres: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    half_sizes: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    yaws: np.ndarray = field(default_factory=lambda: np.zeros(0))
    is_box: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    sigma: np.ndarray = field(default_factory=lambda: np.zeros(0))
    reflectance: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return len(self.centres)

    def add(self, centre, half_size, yaw: float, is_box: bool, sigma: float, reflectance: float) -> None:
        """Append one volume (see the attributes for units)."""
        self.centres = np.vstack([self.centres, np.asarray(centre, dtype=np.float64)[None]])
        self.half_sizes = np.vstack([self.half_sizes, np.asarray(half_size, dtype=np.float64)[None]])
        self.yaws = np.append(self.yaws, float(yaw))
        self.is_box = np.append(self.is_box, bool(is_box))
        self.sigma = np.append(self.sigma, float(sigma))
        self.reflectance = np.append(self.reflectance, float(reflectance))

    def contains(self, points: np.ndarray, margin: float = 1e-6) -> np.ndarray:
        """(P,) bool: points (P, 3) metres inside any volume (grown by ``margin`` metres)."""
        inside = np.zeros(len(points), dtype=bool)
        for v in range(len(self)):
            local = self._local(points, v) / self.half_sizes[v]
            grow = 1.0 + margin / self.half_sizes[v].min()
            if self.is_box[v]:
                inside |= (np.abs(local) <= grow).all(1)
            else:
                inside |= (local**2).sum(1) <= grow**2
        return inside

    def _local(self, points: np.ndarray, v: int) -> np.ndarray:
        c, s = math.cos(self.yaws[v]), math.sin(self.yaws[v])
        d = points - self.centres[v]
        return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], 1)

    def entry_exit(self, origins: np.ndarray, directions: np.ndarray, v: int) -> tuple[np.ndarray, np.ndarray]:
        """Ray parameters where rays enter and leave volume ``v``: ``(t0, t1)`` (R,) each, metres; t0 > t1 when
        the ray misses. Rays start at ``origins`` (R, 3) with unit ``directions`` (R, 3)."""
        o = self._local(origins, v) / self.half_sizes[v]
        c, s = math.cos(self.yaws[v]), math.sin(self.yaws[v])
        d = np.stack([c * directions[:, 0] + s * directions[:, 1], -s * directions[:, 0] + c * directions[:, 1],
                      directions[:, 2]], 1) / self.half_sizes[v]
        if self.is_box[v]:
            with np.errstate(divide="ignore", invalid="ignore"):
                inv = 1.0 / d
                lo, hi = (-1.0 - o) * inv, (1.0 - o) * inv
            t0 = np.nanmax(np.minimum(lo, hi), axis=1)
            t1 = np.nanmin(np.maximum(lo, hi), axis=1)
            return t0, t1
        a = (d * d).sum(1)
        b = (o * d).sum(1)
        c2 = (o * o).sum(1) - 1.0
        disc = b * b - a * c2
        root = np.sqrt(np.maximum(disc, 0.0))
        t0, t1 = (-b - root) / a, (-b + root) / a
        return np.where(disc > 0, t0, np.inf), np.where(disc > 0, t1, -np.inf)

    def first_scatter(self, origins: np.ndarray, directions: np.ndarray, t_max: np.ndarray,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Where each ray scatters first, before ``t_max`` (its solid hit).

        Each crossed volume draws an exponential free path from the ray's entry point; the ray scatters there
        if that lies before its exit and before ``t_max``, and in the nearest such volume.

        Args:
            origins: (R, 3) metres.
            directions: (R, 3) unit.
            t_max: (R,) metres (inf: no solid hit).
            rng: free paths.

        Returns:
            ``(t (R,) metres, inf where no scatter; volume (R,) int64 index, -1 where none)``.
        """
        best_t = np.full(len(origins), np.inf)
        best_v = np.full(len(origins), -1, dtype=np.int64)
        for v in range(len(self)):
            t0, t1 = self.entry_exit(origins, directions, v)
            t0 = np.maximum(t0, 0.0)
            crossing = np.flatnonzero(t0 < np.minimum(t1, t_max))
            if not len(crossing):
                continue
            t = t0[crossing] + rng.exponential(1.0 / self.sigma[v], len(crossing))
            ok = (t < t1[crossing]) & (t < t_max[crossing]) & (t < best_t[crossing])
            best_t[crossing[ok]] = t[ok]
            best_v[crossing[ok]] = v
        return best_t, best_v


@dataclass
class ScanResult:
    """One revolution's returns.

    Attributes:
        points: (P, 4) float32 ``x, y, z`` metres, intensity in [0, 1].
        face: (P,) int64 mesh triangle that returned each point, -1 for scatter-volume returns.
        volume: (P,) int64 scatter volume that returned each point, -1 for mesh returns.
        probability: (P,) float64 the :func:`return_probability` each return survived (for tests).
        rays: (R, 6) float32 every ray cast (origin, direction), before drop.
        first_face: (R,) int64 triangle each ray hit first (glass panes included), -1 for none; for occlusion.
    """

    points: np.ndarray
    face: np.ndarray
    volume: np.ndarray
    probability: np.ndarray
    rays: np.ndarray
    first_face: np.ndarray


def _cast(scene: o3d.t.geometry.RaycastingScene, origins: np.ndarray, directions: np.ndarray,
          nthreads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rays = np.concatenate([origins, directions], 1).astype(np.float32)
    hit = scene.cast_rays(o3d.core.Tensor(rays), nthreads=nthreads)
    t = hit["t_hit"].numpy().astype(np.float64)
    face = np.where(np.isfinite(t), hit["primitive_ids"].numpy().astype(np.int64), -1)
    return t, face, hit["primitive_normals"].numpy().astype(np.float64)


def scan(scene: o3d.t.geometry.RaycastingScene, reflectance: np.ndarray, material: np.ndarray,
         volumes: ScatterVolumes, lidar: LidarSpec, rng: np.random.Generator, nthreads: int = 0) -> ScanResult:
    """One revolution of the sensor at the origin (see the module docstring for each effect).

    Args:
        scene: the scene mesh, loaded into a RaycastingScene.
        reflectance: (F,) base reflectance of each triangle.
        material: (F,) :data:`OPAQUE` or :data:`GLASS` per triangle.
        volumes: scatter volumes (foliage, wire mesh).
        lidar: the sensor.
        rng: every random draw of the frame.
        nthreads: Open3D threads (0: all cores).

    Returns:
        The :class:`ScanResult`.
    """
    directions = lidar.directions(rng)
    n = len(directions)
    origins = np.zeros_like(directions)
    t, face, normal = _cast(scene, origins, directions, nthreads)
    first_face = face.copy()

    # Glass: transmit (cast on from behind the pane), reflect, or lose the ray.
    glass = np.flatnonzero((face >= 0) & (material[np.maximum(face, 0)] == GLASS))
    fate = rng.random(len(glass))
    through = glass[fate < lidar.glass_transmit]
    lost_glass = glass[fate >= lidar.glass_transmit + lidar.glass_reflect]
    if len(through):
        start = t[through] + 0.05  # past the pane (panes are at most 2 cm thick)
        t2, f2, n2 = _cast(scene, directions[through] * start[:, None], directions[through], nthreads)
        t[through], face[through], normal[through] = start + t2, f2, n2
    t[lost_glass], face[lost_glass] = np.inf, -1

    # Mixed pixels at depth edges: the footprint's two halves, across the scan direction.
    half = np.deg2rad(lidar.divergence_deg) / 2
    azimuth = np.arctan2(directions[:, 1], directions[:, 0])
    elevation = np.arcsin(np.clip(directions[:, 2], -1, 1))
    sides = [_cast(scene, origins, _unit_directions(elevation, azimuth + s * half), nthreads)[0] for s in (-1, 1)]
    gaps = np.stack([np.where(np.isfinite(side), side, lidar.max_range) for side in sides], 1)
    t_here = np.where(np.isfinite(t), t, lidar.max_range)
    far_side = np.argmax(np.abs(gaps - t_here[:, None]), 1)
    other = gaps[np.arange(n), far_side]
    mixed = (np.isfinite(t) & (np.abs(other - t_here) > lidar.mixed_min_gap)
             & (other < lidar.max_range) & (rng.random(n) < lidar.mixed_prob))
    t = np.where(mixed, t_here + rng.random(n) * (other - t_here), t)

    # Foliage and wire mesh: the first scatter before the solid hit.
    t_solid = np.where(t < lidar.max_range, t, np.inf)
    t_vol, vol = volumes.first_scatter(origins, directions, t_solid, rng) if len(volumes) else (
        np.full(n, np.inf), np.full(n, -1, dtype=np.int64))
    from_volume = t_vol < t_solid
    t = np.where(from_volume, t_vol, t_solid)
    face = np.where(from_volume, -1, face)
    vol = np.where(from_volume, vol, -1)

    hit = np.isfinite(t) & (t < lidar.max_range)
    rho = np.where(from_volume, volumes.reflectance[np.maximum(vol, 0)] if len(volumes) else 0.0,
                   reflectance[np.maximum(face, 0)])
    cos = np.where(from_volume, rng.uniform(0.2, 1.0, n), np.abs((normal * directions).sum(1)))
    cos = np.nan_to_num(cos, nan=1.0)
    distance = np.where(hit, t, 1.0)
    probability = return_probability(rho, cos, distance, lidar)
    keep = hit & (rng.random(n) < probability) & (rng.random(n) >= rng.uniform(*lidar.dropout))
    distance = distance[keep] + lidar.range_noise * rng.standard_normal(int(keep.sum()))
    values = intensity(rho[keep], cos[keep], distance, lidar, rng)
    points = np.concatenate([directions[keep] * distance[:, None], values[:, None]], 1).astype(np.float32)
    return ScanResult(points, face[keep], vol[keep], probability[keep],
                      np.concatenate([origins, directions], 1).astype(np.float32), first_face)
