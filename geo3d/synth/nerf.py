"""Synthetic multi-view object data in the NeRF-synthetic layout (Blender-like RGBA renders + transforms).

One coloured object (``toy``, ``chair``, ``mug`` or ``robot``: 1.7-2.3 m across, z up, scaled to a bounding
box half-diagonal of 1.25 m, so it always fits in the frame, centred within 5 cm of the origin) is ray-cast
with Open3D's ``RaycastingScene`` from cameras on a sphere around it. Files written under ``OUT``, as the
NeRF-synthetic dataset stores them:

- ``train/r_{i}.png``, ``test/r_{i}.png``: RGBA, ``res`` x ``res``, transparent background. Every pixel is
  sampled by ``SUPERSAMPLE`` x ``SUPERSAMPLE`` rays on a regular sub-pixel grid (odd, so the pixel centre is
  one of them): alpha = the share of rays that hit (exact coverage, fractional on silhouettes), RGB = the
  mean colour of the rays that hit (not premultiplied), 0 where nothing is hit.
- ``transforms_train.json``, ``transforms_test.json``: ``camera_angle_x`` and per frame ``file_path``
  (``./train/r_0``, no suffix) and ``transform_matrix`` (camera-to-world, OpenGL convention).
- ``mesh.ply``: the ground-truth mesh (metres) with vertex colours (the albedo sampled at the vertices).
- ``scene.json``: object name, seed, res, bounds (2, 3) in metres, camera radius and angle, counts.

Colour is procedural and crisp: the albedo at a ray hit is a function of the 3D hit point and the part hit
(3D checker, planar stripes, angular stripes), so detail does not depend on the mesh resolution. Shading is
view-independent: Lambertian (flat, from the face normal turned towards the camera) under two fixed
directional lights plus ambient, so colours stay inside (0, 1) and a low-degree spherical-harmonics model
can fit them. Cameras look at the origin with world z up: train views on a spiral over elevations
``ELEVATION_DEG`` (equal-area in elevation, golden-angle in azimuth, jittered), test views on another
spiral on the same sphere (camera radius 4 m and ``camera_angle_x`` 0.691 rad, as the Blender scenes).
Everything random is drawn from the seed: the object (colours, stripe phases, placement jitter) from
``default_rng((seed, object index))``, the cameras from :func:`split_poses` (the same for every object);
the same seed writes identical bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open3d as o3d
import torch
import trimesh
from PIL import Image
from tqdm import tqdm

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_path, atomic_write_text
from geo3d.io.conventions import invert_rigid, opencv_to_opengl
from geo3d.io.meshes import write_mesh
from geo3d.types import Cameras, Mesh

RADIUS = 4.0  # metres, camera distance from the origin
CAMERA_ANGLE_X = 0.6911112070083618  # radians, horizontal field of view of the NeRF-synthetic scenes
ELEVATION_DEG = (-15.0, 75.0)  # camera elevations above the xy plane
SUPERSAMPLE = 3  # rays per pixel side (odd: the pixel centre is one of the rays)
MAX_EDGE = 0.06  # metres: mesh.ply is subdivided to this edge length, so its vertex colours show the pattern
HALF_DIAGONAL = 1.25  # metres: objects are scaled to this bounding-box half-diagonal (always in the frame)
JITTER = 0.05  # metres, largest placement offset per axis
AMBIENT = 0.35  # ambient + light weights <= 1: shaded colours stay below the albedo's maximum
LIGHTS = ((np.array([0.4, -0.5, 0.8]), 0.45), (np.array([-0.6, 0.5, 0.3]), 0.2))  # direction towards, weight
PALETTE = np.array(
    [[0.85, 0.25, 0.2], [0.95, 0.75, 0.15], [0.2, 0.55, 0.9], [0.25, 0.75, 0.35], [0.65, 0.35, 0.8],
     [0.9, 0.9, 0.85], [0.3, 0.3, 0.35], [0.95, 0.5, 0.1], [0.2, 0.8, 0.8], [0.55, 0.35, 0.2]],
)


# ------------------------------------------------------------------------------------------------ parts

@dataclass(frozen=True)
class Pattern:
    """A procedural albedo: two colours alternating over space.

    Attributes:
        kind: ``"solid"`` (colour 0), ``"checker"`` (3D cubes of side ``period``), ``"stripes"`` (slabs of
            width ``period`` across ``axis``) or ``"angular"`` (sectors of ``period`` radians around the
            line through ``origin`` along ``axis``; ``period`` should divide 2 pi).
        colors: (2, 3) float64 albedos in (0, 1).
        period: metres (radians for ``angular``).
        phase: shift of the pattern, in periods.
        axis: (3,) unit vector.
        origin: (3,) metres, the point the pattern is anchored at (moves with the part).
    """

    kind: str
    colors: np.ndarray
    period: float = 0.1
    phase: float = 0.0
    axis: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def albedo(self, points: np.ndarray) -> np.ndarray:
        """Albedo at ``points`` (N, 3) float metres -> (N, 3) float64 in (0, 1)."""
        q = np.asarray(points, np.float64) - self.origin
        if self.kind == "solid":
            return np.broadcast_to(self.colors[0], q.shape).copy()
        if self.kind == "checker":
            index = np.floor(q / self.period + self.phase).sum(1)
        elif self.kind == "stripes":
            index = np.floor((q * self.axis).sum(1) / self.period + self.phase)
        elif self.kind == "angular":
            e1 = np.cross(self.axis, [1.0, 0.0, 0.0] if abs(self.axis[0]) < 0.9 else [0.0, 1.0, 0.0])
            e1 /= np.linalg.norm(e1)
            e2 = np.cross(self.axis, e1)
            index = np.floor(np.arctan2((q * e2).sum(1), (q * e1).sum(1)) / self.period + self.phase)
        else:
            raise ValueError(f"Pattern.kind: unknown {self.kind!r}")
        return self.colors[(index.astype(np.int64) % 2)]

    def transformed(self, scale: float, offset: np.ndarray) -> Pattern:
        """The pattern on a part scaled by ``scale`` about the world origin, then moved by ``offset`` (3,) metres."""
        period = self.period if self.kind == "angular" else self.period * scale
        return Pattern(self.kind, self.colors, period, self.phase, self.axis, self.origin * scale + offset)


@dataclass
class Part:
    """One piece of an object: a closed (or thin-walled) mesh in world metres and its albedo pattern."""

    mesh: trimesh.Trimesh
    pattern: Pattern


@dataclass
class SynthObject:
    """A coloured object: parts in world coordinates (metres, z up)."""

    name: str
    parts: list[Part]

    @property
    def bounds(self) -> np.ndarray:
        """(2, 3) float64 axis-aligned bounds (min, max), metres."""
        return np.stack([np.min([p.mesh.bounds[0] for p in self.parts], 0),
                         np.max([p.mesh.bounds[1] for p in self.parts], 0)])

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All parts merged: vertices (V, 3) float64, faces (F, 3) int64, part index of each face (F,)."""
        vertices, faces, owner, base = [], [], [], 0
        for i, part in enumerate(self.parts):
            vertices.append(np.asarray(part.mesh.vertices, np.float64))
            faces.append(np.asarray(part.mesh.faces, np.int64) + base)
            owner.append(np.full(len(part.mesh.faces), i))
            base += len(part.mesh.vertices)
        return np.concatenate(vertices), np.concatenate(faces), np.concatenate(owner)

    def mesh(self, max_edge: float = MAX_EDGE) -> Mesh:
        """The merged mesh, its flat triangles split to edges <= ``max_edge`` metres (the same surface), vertex
        colours = each part's albedo at its vertices."""
        vertices, faces, colors, base = [], [], [], 0
        for part in self.parts:
            fine = part.mesh.subdivide_to_size(max_edge)
            vertices.append(fine.vertices)
            faces.append(fine.faces + base)
            colors.append(part.pattern.albedo(fine.vertices))
            base += len(fine.vertices)
        return Mesh(np.concatenate(vertices), np.concatenate(faces), np.concatenate(colors))


