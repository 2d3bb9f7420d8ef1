"""Synthetic depth-completion data: textured procedural rooms and streets, RGB + exact depth, KITTI DC layout.

Each frame is a procedural scene built from boxes, cylinders and spheres and ray-cast with Open3D's
``RaycastingScene``, one ray through each pixel centre (pixel column i, row j at (i + 0.5, j + 0.5), as
:meth:`geo3d.types.DepthMap.to_points`). The camera-frame ray direction is ``K^-1 (u, v, 1)`` with unit z, so
Open3D's hit distance is the z-depth along the optical axis (not the ray length). Camera: OpenCV convention
(x right, y down, z forward); world: metres, z up.

Scene kinds (:data:`KINDS`):

- ``indoor``: a room 4-8 x 3.5-6.5 m, 2.5-3.2 m high (floor, four walls, ceiling), pictures / a door / a
  window on the walls, up to 12 pieces of furniture, most in front of the camera (tables on legs, cabinets
  against the walls, sofas, crates, columns, stools, lamps, balls); the camera at 1.3-1.7 m height, 0.8-1.5 m
  from one wall, looking across the room (+-35 degrees, level to 25 degrees down), horizontal field of view
  60-70 degrees. Every ray hits (depth about 0.5-10 m).
- ``outdoor``: a street along world x (road 7-14 m wide, raised pavements, lawn strips), building facades
  with windows along both sides (varying lengths, setbacks, heights, gaps), sometimes a building across the
  far end, 3-10 cars (a body, a narrower cabin and four wheels) parked or in the lanes, poles with arms or
  signs, trees; the camera 1.6-1.8 m above the road looking down the street, horizontal field of view
  ``OUTDOOR_FOV_DEG`` (KITTI: about 80 degrees). Sky pixels and surfaces beyond ``MAX_DEPTH`` have no depth.

Colour: every object has a procedural albedo that varies over its surface (3D checker, stripes, value noise,
facade windows; computed from the world hit position, so detail does not depend on the mesh) with its own
base colours, times a fine multiplicative grain. Shading is Lambertian from a light direction (outdoor: a sun
with ray-cast shadows) plus ambient and a weak light from the camera, distant surfaces fade into the sky
colour (haze), and the sky is a vertical gradient. So depth edges usually coincide with colour edges, while
textures, shadows and thin decorations (lane markings, pictures) also make colour edges inside surfaces.
Images get a little Gaussian noise (``IMAGE_NOISE``).

Files under ``OUT`` (KITTI depth-completion style; each written atomically):

- ``image/NNNNNN.png``: (H, W, 3) uint8 RGB.
- ``groundtruth/NNNNNN.png``: uint16, metres * 256, 0 = missing (sky, or beyond ``MAX_DEPTH``).
- ``intrinsics/NNNNNN.txt``: 3x3 K in pixels, whitespace-separated rows (fx = fy, principal point at the
  image centre).
- ``scene.json`` (written last): frames, seed, width, height, kind, per-frame ``kinds``, ``max_depth``,
  ``depth_scale``.
- ``.synth_depth.json``: the generation parameters, written first; a folder made with other parameters is
  refused, so a resumed run never mixes frames of two datasets.

Frame i is a pure function of ``(seed, i, width, height, kind)`` (its own ``SeedSequence(seed).spawn`` child;
with ``mixed`` the child's first draw picks indoor or outdoor), so the same seed writes identical bytes and an
interrupted run resumes by skipping frames whose three files exist.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import open3d as o3d
import trimesh
from PIL import Image
from tqdm import tqdm

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_path, atomic_write_text, claim_folder
from geo3d.io.depth_png import write_depth_png

KINDS = ("indoor", "outdoor", "mixed")
MAX_DEPTH = 80.0  # metres; farther surfaces (and the sky) are written as 0 = missing
DEPTH_SCALE = 256.0  # depth PNG codes per metre (KITTI depth completion)
OUTDOOR_FOV_DEG = 80.0  # horizontal field of view of outdoor frames (KITTI's left colour camera: about 81)
INDOOR_FOV_DEG = (60.0, 70.0)  # indoor horizontal field of view, drawn uniformly per frame
IMAGE_NOISE = 1.5  # standard deviation of the Gaussian image noise, in 8-bit levels
GRAIN_SCALE = 0.15  # metres, cell size of the fine multiplicative albedo grain
_CLAIM = ".synth_depth.json"
_VERSION = 1


# ---------------------------------------------------------------------------------------------- textures

def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: int) -> np.ndarray:
    """Pseudo-random values in [0, 1) for integer lattice points (arrays of one shape), fixed by ``seed``."""
    h = (ix.astype(np.uint64) * np.uint64(0x9E3779B185EBCA87)) ^ (iy.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F))
    h ^= iz.astype(np.uint64) * np.uint64(0x165667B19E3779F9)
    h ^= np.uint64((seed * 0x2545F4914F6CDD1D) % 2**64)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(32)
    return (h >> np.uint64(11)).astype(np.float64) / 2.0**53


def value_noise(points: np.ndarray, seed: int) -> np.ndarray:
    """Smooth 3D value noise: random values on the integer lattice, interpolated with a smoothstep.

    Args:
        points: (N, 3) float, lattice units.
        seed: picks the lattice values.

    Returns:
        (N,) float64 in [0, 1).
    """
    cell = np.floor(points)
    frac = points - cell
    smooth = frac * frac * (3.0 - 2.0 * frac)
    cell = cell.astype(np.int64)
    total = np.zeros(len(points))
    for corner in range(8):
        offset = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        weight = np.prod(np.where(offset == 1, smooth, 1.0 - smooth), axis=1)
        c = cell + offset
        total += weight * _hash01(c[:, 0], c[:, 1], c[:, 2], seed)
    return total


def _fbm(points: np.ndarray, seed: int) -> np.ndarray:
    """Three octaves of :func:`value_noise` (weights 0.55, 0.3, 0.15): (N, 3) -> (N,) float64 in [0, 1)."""
    return sum(w * value_noise(points * 2.0**k, seed + k) for k, w in enumerate((0.55, 0.3, 0.15)))


@dataclass(frozen=True)
class Texture:
    """A procedural albedo of the world position: two colours mixed by a pattern, times a fine grain.

    Attributes:
        kind: ``"checker"`` (3D cubes of side ``period``), ``"stripes"`` (slabs of width ``period`` across
            ``axis``), ``"noise"`` (value noise with features about ``period`` across) or ``"windows"``
            (facade windows: a grid ``period`` wide along x + y and 1.15 ``period`` high, window colour 1).
        colors: (2, 3) float64 albedos in [0, 1].
        period: metres.
        axis: (3,) unit vector (``stripes``).
        offset: (3,) pattern phase, in periods.
        grain: amplitude of the multiplicative value-noise grain (cells ``GRAIN_SCALE`` metres), 0 = none.
        seed: noise lattice seed.
    """

    kind: str
    colors: np.ndarray
    period: float = 0.5
    axis: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))
    grain: float = 0.0
    seed: int = 0

    def albedo(self, points: np.ndarray) -> np.ndarray:
        """Albedo at ``points`` (N, 3) float world metres -> (N, 3) float64 in [0, 1]."""
        points = np.asarray(points, np.float64)
        q = points / self.period + self.offset
        if self.kind == "checker":
            mix = np.floor(q).sum(1) % 2
        elif self.kind == "stripes":
            mix = np.floor(q @ self.axis) % 2
        elif self.kind == "noise":
            mix = np.clip((_fbm(q, self.seed) - 0.5) * 2.2 + 0.5, 0.0, 1.0)
        elif self.kind == "windows":
            along = (q[:, 0] + q[:, 1]) % 1.0
            up = (points[:, 2] / (1.15 * self.period) + self.offset[2]) % 1.0
            mix = ((along > 0.25) & (along < 0.75) & (up > 0.3) & (up < 0.8)).astype(np.float64)
        else:
            raise ValueError(f"Texture.kind: unknown {self.kind!r}")
        albedo = self.colors[0] + mix[:, None] * (self.colors[1] - self.colors[0])
        if self.grain > 0:
            grain = 2.0 * value_noise(points / GRAIN_SCALE, self.seed + 7) - 1.0
            albedo = albedo * (1.0 + self.grain * grain)[:, None]
        return np.clip(albedo, 0.0, 1.0)


@dataclass
class Surface:
    """One object of a scene: a triangle mesh in world metres and its texture.

    Attributes:
        vertices: (V, 3) float64 metres.
        faces: (F, 3) int64 vertex indices (any orientation: shading turns normals to the camera).
        texture: its albedo.
    """

    vertices: np.ndarray
    faces: np.ndarray
    texture: Texture


@dataclass(frozen=True)
class Lighting:
    """How a scene is lit and what the sky looks like.

    Attributes:
        direction: (3,) world vector towards the light (normalised when used).
        strength: weight of the Lambertian term max(0, n . direction).
        ambient: constant light.
        fill: weight of |n . view|, a light at the camera.
        shadows: cast shadow rays towards ``direction`` (an occluded point gets no Lambertian term).
        sky_horizon, sky_zenith: (3,) sky colours at the horizon and straight up (rays that miss).
        haze: metres; colour fades to the horizon colour as 1 - exp(-t / haze) with hit distance t (0: off).
    """

    direction: tuple[float, float, float] = (0.3, -0.4, 0.85)
    strength: float = 0.6
    ambient: float = 0.3
    fill: float = 0.1
    shadows: bool = False
    sky_horizon: tuple[float, float, float] = (0.85, 0.88, 0.92)
    sky_zenith: tuple[float, float, float] = (0.35, 0.55, 0.85)
    haze: float = 0.0


class _Palette:
    """Distinct base colours: hues a golden-ratio step apart from a random start; each call gives a pair."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.hue = rng.uniform()

    def pair(self, saturation=(0.25, 0.8), value=(0.35, 0.9), contrast=(0.15, 0.4)) -> np.ndarray:
        """(2, 3) float64 colours: a base colour and a lighter or darker shade of a nearby hue."""
        rng = self.rng
        self.hue = (self.hue + 0.618034) % 1.0
        s, v = rng.uniform(*saturation), rng.uniform(*value)
        dv = rng.uniform(*contrast) * (1 if v < 0.6 else -1)
        first = _hsv(self.hue, s, v)
        second = _hsv((self.hue + rng.uniform(-0.08, 0.08)) % 1.0, np.clip(s + rng.uniform(-0.2, 0.2), 0, 1),
                      np.clip(v + dv, 0.05, 1.0))
        return np.stack([first, second])

    def texture(self, kind: str, period: float, colors: np.ndarray | None = None, axis=(1.0, 0.0, 0.0),
                grain: float | None = None) -> Texture:
        """A texture of ``kind`` with random phase, seed and grain (0.04-0.15) and ``colors`` or a new pair."""
        rng = self.rng
        return Texture(kind, self.pair() if colors is None else np.asarray(colors, np.float64), period,
                       np.asarray(axis, np.float64) / np.linalg.norm(axis), rng.uniform(0, 1, 3),
                       rng.uniform(0.04, 0.15) if grain is None else grain, int(rng.integers(2**31)))

    def any_texture(self, scale: float) -> Texture:
        """A random texture kind (checker, stripes along x, y or z, or noise) with period ~``scale`` metres."""
        kind = ("checker", "stripes", "noise")[self.rng.integers(3)]
        axis = np.eye(3)[self.rng.integers(3)]
        return self.texture(kind, scale * self.rng.uniform(0.6, 1.6), axis=axis)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV (each in [0, 1]) to RGB (3,) float64."""
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


# -------------------------------------------------------------------------------------------- primitives

_BOX_FACES = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                       [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
_BOX_CORNERS = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])


@cache
def _unit_cylinder(sections: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Radius 1, height 1 along z, centred at the origin, capped."""
    mesh = trimesh.creation.cylinder(radius=1.0, height=1.0, sections=sections)
    return _frozen(mesh.vertices, mesh.faces)


