"""Synthetic KITTI object dataset: street scenes ray-cast with a simulated 64-beam LiDAR.

What is simulated:

- **Scene**: a flat ground plane at z = -1.73 m in the LiDAR frame (the sensor 1.73 m above ground, as
  KITTI); a straight street with a random heading (+-0.3 rad), building blocks and low walls along both
  sides (with gaps), trees (trunk + ellipsoid crown) and poles (some with signs) on the pavements. None
  of the clutter is labelled.
- **Objects**: Car (3-15 per frame), Van (0-2), Cyclist (0-2) and Pedestrian (0-4) as low-poly meshes
  (:mod:`geo3d.synth.shapes_kitti`: a car is a body on wheels with a narrower tapered cabin, a van a tall
  box with a short bonnet, a pedestrian legs in a stride + torso + arms + head, a cyclist a thin rider
  on a two-wheeled bike). Sizes are drawn around KITTI's class means; most vehicles are in the camera
  view (x in [4, 50] m), aligned with the street (+-0.1 rad, either direction), a quarter at a random
  heading. Objects, trees, poles and the ego-vehicle never overlap (a placement whose footprint meets
  an earlier one, by an oriented-rectangle separating-axis test with a 0.3 m gap, or reaches into the
  buildings is redrawn, up to 30 times, then dropped).
- **Sensor**: an HDL-64-like spinning LiDAR at the origin: 64 beams evenly spaced in elevation from +2
  to -24.9 degrees, 2000 azimuth steps over 360 degrees, 120 m range, ray-cast with Open3D's
  ``RaycastingScene``; gaussian range noise (sigma 2 cm) along the ray, random dropout of 5-10 % of the
  returns (rate drawn per frame), reflectance = material reflectance x (0.35 + 0.65 |cos incidence|)
  + noise, rounded to 0.01 as KITTI's. All 360 degrees are kept in the ``.bin``, as in KITTI.
- **Labels** (``label_2``, KITTI's camera-frame format via :func:`geo3d.io.kitti.boxes_lidar_to_objects`
  with the calibration of a real KITTI frame): only objects whose projected 3D box reaches into the
  1242 x 375 image are written (KITTI labels the camera view only). An object with >= 5 of its own
  returns inside its box (shrunk by 1 cm, so rounding in the file cannot lose them) is labelled with its
  class; 2D box = projected 3D box clipped to the image;
  truncation = fraction of that box outside the image; occlusion from LiDAR visibility: the share of
  the rays crossing the object whose first hit is the object (>= 0.85: 0 fully visible, >= 0.45: 1
  partly, else 2 largely occluded). An object in the image with fewer than 5 returns is written as a
  ``DontCare`` region (its 2D box, other fields -1/-1000/-10 as KITTI), which is what KITTI does for
  regions it could not label, so the evaluation ignores detections there instead of counting them as
  false positives.
- **Images**: ``image_2`` is a 1242 x 375 PNG of the LiDAR points in the camera view coloured by depth
  (near red, far blue) on black: enough for viewers and image-size-dependent code, not a photograph.

What is not simulated: camera images, motion (no rolling-shutter skew or ego-motion), terrain slope,
curbs, multiple returns, beam divergence, intensity calibration or range-dependent fall-off, partial
transmission through foliage and glass, the ego-vehicle's own shadow in the scan, Truck / Tram /
Person_sitting / Misc classes, and the camera-LiDAR time offset. Occlusion is judged from the LiDAR
origin (0.27 m behind the camera), not from the camera.

Every frame is a pure function of ``(seed, split, index)``: train and val frames come from independent
``numpy.random.SeedSequence(seed).spawn(2)`` streams, each frame from its own spawned child, so the same
seed writes identical files, in any order and with any number of workers, and an interrupted run
resumes by skipping frames whose files all exist.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import open3d as o3d
import torch
from PIL import Image
from tqdm import tqdm

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_path, atomic_write_text
from geo3d.io.kitti import (
    KittiCalib,
    KittiObject,
    boxes_lidar_to_objects,
    write_calib,
    write_label,
    write_split,
    write_velodyne,
)
from geo3d.synth import shapes_kitti as shapes
from geo3d.types.boxes import Boxes3D, box_corners, points_in_boxes

CLASSES = ("Car", "Van", "Pedestrian", "Cyclist")
IMAGE_SIZE = (1242, 375)  # width, height of KITTI's left colour image
GROUND_Z = -1.73  # metres, ground height in the LiDAR frame
MIN_POINTS = 5  # own returns inside the box needed to label an object
_META = "synth_kitti.json"
_VERSION = 1

# The calibration of KITTI object frame 000001 (training), written as numbers: camera parameters.
CALIB = KittiCalib(
    P0=[[721.5377, 0.0, 609.5593, 0.0], [0.0, 721.5377, 172.854, 0.0], [0.0, 0.0, 1.0, 0.0]],
    P1=[[721.5377, 0.0, 609.5593, -387.5744], [0.0, 721.5377, 172.854, 0.0], [0.0, 0.0, 1.0, 0.0]],
    P2=[[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791], [0.0, 0.0, 1.0, 0.002745884]],
    P3=[[721.5377, 0.0, 609.5593, -339.5242], [0.0, 721.5377, 172.854, 2.199936], [0.0, 0.0, 1.0, 0.002729905]],
    R0_rect=[[0.9999239, 0.00983776, -0.007445048], [-0.009869795, 0.9999421, -0.004278459],
             [0.007402527, 0.004351614, 0.9999631]],
    Tr_velo_to_cam=[[0.007533745, -0.9999714, -0.000616602, -0.004069766],
                    [0.01480249, 0.0007280733, -0.9998902, -0.07631618],
                    [0.9998621, 0.00752379, 0.01480755, -0.2717806]],
    Tr_imu_to_velo=[[0.9999976, 0.0007553071, -0.002035826, -0.8086759],
                    [-0.0007854027, 0.9998898, -0.01482298, 0.3195559],
                    [0.002024406, 0.01482454, 0.9998881, -0.7997231]],
)


@dataclass(frozen=True)
class LidarSpec:
    """The simulated spinning LiDAR (HDL-64E-like).

    Attributes:
        beams: number of lasers, evenly spaced in elevation.
        elevation_deg: (top, bottom) beam elevations, degrees.
        azimuth_steps: firings per revolution (360 degrees).
        max_range: metres; farther returns are lost.
        range_noise: gaussian sigma along the ray, metres.
        dropout: (low, high) range of the per-frame random dropout rate.
    """

    beams: int = 64
    elevation_deg: tuple[float, float] = (2.0, -24.9)
    azimuth_steps: int = 2000
    max_range: float = 120.0
    range_noise: float = 0.02
    dropout: tuple[float, float] = (0.05, 0.10)

    def angles(self) -> tuple[np.ndarray, np.ndarray]:
        """Beam elevations (beams,) and firing azimuths (azimuth_steps,), float64 radians."""
        el = np.deg2rad(np.linspace(*self.elevation_deg, self.beams))
        return el, np.linspace(-np.pi, np.pi, self.azimuth_steps, endpoint=False)

    def directions(self) -> np.ndarray:
        """Unit ray directions: (beams * azimuth_steps, 3) float32, beam-major, azimuth from -pi."""
        return _directions(self)


@lru_cache(maxsize=4)
def _directions(lidar: LidarSpec) -> np.ndarray:
    el, az = lidar.angles()
    el, az = np.meshgrid(el, az, indexing="ij")
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
    dirs = dirs.astype(np.float32)
    dirs.flags.writeable = False
    return dirs


# (mean, std) of l, w, h in metres: KITTI's class statistics.
_SIZES = {
    "Car": ((3.9, 0.4), (1.6, 0.1), (1.56, 0.1)),
    "Van": ((5.0, 0.35), (1.9, 0.1), (2.2, 0.15)),
    "Pedestrian": ((0.8, 0.1), (0.6, 0.06), (1.75, 0.1)),
    "Cyclist": ((1.76, 0.1), (0.6, 0.05), (1.73, 0.08)),
}
_MESHES = {"Car": shapes.car, "Van": shapes.van, "Pedestrian": shapes.pedestrian, "Cyclist": shapes.cyclist}
_EGO = (-0.5, 0.0, 5.0, 2.2, 0.0)  # ego-vehicle footprint: x, y, l, w, yaw
_GAP = 0.3  # metres kept between footprints


@dataclass
class SimFrame:
    """One simulated frame.

    Attributes:
        points: (N, 4) float32 ``x, y, z`` metres (LiDAR frame), reflectance in [0, 1].
        objects: the label lines (labelled objects, then DontCare regions).
        boxes: every placed object (labelled or not) as (M, 7) LiDAR boxes, ``class_names = CLASSES``.
        calib: the calibration.
    """

    points: np.ndarray
    objects: list[KittiObject]
    boxes: Boxes3D
    calib: KittiCalib


# -------------------------------------------------------------------------------------- scene layout

class _Street:
    """The street frame: heading ``phi``, building fronts at lateral offsets ``left`` and ``-right``."""

    def __init__(self, rng: np.random.Generator):
        self.phi = rng.uniform(-0.3, 0.3)
        self.left, self.right = rng.uniform(9.0, 16.0, 2)

    def to_lidar(self, u: float, v: float) -> tuple[float, float]:
        """Street coordinates (u along, v to the left) -> LiDAR x, y."""
        c, s = np.cos(self.phi), np.sin(self.phi)
        return u * c - v * s, u * s + v * c

    def lateral(self, x: float, y: float) -> float:
        """LiDAR x, y -> v (metres to the left of the street axis)."""
        return -x * np.sin(self.phi) + y * np.cos(self.phi)

    def pavement(self, rng: np.random.Generator) -> float:
        """A lateral offset on a random pavement (the 3 m in front of the buildings)."""
        if rng.random() < 0.5:
            return rng.uniform(self.left - 3.0, self.left - 0.6)
        return -rng.uniform(self.right - 3.0, self.right - 0.6)


def _footprint(x: float, y: float, l: float, w: float, yaw: float) -> np.ndarray:
    """(4, 2) corners of a BEV rectangle grown by half the gap on each side."""
    c, s = np.cos(yaw), np.sin(yaw)
    half = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * [(l + _GAP) / 2, (w + _GAP) / 2]
    return half @ np.array([[c, s], [-s, c]]) + [x, y]


def _overlaps_any(quad: np.ndarray, taken: list[np.ndarray]) -> bool:
    """Separating-axis test of a convex quad (4, 2) against each of ``taken``: True if any intersects."""
    others = np.stack(taken)  # (T, 4, 2)
    edges = np.concatenate([np.broadcast_to(quad[1:3] - quad[0:2], (len(others), 2, 2)),
                            others[:, 1:3] - others[:, 0:2]], 1)  # (T, 4, 2): two edge directions each
    axes = np.stack([-edges[..., 1], edges[..., 0]], -1)
    pa = np.einsum("kd,tad->tak", quad, axes)
    pb = np.einsum("tkd,tad->tak", others, axes)
    separated = (pa.max(-1) < pb.min(-1)) | (pb.max(-1) < pa.min(-1))  # (T, 4)
    return bool((~separated.any(1)).any())


def _sample_size(rng: np.random.Generator, cls: str) -> tuple[float, float, float]:
    """Draw l, w, h (metres) from the class statistics, clipped to +-2.5 sigma."""
    return tuple(float(np.clip(rng.normal(m, s), m - 2.5 * s, m + 2.5 * s)) for m, s in _SIZES[cls])


def _sample_pose(rng: np.random.Generator, cls: str, street: _Street) -> tuple[float, float, float]:
    """Draw x, y (metres, LiDAR frame) and yaw (radians) for an object of class ``cls``."""
    if cls == "Pedestrian" and rng.random() < 0.6:  # on a pavement
        x, y = street.to_lidar(rng.uniform(2.0, 35.0), street.pavement(rng))
        return x, y, rng.uniform(-np.pi, np.pi)
    far = {"Car": 50.0, "Van": 50.0, "Cyclist": 40.0, "Pedestrian": 30.0}[cls]
    if rng.random() < 0.8:  # in the camera view (its half-angle is about 40 degrees)
        x = rng.uniform(4.0, far)
        y = x * np.tan(rng.uniform(-0.66, 0.66))
    else:
        x, y = rng.uniform(-40.0, far), rng.uniform(-25.0, 25.0)
    aligned = {"Car": 0.75, "Van": 0.75, "Cyclist": 0.8, "Pedestrian": 0.0}[cls]
    if rng.random() < aligned:
        yaw = street.phi + np.pi * rng.integers(0, 2) + rng.normal(0.0, 0.1)
    else:
        yaw = rng.uniform(-np.pi, np.pi)
    return x, y, yaw


def _layout(rng: np.random.Generator) -> tuple[list[tuple[str, np.ndarray]], list[shapes.PartMesh],
                                                list[shapes.PartMesh]]:
    """Place the labelled objects and the clutter.

    Returns:
        objects: (class name, (7,) float64 LiDAR box) per placed object.
        object_meshes: their meshes in the LiDAR frame, same order.
        clutter: unlabelled meshes (ground, buildings, trees, poles) in the LiDAR frame.
    """
    street = _Street(rng)
    taken = [_footprint(*_EGO)]
    objects, meshes = [], []
    counts = {"Car": rng.integers(3, 16), "Van": rng.integers(0, 3), "Cyclist": rng.integers(0, 3),
              "Pedestrian": rng.integers(0, 5)}
    for cls, count in counts.items():
        for _ in range(count):
            l, w, h = _sample_size(rng, cls)
            for _attempt in range(30):
                x, y, yaw = _sample_pose(rng, cls, street)
                v = street.lateral(x, y)
                reach = np.hypot(l, w) / 2 + 0.3
                if not (-street.right + reach < v < street.left - reach):
                    continue  # would stand in a building
                quad = _footprint(x, y, l, w, yaw)
                if _overlaps_any(quad, taken):
                    continue
                taken.append(quad)
                objects.append((cls, np.array([x, y, GROUND_Z + h / 2, l, w, h, yaw])))
                material = rng.uniform(0.05, 0.6) if cls in ("Car", "Van") else rng.uniform(0.1, 0.5)
                meshes.append(_MESHES[cls](l, w, h, material, rng).placed(yaw, (x, y, GROUND_Z)))
                break

    clutter = [_ground(rng)]
    for make, count in ((shapes.tree, rng.integers(4, 15)), (shapes.pole, rng.integers(3, 11))):
        for _ in range(count):
            mesh = make(rng)
            radius = float(np.linalg.norm(mesh.vertices[:, :2], axis=1).max())  # any yaw stays inside
            x, y = street.to_lidar(rng.uniform(-60.0, 60.0), street.pavement(rng))
            quad = _footprint(x, y, 2 * radius, 2 * radius, street.phi)
            if _overlaps_any(quad, taken):
                continue
            taken.append(quad)
            clutter.append(mesh.placed(rng.uniform(-np.pi, np.pi), (x, y, GROUND_Z)))
    clutter += _buildings(rng, street)
    return objects, meshes, clutter


def _ground(rng: np.random.Generator) -> shapes.PartMesh:
    """The ground plane, 300 m square, asphalt reflectance."""
    return shapes.box(-150, 150, -150, 150, GROUND_Z - 0.1, GROUND_Z, float(rng.uniform(0.15, 0.3)))


def _buildings(rng: np.random.Generator, street: _Street) -> list[shapes.PartMesh]:
    """Building blocks and low walls along both sides of the street, with gaps."""
    out = []
    for side, offset in ((1, street.left), (-1, street.right)):
        u = -90.0
        while u < 90.0:
            length = rng.uniform(8.0, 30.0)
            if rng.random() < 0.2:
                height, depth = rng.uniform(0.8, 2.0), 0.3  # a wall or fence
            else:
                height, depth = rng.uniform(3.0, 18.0), rng.uniform(6.0, 14.0)
            mesh = shapes.building(length, depth, height, float(rng.uniform(0.15, 0.6)))
            yaw = street.phi if side > 0 else street.phi + np.pi  # local +y points away from the street
            out.append(mesh.placed(yaw, (*street.to_lidar(u + length / 2, side * offset), GROUND_Z)))
            u += length + (rng.uniform(3.0, 12.0) if rng.random() < 0.3 else 0.0)
    return out


# --------------------------------------------------------------------------------------------- sensor

def _scan(meshes: list[shapes.PartMesh], boxes: np.ndarray, clutter: list[shapes.PartMesh], lidar: LidarSpec,
          rng: np.random.Generator, nthreads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast one revolution.

    Args:
        meshes: the labelled objects' meshes, LiDAR frame.
        boxes: (M, 7) float64 their LiDAR boxes, same order.
        clutter: unlabelled meshes, LiDAR frame.
        lidar: the sensor.
        rng: random stream (dropout, noise).
        nthreads: Open3D threads (0: all cores).

    Returns:
        points: (P, 4) float32 ``x, y, z`` metres, reflectance in [0, 1] (after dropout and noise).
        owner: (P,) int64 index of the object each point hit, -1 for clutter.
        visibility: (M,) float64 share of the rays crossing object m whose first hit is m (before dropout).
    """
    scene_mesh = shapes.merge(meshes + clutter)
    owner_of_face = np.concatenate([np.full(len(m.faces), i) for i, m in enumerate(meshes)]
                                   + [np.full(len(m.faces), -1) for m in clutter])
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(scene_mesh.vertices), o3d.core.Tensor(scene_mesh.faces.astype(np.uint32)))
    dirs = lidar.directions()
    rays = np.concatenate([np.zeros_like(dirs), dirs], 1)
    hit = scene.cast_rays(o3d.core.Tensor(rays), nthreads=nthreads)
    t = hit["t_hit"].numpy()
    ok = t < lidar.max_range
    face = np.where(ok, hit["primitive_ids"].numpy().astype(np.int64), 0)
    owner = np.where(ok, owner_of_face[face], -2)
    visibility = _visibility(scene, rays, owner, owner_of_face, boxes, lidar, nthreads)

    keep = ok & (rng.random(len(t)) >= rng.uniform(*lidar.dropout))
    range_noise = rng.normal(0.0, lidar.range_noise, len(t))[keep]
    reflect_noise = rng.normal(0.0, 0.02, len(t))[keep]
    dirs, t, face = dirs[keep], t[keep], face[keep]
    cos = np.abs(np.sum(hit["primitive_normals"].numpy()[keep] * dirs, 1))
    reflect = np.clip(scene_mesh.reflectance[face] * (0.35 + 0.65 * cos) + reflect_noise, 0.0, 1.0)
    points = np.concatenate([dirs * (t + range_noise)[:, None], np.round(reflect, 2)[:, None]], 1)
    return points.astype(np.float32), owner[keep], visibility