class _Builder:
    """Collects parts, drawing colours and stripe phases from ``rng``."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.parts: list[Part] = []

    def colors(self) -> np.ndarray:
        pair = PALETTE[self.rng.choice(len(PALETTE), 2, replace=False)]
        return np.clip(pair + self.rng.uniform(-0.05, 0.05, pair.shape), 0.05, 0.95)

    def add(self, mesh: trimesh.Trimesh, kind: str, period: float = 0.1, axis=(0.0, 0.0, 1.0),
            origin=(0.0, 0.0, 0.0)) -> None:
        axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
        pattern = Pattern(kind, self.colors(), period, float(self.rng.uniform()), axis, np.asarray(origin, float))
        self.parts.append(Part(mesh, pattern))


def _box(extents, center) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=extents, transform=trimesh.transformations.translation_matrix(center))


def _rod(a, b, radius: float, sections: int = 16) -> trimesh.Trimesh:
    """A cylinder of ``radius`` metres from point ``a`` to point ``b``."""
    return trimesh.creation.cylinder(radius=radius, segment=np.array([a, b], np.float64), sections=sections)


def _ball(center, radius: float, subdivisions: int = 3) -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius).apply_translation(center)


def _toy(b: _Builder) -> None:
    """A four-legged creature: checkered box body, striped ball head, thin legs, antenna, ringed tail."""
    b.add(_box((1.0, 0.6, 0.5), (0.0, 0.0, 0.65)), "checker", 0.1)
    b.add(_ball((0.6, 0.0, 0.95), 0.25, 4), "stripes", 0.06, axis=(1.0, 0.3, 1.0))
    for x in (-0.4, 0.4):
        for y in (-0.22, 0.22):
            b.add(_rod((x, y, 0.0), (x, y, 0.42), 0.03), "stripes", 0.05)
    b.add(_rod((0.6, 0.0, 1.18), (0.65, 0.05, 1.5), 0.012, 8), "solid")
    b.add(_ball((0.65, 0.05, 1.52), 0.04, 2), "solid")
    tail = trimesh.creation.torus(major_radius=0.12, minor_radius=0.02, major_sections=48, minor_sections=8)
    tail.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    b.add(tail.apply_translation((-0.62, 0.0, 0.85)), "angular", 2 * np.pi / 12, axis=(0, 1, 0),
          origin=(-0.62, 0.0, 0.85))


def _chair(b: _Builder) -> None:
    """A chair: striped seat, thin ringed legs, slatted back between two posts under a checkered rail."""
    b.add(_box((0.9, 0.9, 0.07), (0.0, 0.0, 0.75)), "stripes", 0.08, axis=(1.0, 0.0, 0.0))
    for x in (-0.4, 0.4):
        for y in (-0.4, 0.4):
            b.add(_rod((x, y, 0.0), (x, y, 0.72), 0.025), "stripes", 0.1)
    for x in (-0.42, 0.42):
        b.add(_box((0.05, 0.05, 0.85), (x, 0.42, 1.2)), "stripes", 0.07)
    for x in np.linspace(-0.3, 0.3, 5):
        b.add(_box((0.04, 0.03, 0.6), (x, 0.42, 1.12)), "solid")
    b.add(_box((0.9, 0.06, 0.1), (0.0, 0.42, 1.6)), "checker", 0.05)
    b.add(_rod((-0.4, -0.4, 0.2), (0.4, -0.4, 0.2), 0.015, 8), "solid")


def _mug(b: _Builder) -> None:
    """A mug: thin-walled cylinder with angular stripes and a band, bottom, coffee surface, torus handle."""
    b.add(trimesh.creation.annulus(0.44, 0.48, 0.9, sections=96).apply_translation((0, 0, 0.5)), "angular",
          2 * np.pi / 24)
    b.add(trimesh.creation.annulus(0.48, 0.5, 0.08, sections=96).apply_translation((0, 0, 0.8)), "checker",
          0.04)
    b.add(_rod((0, 0, 0.0), (0, 0, 0.05), 0.48, 96), "solid")
    b.add(_rod((0, 0, 0.7), (0, 0, 0.71), 0.44, 96), "solid")
    handle = trimesh.creation.torus(major_radius=0.25, minor_radius=0.04, major_sections=64, minor_sections=12)
    handle.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    b.add(handle.apply_translation((0.62, 0.0, 0.5)), "stripes", 0.05)


def _robot(b: _Builder) -> None:
    """A robot: checkered torso, box head with eyes and thin antennae, striped arms with fingers, legs."""
    b.add(_box((0.6, 0.4, 0.7), (0.0, 0.0, 1.0)), "checker", 0.1)
    b.add(_box((0.35, 0.3, 0.3), (0.0, 0.0, 1.55)), "stripes", 0.05, axis=(0.0, 0.0, 1.0))
    for x in (-0.08, 0.08):
        b.add(_ball((x, -0.15, 1.58), 0.04, 2), "solid")
        b.add(_rod((x, 0.0, 1.7), (1.5 * x, 0.0, 1.95), 0.01, 8), "solid")
        b.add(_ball((1.5 * x, 0.0, 1.96), 0.03, 2), "solid")
    for x in (-0.38, 0.38):
        b.add(_rod((x, 0.0, 1.3), (x, 0.0, 0.75), 0.06, 24), "stripes", 0.06)
        for dx in (-0.04, 0.0, 0.04):
            b.add(_rod((x + dx, 0.0, 0.75), (x + 1.3 * dx, 0.0, 0.6), 0.012, 8), "solid")
        b.add(_box((0.15, 0.15, 0.65), (x / 2.5, 0.0, 0.325)), "stripes", 0.08, axis=(0.0, 1.0, 1.0))


OBJECTS: dict[str, Callable[[_Builder], None]] = {"toy": _toy, "chair": _chair, "mug": _mug, "robot": _robot}


def build_object(name: str, rng: np.random.Generator) -> SynthObject:
    """Build object ``name`` (one of :data:`OBJECTS`), scaled and centred near the origin.

    The object is scaled to a bounding-box half-diagonal of ``HALF_DIAGONAL`` metres and its bounding box
    centred at a random offset of up to ``JITTER`` metres per axis from the origin.

    Args:
        name: ``"toy"``, ``"chair"``, ``"mug"`` or ``"robot"``.
        rng: draws the colours, the pattern phases and the placement offset.

    Returns:
        SynthObject with parts in world metres, z up.

    Raises:
        InputError: unknown name.
    """
    if name not in OBJECTS:
        raise InputError(None, f"object: unknown {name!r}; expected one of {', '.join(OBJECTS)}")
    builder = _Builder(rng)
    OBJECTS[name](builder)
    obj = SynthObject(name, builder.parts)
    low, high = obj.bounds
    scale = HALF_DIAGONAL / np.linalg.norm(high - low) * 2
    offset = rng.uniform(-JITTER, JITTER, 3) - scale * (low + high) / 2
    for part in obj.parts:
        part.mesh.apply_scale(scale).apply_translation(offset)
        part.pattern = part.pattern.transformed(scale, offset)
    return obj


# ---------------------------------------------------------------------------------------------- cameras

def _look_at_origin(centers: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world (C, 4, 4) float64 for cameras at ``centers`` (C, 3) looking at 0, world z up."""
    forward = -centers / np.linalg.norm(centers, axis=1, keepdims=True)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    down = np.cross(forward, right)
    pose = np.tile(np.eye(4), (len(centers), 1, 1))
    pose[:, :3, :3] = np.stack([right, down, forward], -1)
    pose[:, :3, 3] = centers
    return pose