@cache
def _unit_sphere(subdivisions: int = 2) -> tuple[np.ndarray, np.ndarray]:
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0)
    return _frozen(mesh.vertices, mesh.faces)


def _frozen(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    """Read-only float64 / int64 copies (cached shapes are shared by every surface built from them)."""
    vertices, faces = np.array(vertices, np.float64), np.array(faces, np.int64)
    vertices.flags.writeable = faces.flags.writeable = False
    return vertices, faces


def _rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _place(unit: tuple[np.ndarray, np.ndarray], size, centre, texture: Texture, yaw: float = 0.0,
           pivot=None) -> Surface:
    """A unit primitive scaled by ``size`` (3,), turned by ``yaw`` about z through ``pivot`` (default: its own
    centre) and moved to ``centre`` (3,), metres."""
    vertices, faces = unit
    local = vertices * np.asarray(size, np.float64) + np.asarray(centre, np.float64)
    pivot = np.asarray(centre if pivot is None else pivot, np.float64)
    return Surface((local - pivot) @ _rot_z(yaw).T + pivot, faces, texture)


def box(lo, hi, texture: Texture, yaw: float = 0.0, pivot=None) -> Surface:
    """A box from corner ``lo`` (3,) to ``hi`` (3,) metres (axis-aligned before the optional ``yaw`` turn)."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    return _place((_BOX_CORNERS, _BOX_FACES), hi - lo, (lo + hi) / 2, texture, yaw, pivot)


def cylinder(centre, radius: float, length: float, texture: Texture, axis: str = "z", yaw: float = 0.0,
             pivot=None) -> Surface:
    """A capped cylinder of ``radius`` and ``length`` metres along world ``axis`` (x, y or z) at ``centre``."""
    vertices, faces = _unit_cylinder()
    if axis == "y":
        vertices = vertices[:, [0, 2, 1]]
    elif axis == "x":
        vertices = vertices[:, [2, 1, 0]]
    size = {"x": (length, radius, radius), "y": (radius, length, radius), "z": (radius, radius, length)}[axis]
    return _place((vertices, faces), size, centre, texture, yaw, pivot)


def ellipsoid(centre, radii, texture: Texture) -> Surface:
    """An icosphere scaled to semi-axes ``radii`` (3,) metres at ``centre``."""
    return _place(_unit_sphere(), np.broadcast_to(np.asarray(radii, np.float64), (3,)), centre, texture)


def plane_z(x_range, y_range, z: float, texture: Texture) -> Surface:
    """A horizontal rectangle (two triangles) at height ``z`` metres."""
    (x0, x1), (y0, y1) = x_range, y_range
    vertices = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], np.float64)
    return Surface(vertices, np.array([[0, 1, 2], [0, 2, 3]]), texture)


# --------------------------------------------------------------------------------------------- rendering

def camera_matrix(width: int, height: int, fov_x_deg: float) -> np.ndarray:
    """(3, 3) float64 pinhole K in pixels: fx = fy from the horizontal field of view, principal point at the
    image centre (W / 2, H / 2)."""
    f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def look_pose(position, yaw: float, pitch: float) -> np.ndarray:
    """(4, 4) float64 OpenCV camera-to-world pose at ``position`` (3,) metres (world z up), looking along
    heading ``yaw`` (radians from world x towards y) tilted up by ``pitch`` radians, no roll."""
    forward = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], 1)
    pose[:3, 3] = position
    return pose


def _sky(dirs: np.ndarray, lighting: Lighting) -> np.ndarray:
    """Sky colour for world ray directions (N, 3): horizon to zenith by the ray's elevation."""
    up = np.clip(dirs[:, 2] / np.linalg.norm(dirs, axis=1), 0.0, 1.0) ** 0.6
    return np.asarray(lighting.sky_horizon) + up[:, None] * (np.asarray(lighting.sky_zenith) -
                                                              np.asarray(lighting.sky_horizon))


def render_view(surfaces: list[Surface], cam_to_world: np.ndarray, K: np.ndarray, width: int, height: int,
                lighting: Lighting = Lighting(), max_depth: float = MAX_DEPTH,
                nthreads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast ``surfaces`` from one camera, one ray through each pixel centre.

    The ray of pixel (row v, column u) has camera direction ((u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1): with
    unit z, Open3D's hit distance (in units of the direction's length) is the z-depth.

    Args:
        surfaces: the scene's objects (world metres).
        cam_to_world: (4, 4) float OpenCV camera-to-world pose, metres.
        K: (3, 3) float intrinsics, pixels.
        width, height: image size, pixels.
        lighting: light, sky and haze.
        max_depth: metres; farther hits are missing in the depth (still coloured in the image).
        nthreads: Open3D threads (0: all cores).

    Returns:
        ``rgb`` (H, W, 3) float64 in [0, 1] (sky where nothing is hit) and ``depth`` (H, W) float32 z-depth,
        metres, 0 where nothing is hit within ``max_depth``.
    """
    pose = np.asarray(cam_to_world, np.float64)
    K = np.asarray(K, np.float64)
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    cam_dirs = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    dirs = np.einsum("nj,ij->ni", cam_dirs, pose[:3, :3])  # not BLAS: its threads fight Open3D's
    origin = pose[:3, 3]

    sizes = [len(s.vertices) for s in surfaces]
    vertices = np.concatenate([s.vertices for s in surfaces])
    faces = np.concatenate([s.faces + base for s, base in zip(surfaces, np.cumsum([0, *sizes[:-1]]))])
    owner = np.concatenate([np.full(len(s.faces), i) for i, s in enumerate(surfaces)])
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)), o3d.core.Tensor(faces.astype(np.uint32)))
    rays = np.concatenate([np.broadcast_to(origin, dirs.shape), dirs], 1).astype(np.float32)
    hit = scene.cast_rays(o3d.core.Tensor(rays), nthreads=nthreads)
    t = hit["t_hit"].numpy().astype(np.float64)
    ok = np.isfinite(t)

    rgb = _sky(dirs, lighting)
    points = origin + t[ok, None] * dirs[ok]
    which = owner[hit["primitive_ids"].numpy()[ok]]
    albedo = np.zeros((len(points), 3))
    for i in np.unique(which):
        mine = which == i
        albedo[mine] = surfaces[i].texture.albedo(points[mine])
    normals = hit["primitive_normals"].numpy()[ok].astype(np.float64)
    view = dirs[ok] / np.linalg.norm(dirs[ok], axis=1, keepdims=True)
    normals = np.where((np.sum(normals * view, 1) > 0)[:, None], -normals, normals)  # face the camera
    light = np.asarray(lighting.direction, np.float64)
    light = light / np.linalg.norm(light)
    lambert = np.clip(normals @ light, 0.0, None)
    if lighting.shadows and len(points):
        shadow_rays = np.concatenate([points + 1e-3 * normals, np.broadcast_to(light, points.shape)], 1)
        occluded = scene.test_occlusions(o3d.core.Tensor(shadow_rays.astype(np.float32)), tnear=1e-3,
                                         nthreads=nthreads).numpy()
        lambert = np.where(occluded, 0.0, lambert)
    shade = lighting.ambient + lighting.strength * lambert + lighting.fill * np.abs(np.sum(normals * view, 1))
    color = albedo * shade[:, None]
    if lighting.haze > 0:
        fade = 1.0 - np.exp(-t[ok] * np.linalg.norm(dirs[ok], axis=1) / lighting.haze)
        color += fade[:, None] * (np.asarray(lighting.sky_horizon) - color)
    rgb[ok] = color
    depth = np.where(ok & (t <= max_depth), t, 0.0).astype(np.float32)
    return np.clip(rgb, 0.0, 1.0).reshape(height, width, 3), depth.reshape(height, width)


# ------------------------------------------------------------------------------------------------ indoor

def _clear(xy: np.ndarray, radius: float, taken: list[tuple[np.ndarray, float]]) -> bool:
    """True when a disc at ``xy`` of ``radius`` metres keeps out of every (centre, radius) disc in ``taken``."""
    return all(np.linalg.norm(xy - c) >= radius + r for c, r in taken)


def indoor_scene(rng: np.random.Generator) -> tuple[list[Surface], Lighting, np.ndarray, float]:
    """A random furnished room (see the module docstring).

    Returns:
        surfaces, lighting, the camera's (4, 4) float64 OpenCV camera-to-world pose, and its horizontal field
        of view in degrees.
    """
    pal = _Palette(rng)
    lx, ly, lz = rng.uniform(4.0, 8.0) / 2, rng.uniform(3.5, 6.5) / 2, rng.uniform(2.5, 3.2)
    floor_tex = (pal.texture("checker", rng.uniform(0.3, 0.7)) if rng.uniform() < 0.5 else
                 pal.texture("stripes", rng.uniform(0.12, 0.25), axis=np.eye(3)[rng.integers(2)], grain=0.2))
    wall_tex = (pal.texture("noise", rng.uniform(0.3, 1.5), colors=pal.pair(saturation=(0.05, 0.4),
                                                                            value=(0.6, 0.9), contrast=(0.05, 0.15)))
                if rng.uniform() < 0.5 else pal.texture("stripes", rng.uniform(0.05, 0.3),
                                                        axis=(1.0, 1.0, 0.0), grain=0.05))
    ceiling_tex = pal.texture("noise", 0.8, colors=pal.pair(saturation=(0.0, 0.1), value=(0.8, 0.95),
                                                            contrast=(0.03, 0.08)))
    t = 0.1  # wall thickness; walls overlap at the corners, so there are no cracks
    surfaces = [
        box((-lx - t, -ly - t, -t), (lx + t, ly + t, 0.0), floor_tex),
        box((-lx - t, -ly - t, lz), (lx + t, ly + t, lz + t), ceiling_tex),
        box((-lx - t, -ly - t, 0.0), (-lx, ly + t, lz), wall_tex),
        box((lx, -ly - t, 0.0), (lx + t, ly + t, lz), wall_tex),
        box((-lx, -ly - t, 0.0), (lx, -ly, lz), wall_tex),
        box((-lx, ly, 0.0), (lx, ly + t, lz), wall_tex),
    ]

    def on_wall(along: float, width: float, z0: float, z1: float, depth: float, wall: int, texture: Texture) -> Surface:
        """A flat box against wall 0..3 (x = -lx, x = lx, y = -ly, y = ly) at ``along`` on it."""
        if wall < 2:
            x = -lx if wall == 0 else lx - depth
            return box((x, along - width / 2, z0), (x + depth, along + width / 2, z1), texture)
        y = -ly if wall == 2 else ly - depth
        return box((along - width / 2, y, z0), (along + width / 2, y + depth, z1), texture)

    def wall_span(wall: int) -> float:
        return ly if wall < 2 else lx

    for _ in range(rng.integers(1, 5)):  # pictures, a door, a window
        wall = int(rng.integers(4))
        what = rng.choice(["picture", "picture", "door", "window"])
        if what == "door":
            w, z0, z1, d = 0.9, 0.0, 2.05, 0.04
            tex = pal.texture("stripes", rng.uniform(0.1, 0.3), axis=(0.0, 0.0, 1.0))
        elif what == "window":
            w, z0 = rng.uniform(0.8, 1.6), rng.uniform(0.8, 1.0)
            z1, d = min(z0 + rng.uniform(1.0, 1.4), lz - 0.2), 0.03
            tex = pal.texture("noise", 0.6, colors=pal.pair(saturation=(0.1, 0.4), value=(0.75, 0.95)))
        else:
            w, z0 = rng.uniform(0.3, 1.2), rng.uniform(1.1, 1.6)
            z1, d = z0 + rng.uniform(0.3, 0.9), rng.uniform(0.02, 0.05)
            tex = pal.any_texture(rng.uniform(0.05, 0.3))
        along = rng.uniform(-wall_span(wall) + w / 2 + 0.1, wall_span(wall) - w / 2 - 0.1)
        surfaces.append(on_wall(along, w, z0, z1, d, wall, tex))

    # the camera stands 0.8-1.5 m from one wall and looks across the room (+-35 degrees)
    axis, sign = int(rng.integers(2)), rng.choice([-1.0, 1.0])
    half = (lx, ly)
    camera_xy = np.zeros(2)
    camera_xy[axis] = -sign * (half[axis] - rng.uniform(0.8, 1.5))
    camera_xy[1 - axis] = rng.uniform(-half[1 - axis] + 0.8, half[1 - axis] - 0.8)
    heading = (0.0 if sign > 0 else np.pi) if axis == 0 else sign * np.pi / 2
    heading += math.radians(rng.uniform(-35.0, 35.0))
    taken: list[tuple[np.ndarray, float]] = [(camera_xy, 0.5)]
    for _ in range(rng.integers(6, 13)):
        kind = rng.choice(["table", "cabinet", "sofa", "crate", "column", "stool", "lamp", "ball"])
        for _try in range(25):
            yaw = rng.uniform(0, 2 * np.pi)
            if kind == "cabinet":
                wall = int(rng.integers(4))
                w, d, h = rng.uniform(0.5, 1.8), rng.uniform(0.35, 0.6), rng.uniform(0.8, min(2.2, lz - 0.1))
                if w / 2 + 0.05 > wall_span(wall):
                    continue
                along = rng.uniform(-wall_span(wall) + w / 2, wall_span(wall) - w / 2)
                piece = [on_wall(along, w, 0.0, h, d, wall, pal.any_texture(rng.uniform(0.15, 0.5)))]
                b = piece[0].vertices
                xy, radius = (b.min(0)[:2] + b.max(0)[:2]) / 2, 0.5 * float(np.hypot(*np.ptp(b[:, :2], 0)))
            else:
                size = {"table": 1.0, "sofa": 1.1, "crate": 0.5, "column": 0.3, "stool": 0.3, "lamp": 0.3,
                        "ball": 0.35}[kind]
                if rng.uniform() < 0.7:  # in front of the camera
                    angle, distance = heading + rng.uniform(-0.7, 0.7), rng.uniform(1.2, 6.0)
                    xy = camera_xy + distance * np.array([math.cos(angle), math.sin(angle)])
                    if abs(xy[0]) > lx - size or abs(xy[1]) > ly - size:
                        continue
                else:
                    xy = np.array([rng.uniform(-lx + size, lx - size), rng.uniform(-ly + size, ly - size)])
                radius = size
                piece = _furniture(kind, xy, yaw, lz, rng, pal)
            if _clear(xy, radius, taken):
                taken.append((xy, radius))
                surfaces += piece
                break

    position = np.array([*camera_xy, rng.uniform(1.3, 1.7)])
    pose = look_pose(position, heading, math.radians(rng.uniform(-25.0, 0.0)))
    lighting = Lighting(direction=(rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0), 0.8),
                        strength=rng.uniform(0.35, 0.55), ambient=rng.uniform(0.35, 0.5), fill=rng.uniform(0.1, 0.25))
    return surfaces, lighting, pose, float(rng.uniform(*INDOOR_FOV_DEG))


def _furniture(kind: str, xy: np.ndarray, yaw: float, ceiling: float, rng: np.random.Generator,
               pal: _Palette) -> list[Surface]:
    """A free-standing piece of furniture at floor position ``xy`` (2,), turned by ``yaw`` about its centre."""
    x, y = xy
    pivot = (x, y, 0.0)
    if kind == "table":
        lx, ly, h = rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.5), rng.uniform(0.7, 0.78)
        top, legs = pal.any_texture(rng.uniform(0.1, 0.4)), pal.any_texture(0.1)
        parts = [box((x - lx, y - ly, h - 0.04), (x + lx, y + ly, h), top, yaw, pivot)]
        for sx in (-1, 1):
            for sy in (-1, 1):
                cx, cy = x + sx * (lx - 0.06), y + sy * (ly - 0.06)
                parts.append(box((cx - 0.025, cy - 0.025, 0.0), (cx + 0.025, cy + 0.025, h - 0.04), legs, yaw, pivot))
        return parts
    if kind == "sofa":
        lx, ly = rng.uniform(0.7, 1.1), 0.45
        tex = pal.any_texture(rng.uniform(0.1, 0.4))
        return [box((x - lx, y - ly, 0.0), (x + lx, y + ly, 0.45), tex, yaw, pivot),
                box((x - lx, y + ly - 0.2, 0.45), (x + lx, y + ly, 0.9), tex, yaw, pivot),
                box((x - lx, y - ly, 0.45), (x - lx + 0.18, y + ly - 0.2, 0.65), tex, yaw, pivot),
                box((x + lx - 0.18, y - ly, 0.45), (x + lx, y + ly - 0.2, 0.65), tex, yaw, pivot)]
    if kind == "crate":
        s = rng.uniform(0.25, 0.45, 3)
        return [box((x - s[0], y - s[1], 0.0), (x + s[0], y + s[1], 2 * s[2]), pal.any_texture(0.2), yaw, pivot)]
    if kind == "column":
        r = rng.uniform(0.12, 0.3)
        return [cylinder((x, y, ceiling / 2), r, ceiling, pal.texture("stripes", rng.uniform(0.1, 0.4),
                                                                       axis=(0.0, 0.0, 1.0)))]
    if kind == "stool":
        r, h = rng.uniform(0.15, 0.3), rng.uniform(0.4, 0.8)
        return [cylinder((x, y, h / 2), r, h, pal.any_texture(0.15))]
    if kind == "lamp":
        h, r = rng.uniform(1.2, 1.8), rng.uniform(0.15, 0.25)
        return [cylinder((x, y, h / 2), 0.02, h, pal.texture("noise", 0.2)),
                cylinder((x, y, h + 0.05), r, 0.3, pal.texture("noise", 0.3))]
    r = rng.uniform(0.1, 0.35)  # ball
    return [ellipsoid((x, y, r), r, pal.any_texture(r))]


# ----------------------------------------------------------------------------------------------- outdoor

def outdoor_scene(rng: np.random.Generator) -> tuple[list[Surface], Lighting, np.ndarray, float]:
    """A random street scene (see the module docstring).

    Returns:
        surfaces, lighting (sun with shadows, haze, sky), the camera's (4, 4) float64 OpenCV camera-to-world
        pose, and its horizontal field of view in degrees.
    """
    pal = _Palette(rng)
    hw, sw = rng.uniform(3.5, 7.0), rng.uniform(2.0, 4.0)  # half road width, pavement width
    x0, x1 = -20.0, 300.0
    grey = pal.pair(saturation=(0.0, 0.08), value=(0.25, 0.4), contrast=(0.05, 0.12))
    surfaces = [plane_z((x0, x1), (-200.0, 200.0), 0.0, pal.texture("noise", rng.uniform(0.3, 1.0), colors=grey,
                                                                    grain=0.15))]
    paint = np.array([[0.9, 0.9, 0.85], [0.95, 0.95, 0.9]])
    dash, gap = rng.uniform(2.0, 4.0), rng.uniform(4.0, 8.0)
    for x in np.arange(rng.uniform(0, dash + gap), 150.0, dash + gap):  # dashed centre line
        surfaces.append(box((x, -0.07, 0.0), (x + dash, 0.07, 0.01), pal.texture("noise", 0.3, colors=paint)))
    for side in (-1, 1):
        pave = pal.texture("checker", rng.uniform(0.3, 0.6), colors=pal.pair(saturation=(0.0, 0.2),
                                                                            value=(0.45, 0.7)))
        lo, hi = sorted((side * hw, side * (hw + sw)))
        surfaces.append(box((x0, lo, 0.0), (x1, hi, 0.15), pave))
        lawn = pal.texture("noise", rng.uniform(0.3, 1.0), colors=pal.pair(saturation=(0.3, 0.7), value=(0.25, 0.5)))
        lawn = Texture(lawn.kind, np.stack([_hsv(rng.uniform(0.17, 0.33), 0.5, 0.35), _hsv(0.1, 0.4, 0.4)]),
                       lawn.period, lawn.axis, lawn.offset, lawn.grain, lawn.seed)
        lo, hi = sorted((side * (hw + sw), side * 200.0))
        surfaces.append(box((x0, lo, 0.0), (x1, hi, 0.05), lawn))
        surfaces += _facades(side, hw + sw, rng, pal)
    if rng.uniform() < 0.5:  # a building across the far end
        far = rng.uniform(70.0, 160.0)
        surfaces.append(box((far, -120.0, 0.0), (far + 15.0, 120.0, rng.uniform(8.0, 30.0)), _facade_texture(rng, pal)))

    camera_y = rng.uniform(-0.5, 0.5) * hw
    surfaces += _cars(rng, pal, hw, camera_y)
    surfaces += _street_furniture(rng, pal, hw, sw)

    position = np.array([0.0, camera_y, rng.uniform(1.6, 1.8)])
    pose = look_pose(position, math.radians(rng.uniform(-8.0, 8.0)), math.radians(rng.uniform(-4.0, 1.0)))
    sun_azimuth, sun_elevation = rng.uniform(0, 2 * np.pi), math.radians(rng.uniform(25.0, 65.0))
    sun = (math.cos(sun_elevation) * math.cos(sun_azimuth), math.cos(sun_elevation) * math.sin(sun_azimuth),
           math.sin(sun_elevation))
    tint = rng.uniform(-0.05, 0.05, 3)
    lighting = Lighting(direction=sun, strength=rng.uniform(0.5, 0.7), ambient=rng.uniform(0.25, 0.4), fill=0.05,
                        shadows=True, sky_horizon=tuple(np.clip(np.array([0.85, 0.88, 0.92]) + tint, 0, 1)),
                        sky_zenith=tuple(np.clip(np.array([0.3, 0.5, 0.85]) + tint, 0, 1)),
                        haze=rng.uniform(150.0, 400.0))
    return surfaces, lighting, pose, OUTDOOR_FOV_DEG


def _facade_texture(rng: np.random.Generator, pal: _Palette) -> Texture:
    wall = pal.pair(saturation=(0.1, 0.5), value=(0.45, 0.85))[0]
    glass = _hsv(rng.uniform(0.5, 0.7), rng.uniform(0.1, 0.4), rng.uniform(0.12, 0.35))
    return pal.texture("windows", rng.uniform(2.5, 4.0), colors=np.stack([wall, glass]), grain=rng.uniform(0.05, 0.2))


def _facades(side: int, kerb: float, rng: np.random.Generator, pal: _Palette) -> list[Surface]:
    """Building blocks along one side of the street (y sign ``side``) from x = -10 to beyond 130 m, fronts
    0-4 m behind ``kerb`` (the pavement's outer edge), some gaps."""
    surfaces, x = [], -10.0 - rng.uniform(0, 10.0)
    while x < 130.0:
        length = rng.uniform(6.0, 25.0)
        if rng.uniform() < 0.15:  # a gap
            x += rng.uniform(4.0, 15.0)
            continue
        front, depth, height = kerb + rng.uniform(0.0, 4.0), rng.uniform(8.0, 15.0), rng.uniform(4.0, 25.0)
        lo, hi = sorted((side * front, side * (front + depth)))
        surfaces.append(box((x, lo, 0.0), (x + length, hi, height), _facade_texture(rng, pal)))
        x += length
    return surfaces


def _cars(rng: np.random.Generator, pal: _Palette, hw: float, camera_y: float) -> list[Surface]:
    """3-10 cars, parked at the kerbs or in the two lanes, none overlapping or within 6 m ahead of the camera."""
    lanes = (-hw + 1.1, -hw / 2, hw / 2, hw - 1.1)
    taken: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(lanes))}
    surfaces = []
    for _ in range(rng.integers(3, 11)):
        lane = int(rng.integers(len(lanes)))
        l, w = rng.uniform(3.8, 4.8), rng.uniform(1.6, 1.9)
        x = rng.uniform(3.0, 70.0)
        y = lanes[lane] + rng.uniform(-0.3, 0.3)
        near_camera = abs(y - camera_y) < w / 2 + 1.0 and x - l / 2 < 6.0
        if near_camera or any(abs(x - other) < (l + ol) / 2 + 1.0 for other, ol in taken[lane]):
            continue
        taken[lane].append((x, l))
        yaw = rng.uniform(-0.1, 0.1) + (np.pi if rng.uniform() < 0.5 else 0.0)
        surfaces += _car(rng, pal, x, y, l, w, yaw)
    return surfaces


def _car(rng: np.random.Generator, pal: _Palette, x: float, y: float, l: float, w: float,
         yaw: float) -> list[Surface]:
    """A body box on four wheels with a narrower cabin, centred at (x, y) on the road, heading ``yaw``."""
    pivot = (x, y, 0.0)
    paint = pal.pair(saturation=(0.3, 0.9), value=(0.3, 0.9), contrast=(0.05, 0.12))
    body_h, cabin_h = rng.uniform(0.55, 0.75), rng.uniform(0.45, 0.6)
    cabin_l, cabin_shift = l * rng.uniform(0.45, 0.6), rng.uniform(-0.4, 0.1)
    lift = 0.25
    forward = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    body = pal.texture("noise", rng.uniform(0.5, 1.5), colors=paint, grain=0.03)
    glass = np.stack([paint[0] * 0.4, _hsv(0.6, 0.2, 0.2)])
    cabin = pal.texture("stripes", rng.uniform(0.4, 0.8), colors=glass, axis=forward, grain=0.03)
    tyre = pal.texture("noise", 0.1, colors=np.array([[0.08, 0.08, 0.08], [0.2, 0.2, 0.2]]))
    parts = [box((x - l / 2, y - w / 2, lift), (x + l / 2, y + w / 2, lift + body_h), body, yaw, pivot),
             box((x + cabin_shift - cabin_l / 2, y - 0.45 * w, lift + body_h),
                 (x + cabin_shift + cabin_l / 2, y + 0.45 * w, lift + body_h + cabin_h), cabin, yaw, pivot)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            centre = (x + sx * (l / 2 - 0.75), y + sy * (w / 2 - 0.1), 0.32)
            parts.append(cylinder(centre, 0.32, 0.22, tyre, axis="y", yaw=yaw, pivot=pivot))
    return parts


def _street_furniture(rng: np.random.Generator, pal: _Palette, hw: float, sw: float) -> list[Surface]:
    """Poles (some with an arm over the road or a sign) and trees on the pavements."""
    surfaces = []
    metal = pal.pair(saturation=(0.0, 0.3), value=(0.3, 0.6), contrast=(0.1, 0.25))
    for side in (-1, 1):
        x = rng.uniform(2.0, 15.0)
        while x < 120.0:
            y = side * (hw + rng.uniform(0.3, 0.6))
            if rng.uniform() < 0.6:
                r, h = rng.uniform(0.05, 0.12), rng.uniform(3.0, 8.0)
                surfaces.append(cylinder((x, y, 0.15 + h / 2), r, h,
                                         pal.texture("stripes", rng.uniform(0.2, 0.5), metal, (0.0, 0.0, 1.0))))
                if rng.uniform() < 0.5:  # an arm over the road
                    arm = rng.uniform(1.0, 2.5)
                    lo, hi = sorted((y, y - side * arm))
                    surfaces.append(box((x - 0.05, lo, h - 0.1), (x + 0.05, hi, h + 0.05), pal.texture("noise", 0.3)))
                elif rng.uniform() < 0.6:  # a sign
                    s = rng.uniform(0.4, 0.8)
                    surfaces.append(box((x - 0.03, y - s / 2, 2.2), (x + 0.03, y + s / 2, 2.2 + s),
                                        pal.any_texture(s / 3)))
            else:  # a tree
                y = side * (hw + sw * rng.uniform(0.4, 0.7))
                trunk_h, crown = rng.uniform(2.0, 3.5), rng.uniform(1.0, 2.2)
                bark = np.stack([_hsv(0.08, 0.5, 0.3), _hsv(0.08, 0.4, 0.2)])
                leaves = np.stack([_hsv(rng.uniform(0.2, 0.35), 0.6, rng.uniform(0.25, 0.45)),
                                   _hsv(rng.uniform(0.2, 0.35), 0.5, rng.uniform(0.45, 0.6))])
                surfaces.append(cylinder((x, y, 0.15 + trunk_h / 2), rng.uniform(0.1, 0.2), trunk_h,
                                         pal.texture("noise", 0.2, bark)))
                surfaces.append(ellipsoid((x, y, trunk_h + crown * 0.7), (crown, crown, crown * 1.2),
                                          pal.texture("noise", 0.4, leaves, grain=0.3)))
            x += rng.uniform(8.0, 25.0)
    return surfaces


# ----------------------------------------------------------------------------------------------- frames

def synth_frame(seed: np.random.SeedSequence | int, kind: str, width: int, height: int,
                nthreads: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Build and render one frame.

    Args:
        seed: the frame's seed (everything random is drawn from it).
        kind: ``indoor``, ``outdoor`` or ``mixed`` (the first draw picks one of the two).
        width, height: image size, pixels.
        nthreads: Open3D threads (0: all cores).

    Returns:
        ``image`` (H, W, 3) uint8 RGB, ``depth`` (H, W) float32 z-depth metres (0 = missing), ``K`` (3, 3)
        float64 pixels, and the scene kind drawn (``indoor`` or ``outdoor``).
    """
    rng = np.random.default_rng(seed)
    if kind == "mixed":
        kind = "indoor" if rng.uniform() < 0.5 else "outdoor"
    surfaces, lighting, pose, fov = (indoor_scene if kind == "indoor" else outdoor_scene)(rng)
    K = camera_matrix(width, height, fov)
    rgb, depth = render_view(surfaces, pose, K, width, height, lighting, MAX_DEPTH, nthreads)
    noisy = rgb * 255.0 + IMAGE_NOISE * rng.standard_normal(rgb.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8), depth, K, kind


def _frame_paths(out: Path, index: int) -> dict[str, Path]:
    name = f"{index:06d}"
    return {"image": out / "image" / f"{name}.png", "groundtruth": out / "groundtruth" / f"{name}.png",
            "intrinsics": out / "intrinsics" / f"{name}.txt"}


def _frame_kind(seed: np.random.SeedSequence, kind: str) -> str:
    """The kind frame ``seed`` gets (the draw :func:`synth_frame` makes first), without rendering it."""
    if kind != "mixed":
        return kind
    return "indoor" if np.random.default_rng(seed).uniform() < 0.5 else "outdoor"


def _claim(out: Path, meta: dict) -> None:
    """Record the generation parameters in ``out``, refusing a folder made with other ones."""
    foreign = any((out / "groundtruth").glob("*.png")) or any((out / "image").glob("*.png"))
    claim_folder(out / _CLAIM, meta, foreign, "geo3d synth depth")


def _write_intrinsics(path: Path, K: np.ndarray) -> None:
    atomic_write_text(path, "".join(" ".join(f"{value:.9g}" for value in row) + "\n" for row in K))


def generate_depth(out: str | Path, frames: int, seed: int = 0, width: int = 320, height: int = 96,
                   kind: str = "mixed", progress: bool = True) -> Path:
    """Write a synthetic depth-completion dataset: RGB images, exact depth, intrinsics (see the module docstring).

    Args:
        out: output folder (created). Re-running with the same parameters skips frames whose three files exist
            (a larger ``frames`` adds frames; frame files beyond ``frames`` are removed).
        frames: number of frames.
        seed: random seed; the same seed writes identical bytes.
        width, height: image size, pixels.
        kind: ``indoor``, ``outdoor`` or ``mixed`` (each frame indoor or outdoor at random).
        progress: show a tqdm bar over the frames when there are more than 20.

    Returns:
        ``out`` as a Path.

    Raises:
        InputError: unknown kind, frames / width / height below 1, or ``out`` holds frames generated with other
            parameters (seed, size, kind) or not by this generator.
    """
    if kind not in KINDS:
        raise InputError(None, f"kind: unknown {kind!r}; expected one of {', '.join(KINDS)}")
    for name, value in (("frames", frames), ("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(None, f"{name}: expected an integer >= 1, got {value!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _claim(out, {"generator": "geo3d.synth.depth", "version": _VERSION, "seed": int(seed), "width": width,
                 "height": height, "kind": kind})
    for folder in ("image", "groundtruth", "intrinsics"):  # frames of an earlier, longer run
        for path in (out / folder).glob("*.*"):
            if path.stem.isdigit() and int(path.stem) >= frames:
                path.unlink()
    seeds = np.random.SeedSequence(seed).spawn(frames)  # child i does not depend on the count
    kinds = []
    with tqdm(total=frames, desc=f"synth depth {kind}", unit="frame", disable=not progress or frames <= 20) as bar:
        for i, frame_seed in enumerate(seeds):
            paths = _frame_paths(out, i)
            if all(p.is_file() for p in paths.values()):
                kinds.append(_frame_kind(frame_seed, kind))
            else:
                image, depth, K, drawn = synth_frame(frame_seed, kind, width, height)
                kinds.append(drawn)
                with atomic_path(paths["image"]) as tmp:
                    Image.fromarray(image).save(tmp, format="PNG")
                write_depth_png(paths["groundtruth"], depth, DEPTH_SCALE)
                _write_intrinsics(paths["intrinsics"], K)
            bar.update()
    scene = {"frames": frames, "seed": seed, "width": width, "height": height, "kind": kind, "kinds": kinds,
             "max_depth": MAX_DEPTH, "depth_scale": DEPTH_SCALE, "outdoor_fov_deg": OUTDOOR_FOV_DEG,
             "indoor_fov_deg": list(INDOOR_FOV_DEG)}
    atomic_write_text(out / "scene.json", json.dumps(scene, indent=2) + "\n")
    return out