def _visibility(scene, rays: np.ndarray, owner: np.ndarray, owner_of_face: np.ndarray, boxes: np.ndarray,
                lidar: LidarSpec, nthreads: int) -> np.ndarray:
    """Share of the rays crossing each object whose first hit is that object.

    Only rays inside some object's angular window can cross an object, so only those are traced for all
    their intersections (``list_intersections`` is slower than ``cast_rays``).

    Returns:
        (M,) float64 in [0, 1]; 1 for an object no ray crosses.
    """
    count = len(boxes)
    if count == 0:
        return np.ones(0)
    near = _rays_in_windows(lidar, boxes)
    if not near.any():
        return np.ones(count)
    hits = scene.list_intersections(o3d.core.Tensor(rays[near]), nthreads=nthreads)
    ray = hits["ray_ids"].numpy().astype(np.int64)
    obj = owner_of_face[hits["primitive_ids"].numpy().astype(np.int64)]
    pairs = np.unique(ray[obj >= 0] * count + obj[obj >= 0])  # each (ray, object) crossing once
    crossing = np.bincount(pairs % count, minlength=count)
    seen = np.bincount(owner[owner >= 0], minlength=count)
    return np.where(crossing > 0, seen / np.maximum(crossing, 1), 1.0).clip(0.0, 1.0)