def orbit_poses(count: int, rng: np.random.Generator, phase: float = 0.0, radius: float = RADIUS) -> np.ndarray:
    """Camera poses on a jittered spiral over the sphere of ``radius`` around the origin, looking at the origin.

    Heights are spread evenly (equal area) between the elevations ``ELEVATION_DEG``, azimuths advance by
    the golden angle from ``phase`` radians; each camera is jittered by up to a quarter step in height and
    0.2 rad in azimuth. World z projects upwards in every image.

    Args:
        count: number of cameras.
        rng: draws the jitter.
        phase: azimuth of the first camera, radians.
        radius: metres.

    Returns:
        (count, 4, 4) float64 OpenCV camera-to-world poses, metres.
    """
    lo, hi = np.sin(np.deg2rad(ELEVATION_DEG))
    step = (hi - lo) / count
    z = lo + (np.arange(count) + 0.5 + rng.uniform(-0.25, 0.25, count)) * step
    azimuth = phase + np.arange(count) * np.pi * (3.0 - np.sqrt(5.0)) + rng.uniform(-0.2, 0.2, count)
    ring = np.sqrt(1.0 - z**2)
    centers = radius * np.stack([ring * np.cos(azimuth), ring * np.sin(azimuth), z], 1)
    return _look_at_origin(centers)


