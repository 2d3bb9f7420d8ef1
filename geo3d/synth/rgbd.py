"""Synthetic RGB-D scans of one object with a Kinect-like depth noise model, in the Microsoft 7-Scenes layout.

One object is ray-cast with Open3D's ``RaycastingScene`` from ``frames`` random cameras around it, and written
under ``OUT`` as :func:`geo3d.io.read_rgbd_sequence` reads it (depth in millimetres, 0 = missing):

- ``frame-NNNNNN.color.png``: (H, W, 3) uint8, the shaded albedo (black where no surface is hit).
- ``frame-NNNNNN.depth.png``: uint16 millimetres, 0 = missing; z along the optical axis (not the ray length),
  exact or with :func:`kinect_noise`. The 1 mm quantization of the PNG is applied by the writer
  (:func:`geo3d.io.depth_png.depth_to_codes` rounds to the nearest code).
- ``frame-NNNNNN.pose.txt``: 4x4 camera-to-world, OpenCV camera (x right, y down, z forward), metres.
- ``camera-intrinsics.txt``: 3x3 K in pixels (pixel centre of column i at u = i + 0.5), horizontal field of
  view ``FOV_X_DEG``, principal point at the image centre.
- ``mesh.ply``: the ground-truth surface in the same world frame (metres, z up), with vertex colours (the
  albedo). For objects built from overlapping parts, faces inside another part are left out, so the mesh is
  the outer surface a sensor can see (plus slivers of the faces that cross into another part).
- ``scene.json``: object, seed, noise and its parameters, diagonal, frames, image size, K, depth scale, camera
  distance and elevation ranges.

Objects (:data:`OBJECTS`): ``bunny`` (the Stanford bunny from the shared data folder, ``surface/bunny.ply``,
turned z up), ``blob`` (an icosphere with a randomly waved radius), ``torus_knot`` (a (2, 3) torus knot tube),
and the multi-part objects of :mod:`geo3d.synth.nerf` (``toy``, ``chair``, ``mug``, ``robot``). Each is centred
at the origin and scaled so that its bounding-box diagonal is ``diagonal`` metres. Colours follow the nerf
generator: procedural albedo patterns and its Lambertian :func:`geo3d.synth.nerf.shade`.

Cameras look at the object's centre (jittered by up to ``LOOK_AT_JITTER`` x diagonal per axis) from distances
``RADIUS_RANGE`` x diagonal, random azimuths and elevations in ``ELEVATION_DEG``, world z projecting upwards.
Everything random comes from ``SeedSequence(seed).spawn(3)`` (object, cameras, noise): the same seed writes
identical bytes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open3d as o3d
import torch
import trimesh
from scipy import ndimage
from tqdm import tqdm

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_write_text
from geo3d.io.meshes import read_mesh, write_mesh
from geo3d.io.rgbd import RGBDFrame, write_intrinsics, write_rgbd_frame
from geo3d.io.shared_data import shared_data_dir
from geo3d.synth import nerf
from geo3d.synth.nerf import PALETTE, Part, Pattern, SynthObject
from geo3d.types import DepthMap, Mesh

FOV_X_DEG = 60.0  # horizontal field of view (Kinect v1: about 62 degrees)
RADIUS_RANGE = (1.2, 1.6)  # camera distance from the look-at point, in object diagonals
ELEVATION_DEG = (-20.0, 70.0)  # camera elevation above the xy plane, drawn uniformly
LOOK_AT_JITTER = 0.05  # largest look-at offset from the object centre per axis, in object diagonals
DEPTH_SCALE = 1000.0  # depth PNG codes per metre (millimetres, as 7-Scenes and TUM)
MAX_EDGE = 0.024  # mesh.ply triangles are split to edges <= this many object diagonals (vertex colours)
INSIDE_TOLERANCE = 1e-4  # metres: a face with its three corners deeper than this inside another part is hidden
NOISES = ("kinect", "none")
BUNNY = Path("surface") / "bunny.ply"
_FRAME_FILE = re.compile(r"frame-(\d+)\.(color\.png|color\.jpg|depth\.png|pose\.txt)")


# ------------------------------------------------------------------------------------------- noise model

@dataclass(frozen=True)
class KinectNoise:
    """Parameters of :func:`kinect_noise` (defaults: Kinect v1).

    Attributes:
        sigma_base: metres, axial noise standard deviation at ``sigma_z0``.
        sigma_quadratic: metres per square metre, growth of the standard deviation with (z - sigma_z0)^2.
        sigma_z0: metres, depth of the smallest noise.
        dropout: share of valid pixels dropped at random (set to missing).
        edge_threshold: metres, a depth jump to a neighbour larger than this is a discontinuity.
        edge_width: pixels; valid pixels within this Chebyshev distance of a discontinuity are dropped
            (1: the pixels on both sides of a jump, a band 2 px wide).
    """

    sigma_base: float = 0.0012
    sigma_quadratic: float = 0.0019
    sigma_z0: float = 0.4
    dropout: float = 0.01
    edge_threshold: float = 0.03
    edge_width: int = 1

    def sigma(self, z: np.ndarray | float) -> np.ndarray | float:
        """Axial noise standard deviation (metres) at depth ``z`` (metres, any shape)."""
        return self.sigma_base + self.sigma_quadratic * (np.asarray(z) - self.sigma_z0) ** 2


def depth_edges(depth: np.ndarray, threshold: float, width: int = 1) -> np.ndarray:
    """Valid pixels within ``width`` pixels (Chebyshev distance) of a depth discontinuity.

    A pixel pair is a discontinuity when their depths differ by more than ``threshold``; a missing pixel counts
    as infinitely far, so object silhouettes are discontinuities. Both sides of a jump are marked.

    Args:
        depth: (H, W) float metres; 0 or non-finite = missing.
        threshold: metres.
        width: pixels (0: nothing is marked).

    Returns:
        (H, W) bool, True at valid pixels that have a pixel within ``width`` px whose depth differs by more
        than ``threshold`` (or that is missing). Pixels outside the image are not neighbours.
    """
    depth = np.asarray(depth, np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    far = np.where(valid, depth, np.inf)
    size = 2 * int(width) + 1
    highest = ndimage.maximum_filter(far, size=size, mode="nearest")
    lowest = ndimage.minimum_filter(far, size=size, mode="nearest")
    edges = np.zeros(depth.shape, bool)
    z = far[valid]
    edges[valid] = (highest[valid] - z > threshold) | (z - lowest[valid] > threshold)
    return edges


def kinect_noise(depth: np.ndarray, rng: np.random.Generator, params: KinectNoise = KinectNoise()) -> np.ndarray:
    """Corrupt exact depth like a structured-light Kinect v1 sensor.

    Steps, on the valid pixels of ``depth``:

    1. Axial Gaussian noise with depth-dependent standard deviation
       sigma(z) = 0.0012 + 0.0019 (z - 0.4)^2 metres: the axial noise model of C. V. Nguyen, S. Izadi and
       D. Lovell, "Modeling Kinect Sensor Noise for Improved 3D Reconstruction and Tracking", 3DIMPVT 2012
       (fitted for surfaces turned 10-60 degrees from the camera; the error's quadratic growth with depth also
       in K. Khoshelham and S. O. Elberink, "Accuracy and Resolution of Kinect Depth Data for Indoor Mapping
       Applications", Sensors 2012).
    2. Random dropout: each valid pixel goes missing with probability ``params.dropout`` (1%), standing in for
       the scattered holes of real depth maps (our choice of rate, not a fitted value).
    3. Edge dropout: pixels within ``params.edge_width`` px of a depth discontinuity larger than
       ``params.edge_threshold`` (3 cm) go missing, as structured-light sensors lose depth along object
       boundaries (T. Mallick, P. P. Das and A. K. Majumdar, "Characterizations of Noise in Kinect Depth
       Images: A Review", IEEE Sensors Journal 2014). Discontinuities are found on the exact depth.

    Quantization is not applied here: writing the result to a millimetre depth PNG rounds it to 1 mm (the real
    sensor's disparity steps are coarser far away: about 3 mm at 1.5 m, 7 mm at 2.5 m). Lateral noise and the
    projector's shadow are not modelled. Noise for every pixel is drawn whether valid or not, so the draws of
    one call depend only on the image size.

    Args:
        depth: (H, W) float z-depth, metres; 0 or non-finite = missing.
        rng: draws the noise and the dropout.
        params: noise parameters.

    Returns:
        (H, W) float64 metres, 0 where missing (dropped, or noise pushed the depth to <= 0).
    """
    depth = np.asarray(depth, np.float64)
    if depth.ndim != 2:
        raise ValueError(f"kinect_noise: depth must be (H, W), got shape {depth.shape}")
    valid = np.isfinite(depth) & (depth > 0)
    z = np.where(valid, depth, 0.0)
    noisy = z + params.sigma(z) * rng.standard_normal(depth.shape)
    dropped = rng.random(depth.shape) < params.dropout
    keep = valid & ~dropped & ~depth_edges(z, params.edge_threshold, params.edge_width) & (noisy > 0)
    return np.where(keep, noisy, 0.0)


# ------------------------------------------------------------------------------------------------ objects

def _blob(rng: np.random.Generator) -> trimesh.Trimesh:
    """A unit icosphere whose radius is waved by four random smooth waves (0.68..1.32; star-shaped, so the
    surface never crosses itself)."""
    sphere = trimesh.creation.icosphere(subdivisions=4)
    directions = rng.normal(size=(4, 3))
    directions *= rng.uniform(1.5, 3.0, (4, 1)) / np.linalg.norm(directions, axis=1, keepdims=True)
    radius = 1.0 + 0.08 * np.sin(sphere.vertices @ directions.T + rng.uniform(0, 2 * np.pi, 4)).sum(1)
    return trimesh.Trimesh(sphere.vertices * radius[:, None], sphere.faces, process=False)


def _torus_knot(rng: np.random.Generator, p: int = 2, q: int = 3, samples: int = 240, sections: int = 16,
                tube: float = 0.4) -> trimesh.Trimesh:
    """A closed tube of radius ``tube`` around the (p, q) torus knot ((2 + cos qt) cos pt, (2 + cos qt) sin pt,
    -sin qt) (strands >= 1.66 apart, curvature radius >= 1.43: the tube does not cross itself). ``rng`` is
    unused (the shape is fixed)."""
    t = np.linspace(0.0, 2 * np.pi, samples, endpoint=False)
    r, dr = 2.0 + np.cos(q * t), -q * np.sin(q * t)
    curve = np.stack([r * np.cos(p * t), r * np.sin(p * t), -np.sin(q * t)], 1)
    tangent = np.stack([dr * np.cos(p * t) - p * r * np.sin(p * t), dr * np.sin(p * t) + p * r * np.cos(p * t),
                        -q * np.cos(q * t)], 1)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    side = np.cross(tangent, [0.0, 0.0, 1.0])  # the tangent is never vertical
    side /= np.linalg.norm(side, axis=1, keepdims=True)
    up = np.cross(tangent, side)
    angle = np.linspace(0.0, 2 * np.pi, sections, endpoint=False)
    ring = np.cos(angle)[None, :, None] * side[:, None] + np.sin(angle)[None, :, None] * up[:, None]
    vertices = (curve[:, None] + tube * ring).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(samples), np.arange(sections), indexing="ij")
    a, b = i * sections + j, (i + 1) % samples * sections + j
    c, d = (i + 1) % samples * sections + (j + 1) % sections, i * sections + (j + 1) % sections
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def _bunny(rng: np.random.Generator) -> trimesh.Trimesh:
    """The Stanford bunny from the shared data folder, turned from y up to z up."""
    path = shared_data_dir() / BUNNY
    if not path.is_file():
        raise InputError(path, "Stanford bunny mesh not found (set GEO3D_SHARED_DATA to the shared data folder, "
                               f"or choose another object: {', '.join(o for o in OBJECTS if o != 'bunny')})")
    mesh = read_mesh(path).to_trimesh()
    return mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1.0, 0.0, 0.0]))


SINGLE_MESH = {"bunny": _bunny, "blob": _blob, "torus_knot": _torus_knot}
OBJECTS: tuple[str, ...] = (*SINGLE_MESH, *nerf.OBJECTS)


def build_rgbd_object(name: str, rng: np.random.Generator, diagonal: float = 1.0) -> SynthObject:
    """Build object ``name`` (one of :data:`OBJECTS`), centred at the origin, bounding-box diagonal ``diagonal``.

    Single meshes (``bunny``, ``blob``, ``torus_knot``) get a 3D checker albedo of two random palette colours
    (eight checks across the diagonal); the nerf objects keep their parts and patterns.

    Args:
        name: object name.
        rng: draws the shape (blob), colours and pattern phases.
        diagonal: metres.

    Returns:
        SynthObject in world metres, z up, bounds centred at the origin.

    Raises:
        InputError: unknown name, or the bunny's file is missing.
    """
    if name in SINGLE_MESH:
        mesh = SINGLE_MESH[name](rng)
        colors = np.clip(PALETTE[rng.choice(len(PALETTE), 2, replace=False)], 0.05, 0.95)
        pattern = Pattern("checker", colors, float(np.linalg.norm(np.ptp(mesh.bounds, 0))) / 8, float(rng.uniform()))
        obj = SynthObject(name, [Part(mesh, pattern)])
    elif name in nerf.OBJECTS:
        obj = nerf.build_object(name, rng)
    else:
        raise InputError(None, f"object: unknown {name!r}; expected one of {', '.join(OBJECTS)}")
    low, high = obj.bounds
    scale = diagonal / np.linalg.norm(high - low)
    offset = -scale * (low + high) / 2
    for part in obj.parts:
        part.mesh.apply_scale(scale).apply_translation(offset)
        part.pattern = part.pattern.transformed(scale, offset)
    return obj


def surface_mesh(obj: SynthObject, max_edge: float) -> Mesh:
    """The object's outer surface with vertex colours: its merged mesh (triangles split to edges <= ``max_edge``
    metres), less the faces with all three corners inside one other part (deeper than ``INSIDE_TOLERANCE``),
    found with Open3D's signed distance to each (closed) part. Faces crossing into another part are kept, so
    no visible surface is lost. A single-part object is returned whole."""
    mesh = obj.mesh(max_edge)
    if len(obj.parts) == 1:
        return mesh
    vertices, faces = o3d.core.Tensor(mesh.vertices.numpy()), mesh.faces.numpy()
    hidden = np.zeros(len(faces), bool)
    for part in obj.parts:
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(np.asarray(part.mesh.vertices, np.float32)),
                            o3d.core.Tensor(np.asarray(part.mesh.faces, np.uint32)))
        inside = scene.compute_signed_distance(vertices).numpy() < -INSIDE_TOLERANCE
        hidden |= inside[faces].all(1)
    outer = mesh.to_trimesh()
    outer.update_faces(~hidden)
    outer.remove_unreferenced_vertices()
    return Mesh.from_trimesh(outer)


# ------------------------------------------------------------------------------------ cameras, rendering

def camera_matrix(width: int, height: int, fov_x_deg: float = FOV_X_DEG) -> np.ndarray:
    """(3, 3) float64 K in pixels: square pixels, horizontal field of view ``fov_x_deg`` degrees, principal
    point at the image centre (width / 2, height / 2)."""
    focal = 0.5 * width / math.tan(math.radians(0.5 * fov_x_deg))
    return np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


def random_poses(count: int, rng: np.random.Generator, diagonal: float = 1.0) -> np.ndarray:
    """Random cameras around an object of bounding-box diagonal ``diagonal`` metres centred at the origin.

    Each camera looks at a point jittered by up to ``LOOK_AT_JITTER`` x diagonal per axis from the origin, from
    a distance drawn in ``RADIUS_RANGE`` x diagonal, an azimuth in [0, 2 pi) and an elevation drawn uniformly in
    ``ELEVATION_DEG``; world z projects upwards in every image.

    Returns:
        (count, 4, 4) float64 OpenCV camera-to-world poses, metres.
    """
    azimuth = rng.uniform(0.0, 2 * np.pi, count)
    elevation = np.deg2rad(rng.uniform(*ELEVATION_DEG, count))
    radius = diagonal * rng.uniform(*RADIUS_RANGE, count)
    target = diagonal * rng.uniform(-LOOK_AT_JITTER, LOOK_AT_JITTER, (count, 3))
    direction = np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                          np.sin(elevation)], 1)
    pose = nerf._look_at_origin(radius[:, None] * direction)
    pose[:, :3, 3] += target
    return pose


def render_rgbd(obj: SynthObject, cam_to_world: np.ndarray, K: np.ndarray, width: int, height: int,
                nthreads: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Ray-cast ``obj`` from each camera, one ray through each pixel centre.

    The ray of pixel (row v, column u) has camera-frame direction ((u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1):
    its unit z component makes Open3D's hit distance (in units of the direction's length) the z-depth.

    Args:
        obj: the object.
        cam_to_world: (C, 4, 4) float64 OpenCV camera-to-world poses, metres.
        K: (3, 3) float intrinsics, pixels.
        width, height: image size, pixels.
        nthreads: Open3D threads (0: all cores).

    Yields:
        Per camera: colour (H, W, 3) uint8 (shaded albedo, 0 where nothing is hit) and depth (H, W) float64
        z-depth, metres, 0 where nothing is hit.
    """
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    cam_dirs = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    for ok, t, color in nerf.cast_and_shade(obj, cam_to_world, cam_dirs, nthreads):
        color = np.round(color * 255).astype(np.uint8).reshape(height, width, 3)
        yield color, np.where(ok, t, 0.0).reshape(height, width)


# ---------------------------------------------------------------------------------------------- writing

def _remove_stale_frames(out: Path, frames: int) -> None:
    """Delete ``frame-N.*`` files with N >= ``frames`` left by an earlier, longer run into the same folder."""
    if out.is_dir():
        for path in out.iterdir():
            match = _FRAME_FILE.fullmatch(path.name)
            if match and int(match.group(1)) >= frames:
                path.unlink()


def generate_rgbd(out: str | Path, object: str = "bunny", frames: int = 30, noise: str = "kinect", seed: int = 0,
                  width: int = 160, height: int = 120, diagonal: float = 1.0, progress: bool = True) -> Path:
    """Write a synthetic RGB-D scan of one object in the 7-Scenes layout (see the module docstring for the files).

    Args:
        out: output folder (created; frame files of an earlier, longer run in it are removed).
        object: one of :data:`OBJECTS`; ``bunny`` needs ``surface/bunny.ply`` in the shared data folder.
        frames: number of RGB-D frames.
        noise: ``"kinect"`` (:func:`kinect_noise` with :class:`KinectNoise` defaults) or ``"none"`` (exact
            depth; both are rounded to 1 mm by the depth PNG).
        seed: random seed; the same seed writes identical bytes.
        width, height: image size, pixels.
        diagonal: metres, the object's bounding-box diagonal.
        progress: show a tqdm bar over the frames when there are more than 20.

    Returns:
        ``out`` as a Path.

    Raises:
        InputError: unknown object or noise, frames / width / height below 1, diagonal not positive, or the
            bunny's file missing.
    """
    if object not in OBJECTS:
        raise InputError(None, f"object: unknown {object!r}; expected one of {', '.join(OBJECTS)}")
    if noise not in NOISES:
        raise InputError(None, f"noise: unknown {noise!r}; expected one of {', '.join(NOISES)}")
    for name, value in (("frames", frames), ("width", width), ("height", height)):
        nerf._at_least_one(name, value)
    if not (isinstance(diagonal, int | float) and math.isfinite(diagonal) and diagonal > 0):
        raise InputError(None, f"diagonal: expected a positive number of metres, got {diagonal!r}")
    out = Path(out)
    object_rng, camera_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    obj = build_rgbd_object(object, object_rng, diagonal)
    K = camera_matrix(width, height)
    # float32 first: the poses written (float32 in RGBDFrame) are exactly the ones rendered
    poses = random_poses(frames, camera_rng, diagonal).astype(np.float32).astype(np.float64)
    params = KinectNoise() if noise == "kinect" else None
    _remove_stale_frames(out, frames)
    write_intrinsics(out, torch.from_numpy(K))
    K32 = torch.from_numpy(K).float()
    with tqdm(total=frames, desc=f"synth rgbd {object}", unit="frame", disable=not progress or frames <= 20) as bar:
        for i, (color, depth) in enumerate(render_rgbd(obj, poses, K, width, height)):
            if params is not None:
                depth = kinect_noise(depth, noise_rng, params)
            frame = RGBDFrame(torch.from_numpy(color), DepthMap(torch.from_numpy(depth.astype(np.float32)), K=K32),
                              torch.from_numpy(poses[i]))
            write_rgbd_frame(out, i, frame, DEPTH_SCALE, color_format="png")
            bar.update()
    write_mesh(out / "mesh.ply", surface_mesh(obj, MAX_EDGE * diagonal))
    scene = {
        "object": object, "seed": seed, "noise": noise, "noise_parameters": None if params is None else asdict(params),
        "diagonal": diagonal, "frames": frames, "width": width, "height": height, "K": K.tolist(),
        "depth_scale": DEPTH_SCALE, "fov_x_deg": FOV_X_DEG, "camera_distance": [r * diagonal for r in RADIUS_RANGE],
        "elevation_deg": list(ELEVATION_DEG), "bounds": obj.bounds.tolist(),
    }
    atomic_write_text(out / "scene.json", json.dumps(scene, indent=2) + "\n")
    return out