def _rays_in_windows(lidar: LidarSpec, boxes: np.ndarray) -> np.ndarray:
    """(beams * azimuth_steps,) bool: rays within the azimuth / elevation window of some box (0.5 deg margin).

    The azimuth span of a box not containing the sensor is that of its corners; the elevation span is
    bounded by the box's lowest / highest z at its nearest / farthest horizontal distance.
    """
    elevation, azimuth = lidar.angles()
    corners = box_corners(torch.from_numpy(boxes)).numpy()  # (M, 8, 3)
    margin = np.deg2rad(0.5)
    mask = np.zeros((len(elevation), len(azimuth)), dtype=bool)
    for box, corner in zip(boxes, corners):
        centre = np.arctan2(box[1], box[0])
        span = _wrap(np.arctan2(corner[:, 1], corner[:, 0]) - centre)
        rel = _wrap(azimuth - centre)
        in_azimuth = (rel >= span.min() - margin) & (rel <= span.max() + margin)
        dist, reach = np.hypot(box[0], box[1]), np.hypot(box[3], box[4]) / 2
        r = np.array([max(dist - reach, 0.1), dist + reach])
        z = np.array([box[2] - box[5] / 2, box[2] + box[5] / 2])
        el = np.arctan2(z[:, None], r[None, :])
        in_elevation = (elevation >= el.min() - margin) & (elevation <= el.max() + margin)
        mask |= in_elevation[:, None] & in_azimuth[None, :]
    return mask.reshape(-1)


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Wrap radians into [-pi, pi)."""
    return angle - np.floor(angle / (2 * np.pi) + 0.5) * 2 * np.pi


# --------------------------------------------------------------------------------------------- labels

def _occlusion_level(visibility: float) -> int:
    """KITTI occlusion level from the visible share: 0 fully visible, 1 partly, 2 largely occluded."""
    return 0 if visibility >= 0.85 else 1 if visibility >= 0.45 else 2


def _labels(classes: list[str], boxes: np.ndarray, points: np.ndarray, owner: np.ndarray,
            visibility: np.ndarray, calib: KittiCalib) -> list[KittiObject]:
    """Label lines: objects in the image with >= MIN_POINTS own returns, then DontCare regions.

    Args:
        classes: class name of each placed object.
        boxes: (M, 7) float64 LiDAR boxes.
        points: (P, 4) float32 the scan.
        owner: (P,) int64 object index of each point (-1 clutter).
        visibility: (M,) float64 visible share of each object.
        calib: the calibration.
    """
    if len(boxes) == 0:
        return []
    lidar_boxes = Boxes3D(torch.from_numpy(boxes).float(), labels=[CLASSES.index(c) for c in classes],
                          class_names=CLASSES)
    # Count in a box 1 cm smaller on every side: labels are written rounded to 0.1 mm and 1e-4 rad, so
    # these points stay inside the box read back from the file.
    shrunk = torch.from_numpy(boxes).float()
    shrunk[:, 3:6] -= 0.02
    labelled, dont_care = [], []
    for k, obj in enumerate(boxes_lidar_to_objects(lidar_boxes, calib, IMAGE_SIZE)):
        left, top, right, bottom = obj.bbox
        if right - left < 1.0 or bottom - top < 1.0:
            continue  # outside the camera image: KITTI does not label it
        own = torch.from_numpy(points[owner == k, :3])
        if int(points_in_boxes(own, shrunk[k:k + 1]).sum()) >= MIN_POINTS:
            obj.occluded = _occlusion_level(visibility[k])
            labelled.append(obj)
        else:
            dont_care.append(KittiObject("DontCare", -1.0, -1, -10.0, obj.bbox, (-1.0, -1.0, -1.0),
                                         (-1000.0, -1000.0, -1000.0), -10.0))
    return labelled + dont_care


# ----------------------------------------------------------------------------------------- one frame

def simulate_frame(seed: np.random.SeedSequence | int, lidar: LidarSpec = LidarSpec(), nthreads: int = 0) -> SimFrame:
    """Simulate one frame: scene, LiDAR scan and labels (a pure function of ``seed``).

    Args:
        seed: the frame's seed (a spawned ``SeedSequence`` or an int).
        lidar: the sensor.
        nthreads: Open3D ray-casting threads (0: all cores).

    Returns:
        The :class:`SimFrame`.
    """
    rng = np.random.default_rng(seed)
    placed, meshes, clutter = _layout(rng)
    classes = [cls for cls, _ in placed]
    boxes = np.array([box for _, box in placed]).reshape(-1, 7)
    points, owner, visibility = _scan(meshes, boxes, clutter, lidar, rng, nthreads)
    objects = _labels(classes, boxes, points, owner, visibility, CALIB)
    all_boxes = Boxes3D(torch.from_numpy(boxes).float(), labels=[CLASSES.index(c) for c in classes],
                        class_names=CLASSES)
    return SimFrame(points, objects, all_boxes, CALIB)


def depth_image(points: np.ndarray, calib: KittiCalib, image_size: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """Render LiDAR points into the camera image, coloured by depth (near red, far blue), 2 x 2 px each.

    Args:
        points: (N, 3+) metres, LiDAR frame.
        calib: the calibration (``P2``).
        image_size: (width, height) pixels.

    Returns:
        (H, W, 3) uint8 RGB, black where no point projects; the nearest point wins each pixel.
    """
    width, height = image_size
    uv, depth = calib.rect_to_image(calib.lidar_to_rect(points[:, :3]))
    front = depth > 0.5
    u = np.floor(uv[front, 0]).astype(np.int64)
    v = np.floor(uv[front, 1]).astype(np.int64)
    depth = depth[front]
    u = np.concatenate([u, u + 1, u, u + 1])
    v = np.concatenate([v, v, v + 1, v + 1])
    depth = np.tile(depth, 4)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    pixel, depth = v[inside] * width + u[inside], depth[inside]
    order = np.lexsort((depth, pixel))
    pixel, first = np.unique(pixel[order], return_index=True)
    t = np.clip(depth[order][first] / 60.0, 0.0, 1.0)
    colour = np.stack([1.0 - t, 1.0 - np.abs(2.0 * t - 1.0), t], 1)
    image = np.zeros((height * width, 3), dtype=np.uint8)
    image[pixel] = np.round(colour * 255).astype(np.uint8)
    return image.reshape(height, width, 3)


def _frame_paths(out: Path, frame_id: str, image: bool) -> dict[str, Path]:
    paths = {kind: out / "training" / kind / f"{frame_id}.{ext}"
             for kind, ext in (("velodyne", "bin"), ("label_2", "txt"), ("calib", "txt"))}
    if image:
        paths["image_2"] = out / "training" / "image_2" / f"{frame_id}.png"
    return paths


def _write_frame(task: tuple[str, str, np.random.SeedSequence, bool, int]) -> str:
    """Simulate and write one frame (a pool task); each file is written atomically."""
    out, frame_id, seed, image, nthreads = task
    paths = _frame_paths(Path(out), frame_id, image)
    frame = simulate_frame(seed, nthreads=nthreads)
    write_velodyne(paths["velodyne"], frame.points)
    write_calib(paths["calib"], frame.calib)
    if image:
        with atomic_path(paths["image_2"]) as tmp:
            Image.fromarray(depth_image(frame.points, frame.calib)).save(tmp, format="PNG", compress_level=1)
    write_label(paths["label_2"], frame.objects)
    return frame_id


def _init_worker() -> None:
    torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------ dataset

def generate_kitti(out_dir: str | os.PathLike, frames: int, val_frames: int, seed: int, workers: int = 2,
                   image: bool = True, progress: bool = True) -> Path:
    """Write a synthetic KITTI object dataset (see the module docstring for what is simulated).

    Layout: ``training/{velodyne,label_2,calib,image_2}/NNNNNN.*``, ``ImageSets/train.txt`` (frames
    ``000000`` .. ``frames - 1``) and ``ImageSets/val.txt`` (the next ``val_frames``), plus
    ``synth_kitti.json`` recording the parameters. Re-running with the same parameters skips frames whose
    files all exist (generation is deterministic per frame); other parameters in the same folder raise.

    Args:
        out_dir: the dataset folder (created).
        frames: number of training frames.
        val_frames: number of validation frames.
        seed: the seed; train and val frames come from independent streams of it.
        workers: processes generating frames in parallel (1: in this process).
        image: also write the ``image_2`` depth-coloured PNGs.
        progress: show a tqdm progress bar.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ValueError: negative frame counts.
        InputError: ``out_dir`` holds a dataset generated with other parameters, or KITTI files that this
            generator did not write.
    """
    if frames < 0 or val_frames < 0:
        raise ValueError(f"frames and val_frames must be >= 0, got {frames} and {val_frames}")
    out = Path(out_dir)
    _claim(out, {"generator": "geo3d.synth.kitti", "version": _VERSION, "seed": int(seed), "frames": int(frames),
                 "val_frames": int(val_frames)})
    train_seq, val_seq = np.random.SeedSequence(seed).spawn(2)
    seeds = train_seq.spawn(frames) + val_seq.spawn(val_frames)
    ids = [f"{i:06d}" for i in range(frames + val_frames)]
    todo = [(str(out), fid, s, image, 0 if workers <= 1 else 1) for fid, s in zip(ids, seeds)
            if not all(p.is_file() for p in _frame_paths(out, fid, image).values())]
    with tqdm(total=len(ids), initial=len(ids) - len(todo), desc="synth kitti", unit="frame",
              disable=not progress) as bar:
        if workers <= 1 or len(todo) <= 1:
            for task in todo:
                _write_frame(task)
                bar.update()
        else:
            # spawn, not fork: a forked child would inherit Open3D's / torch's thread pools.
            with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
                for _ in pool.imap_unordered(_write_frame, todo):
                    bar.update()
    write_split(out / "ImageSets" / "train.txt", ids[:frames])
    write_split(out / "ImageSets" / "val.txt", ids[frames:])
    return out


def _claim(out: Path, meta: dict) -> None:
    """Record the generation parameters in ``out``, refusing a folder made with other ones."""
    meta_path = out / _META
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old != meta:
            raise InputError(meta_path, f"this folder was generated with {old}, not {meta}: use another "
                                        "folder or delete this one")
        return
    if any((out / "training" / "velodyne").glob("*.bin")):
        raise InputError(out, f"holds KITTI files without {_META} (not written by geo3d synth kitti): "
                              "use an empty folder")
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