def split_poses(views: int, test_views: int, seed: int) -> dict[str, np.ndarray]:
    """The train and test camera poses of :func:`generate_nerf` (the same for every object).

    Train and test views come from independent ``SeedSequence(seed).spawn(2)`` streams, test views on a
    spiral starting half a golden angle further, so no test camera repeats a train camera.

    Returns:
        ``{"train": (views, 4, 4), "test": (test_views, 4, 4)}`` float64 OpenCV camera-to-world, metres.
    """
    train, test = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    return {"train": orbit_poses(views, train), "test": orbit_poses(test_views, test, phase=np.pi * (3 - 5**0.5) / 2)}


def make_cameras(cam_to_world: np.ndarray, res: int, camera_angle_x: float = CAMERA_ANGLE_X) -> Cameras:
    """Cameras for ``cam_to_world`` (C, 4, 4) float64 OpenCV poses: square ``res`` images, principal point at
    the centre, horizontal field of view ``camera_angle_x`` radians (as NeRF-synthetic readers build them)."""
    focal = 0.5 * res / math.tan(0.5 * camera_angle_x)
    K = torch.tensor([[focal, 0.0, res / 2], [0.0, focal, res / 2], [0.0, 0.0, 1.0]]).expand(len(cam_to_world), 3, 3)
    return Cameras(K, invert_rigid(torch.from_numpy(cam_to_world)), res, res)


# -------------------------------------------------------------------------------------------- rendering

def shade(albedo: np.ndarray, normals: np.ndarray, view_dirs: np.ndarray) -> np.ndarray:
    """View-independent Lambertian shading under ``LIGHTS`` plus ``AMBIENT``.

    Args:
        albedo: (N, 3) float in (0, 1).
        normals: (N, 3) unit surface normals (either orientation: turned to face the viewer).
        view_dirs: (N, 3) ray directions (camera to surface), any length.

    Returns:
        (N, 3) float64 colours in (0, 1).
    """
    facing = np.where((np.sum(normals * view_dirs, 1) > 0)[:, None], -normals, normals)
    light = np.full(len(normals), AMBIENT)
    for direction, weight in LIGHTS:
        light += weight * np.clip((facing * (direction / np.linalg.norm(direction))).sum(1), 0.0, None)
    return np.clip(albedo * light[:, None], 0.0, 1.0)


def _camera_rays(K: np.ndarray, res: int, supersample: int) -> np.ndarray:
    """(res * res * s * s, 3) float64 ray directions in the camera frame (z = 1), pixel-major (row, column),
    then an s x s grid at sub-pixel offsets (k + 0.5) / s inside each pixel."""
    sub = (np.arange(supersample) + 0.5) / supersample
    v, u, sv, su = np.meshgrid(np.arange(res), np.arange(res), sub, sub, indexing="ij")
    x, y = u + su, v + sv  # continuous pixel coordinates: pixel (i, j) spans [i, i + 1) x [j, j + 1)
    cam = np.stack([(x - K[0, 2]) / K[0, 0], (y - K[1, 2]) / K[1, 1], np.ones_like(x)], -1)
    return cam.reshape(-1, 3)


def cast_and_shade(obj: SynthObject, cam_to_world: np.ndarray, cam_dirs: np.ndarray,
                   nthreads: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Cast the same camera-frame rays from each pose into ``obj`` (Open3D) and shade the hits.

    Args:
        obj: the object.
        cam_to_world: (C, 4, 4) float64 OpenCV camera-to-world poses, metres.
        cam_dirs: (N, 3) float ray directions in the camera frame (with z = 1, the hit distance is the z-depth).
        nthreads: Open3D threads (0: all cores).

    Yields:
        Per camera: ``ok`` (N,) bool hit mask, ``t`` (N,) float64 hit distance in units of the direction's length
        (inf where missed), ``color`` (N, 3) float64 shaded albedo in [0, 1] (0 where missed).
    """
    vertices, faces, owner = obj.arrays()
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)), o3d.core.Tensor(faces.astype(np.uint32)))
    rays = np.empty((len(cam_dirs), 6), np.float32)
    for pose in cam_to_world:
        rays[:, :3] = pose[:3, 3]
        rays[:, 3:] = np.einsum("nj,ij->ni", cam_dirs, pose[:3, :3])  # not BLAS: its threads fight Open3D's
        hit = scene.cast_rays(o3d.core.Tensor(rays), nthreads=nthreads)
        t = hit["t_hit"].numpy().astype(np.float64)
        ok = np.isfinite(t)
        dirs = rays[ok, 3:].astype(np.float64)
        points = pose[:3, 3] + t[ok, None] * dirs
        part_of_hit = owner[hit["primitive_ids"].numpy()[ok]]
        albedo = np.zeros((len(points), 3))
        for i in np.unique(part_of_hit):
            mine = part_of_hit == i
            albedo[mine] = obj.parts[i].pattern.albedo(points[mine])
        color = np.zeros((len(t), 3))
        color[ok] = shade(albedo, hit["primitive_normals"].numpy()[ok].astype(np.float64), dirs)
        yield ok, t, color


def render_rgba(obj: SynthObject, cam_to_world: np.ndarray, res: int, camera_angle_x: float = CAMERA_ANGLE_X,
                supersample: int = SUPERSAMPLE, nthreads: int = 0) -> Iterator[np.ndarray]:
    """Ray-cast ``obj`` from each camera into an RGBA image (straight, not premultiplied, alpha).

    Args:
        obj: the object.
        cam_to_world: (C, 4, 4) float64 OpenCV camera-to-world poses, metres.
        res: image width and height, pixels; principal point at the centre.
        camera_angle_x: horizontal field of view, radians.
        supersample: rays per pixel side, at offsets (k + 0.5) / supersample; alpha = share of the
            ``supersample**2`` rays that hit (with an odd count the pixel centre is one of them).
        nthreads: Open3D threads (0: all cores).

    Yields:
        (res, res, 4) uint8 per camera: RGB = mean shaded colour of the rays that hit (0 where none),
        A = coverage.
    """
    focal = 0.5 * res / math.tan(0.5 * camera_angle_x)
    K = np.array([[focal, 0.0, res / 2], [0.0, focal, res / 2], [0.0, 0.0, 1.0]])
    n = supersample * supersample
    for ok, _, color in cast_and_shade(obj, cam_to_world, _camera_rays(K, res, supersample), nthreads):
        hits = ok.reshape(res, res, n).sum(-1)
        rgb = color.reshape(res, res, n, 3).sum(2) / np.maximum(hits, 1)[..., None]
        rgba = np.concatenate([rgb, hits[..., None] / n], -1)
        yield np.round(rgba * 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------- writing

def _write_png(path: Path, rgba: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(rgba, "RGBA").save(tmp, format="PNG")


def _write_split(out: Path, split: str, obj: SynthObject, cam_to_world: np.ndarray, res: int,
                 bar: tqdm) -> None:
    (out / split).mkdir(parents=True, exist_ok=True)
    for i, rgba in enumerate(render_rgba(obj, cam_to_world, res)):
        _write_png(out / split / f"r_{i}.png", rgba)
        bar.update()
    gl = opencv_to_opengl(torch.from_numpy(cam_to_world)).numpy()
    frames = [{"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()} for i, pose in enumerate(gl)]
    text = json.dumps({"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}, indent=2) + "\n"
    atomic_write_text(out / f"transforms_{split}.json", text)


def _at_least_one(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(None, f"{name}: expected an integer >= 1, got {value!r}")


def generate_nerf(out: str | Path, object: str = "toy", res: int = 128, views: int = 100, test_views: int = 50,
                  seed: int = 0, progress: bool = True) -> Path:
    """Write a NeRF-synthetic style dataset of one synthetic object (see the module docstring for the files).

    Args:
        out: output folder (created).
        object: one of :data:`OBJECTS` (``toy``, ``chair``, ``mug``, ``robot``).
        res: image width and height, pixels.
        views: number of training views.
        test_views: number of test views (other cameras on the same sphere).
        seed: random seed; the same seed writes identical bytes.
        progress: show a tqdm bar over the views when there are more than 20.

    Returns:
        ``out`` as a Path.

    Raises:
        InputError: unknown object, or res / views / test_views below 1.
    """
    if object not in OBJECTS:
        raise InputError(None, f"object: unknown {object!r}; expected one of {', '.join(OBJECTS)}")
    for name, value in (("res", res), ("views", views), ("test_views", test_views)):
        _at_least_one(name, value)
    out = Path(out)
    obj = build_object(object, np.random.default_rng((seed, list(OBJECTS).index(object))))
    poses = split_poses(views, test_views, seed)
    with tqdm(total=views + test_views, desc=f"synth nerf {object}", unit="view",
              disable=not progress or views + test_views <= 20) as bar:
        for split, cam_to_world in poses.items():
            _write_split(out, split, obj, cam_to_world, res, bar)
    write_mesh(out / "mesh.ply", obj.mesh())
    scene = {
        "object": object, "seed": seed, "res": res, "views": views, "test_views": test_views,
        "bounds": obj.bounds.tolist(), "camera_radius": RADIUS, "camera_angle_x": CAMERA_ANGLE_X,
        "elevation_deg": list(ELEVATION_DEG), "supersample": SUPERSAMPLE,
    }
    atomic_write_text(out / "scene.json", json.dumps(scene, indent=2) + "\n")
    return out
