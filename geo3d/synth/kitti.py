"""Synthetic KITTI object dataset: street scenes ray-cast with a simulated 64-beam LiDAR.

What is simulated:

- **Scene**: a street with a random heading (+-0.3 rad) on terrain that slopes gently (up to 3 %, drawn per
  frame) with smooth bumps (2-8 cm), the ground 1.73 m below the sensor at the origin (as KITTI). A road of
  random width between raised sidewalks (curbs 8-18 cm high); along both sides building blocks whose facades
  have a frame of floor bands and pillars in front of recessed glass (rays between them enter windows and
  doors and return from the rooms behind), with gaps, walls, fences and railings (posts and rails, often with
  a wire mesh) and hedges. On the sidewalks trees (a solid trunk, a crown of 1-3 scattering blobs), bushes and
  poles (some with signs). Foliage, hedges and wire mesh are scatter volumes (:mod:`geo3d.synth.lidar`): their
  returns come from inside the volume and part of the rays pass through. Lorries and buses (0-2 per frame)
  drive in the lanes. None of the clutter is labelled (a car on a lorry is a false positive, as in KITTI's
  evaluation).
- **Road edges**: on either side (60 %), segments of guard rail, low wall, hedge strip, a row of car-sized bushes
  or grass verge right behind the curb, with gaps: long linear structures with no car beside them.
- **Objects**: Car (rows of 2-8 parked along the curbs on either side (40 %), plus 2-9 in the lanes), Van (0-2, and
  some in the parked rows), Cyclist (0-2) and Pedestrian (0-4) as low-poly meshes
  (:mod:`geo3d.synth.shapes_kitti`: cars of four body types (sedan, hatchback, wagon, SUV) with a glass cabin
  between roof pillars and seats inside, a van a tall box with a short bonnet, a pedestrian legs in a stride
  + torso + arms + head, a cyclist a thin rider on a two-wheeled bike). Sizes are drawn around KITTI's class
  means; vehicles and cyclists stand on the road, most in the camera view (4-50 m ahead), aligned with the
  street (+-0.1 rad, either direction), a fifth at a random heading; 60 % of pedestrians on the sidewalks.
  Objects, trees, poles and the ego-vehicle never overlap (a placement whose footprint meets an earlier one,
  by an oriented-rectangle separating-axis test with a 0.3 m gap, or reaches into the buildings is redrawn,
  up to 30 times, then dropped).
- **Sensor** (:mod:`geo3d.synth.lidar`): the HDL-64E's two laser blocks (64 beams, +2 to -24.33 degrees,
  1/3 degree apart above -8.33, 1/2 degree below) with per-beam elevation and per-firing azimuth jitter,
  2000 azimuth steps over 360 degrees, 120 m range, ray-cast with Open3D's ``RaycastingScene``; ray drop from
  the received power (reflectance, incidence, range: dark paint, glass and far grazing surfaces drop more)
  plus a 1-4 % random drop; glass that passes most rays on; mixed-pixel returns at depth edges; gaussian
  range noise (2 cm); reflectance that falls with incidence and, beyond 25 m, with range (mostly 0 beyond
  40 m, as KITTI's), rounded to 0.01. All 360 degrees are kept in the ``.bin``, as in KITTI.
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

What is not simulated: camera images, motion (no rolling-shutter skew or ego-motion), multiple returns,
intensity calibration per laser, the ego-vehicle's own shadow in the scan, Truck / Tram / Person_sitting / Misc
labels, and the camera-LiDAR time offset. Occlusion levels are judged from the LiDAR origin (0.27 m behind the
camera), not from the camera, and ignore foliage.

Every frame is a pure function of ``(seed, split, index)``: train and val frames come from independent
``numpy.random.SeedSequence(seed).spawn(2)`` streams, each frame from its own spawned child, so the same
seed writes identical files, in any order and with any number of workers, and an interrupted run
resumes by skipping frames whose files all exist.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open3d as o3d
import torch
from PIL import Image
from tqdm import tqdm

from geo3d.io.atomic import atomic_path, claim_folder
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
from geo3d.synth.lidar import LidarSpec, ScatterVolumes, scan
from geo3d.types.boxes import Boxes3D, box_corners, points_in_boxes

CLASSES = ("Car", "Van", "Pedestrian", "Cyclist")
IMAGE_SIZE = (1242, 375)  # width, height of KITTI's left colour image
GROUND_Z = -1.73  # metres, ground height in the LiDAR frame
MIN_POINTS = 5  # own returns inside the box needed to label an object
_META = "synth_kitti.json"
_VERSION = 7  # 2: terrain, facades, vegetation, HDL-64E model; 3: ray drop tuned; 4: road edges; 5: sparse hedges;
# 7: taller road-edge hedges and rows of bushes (6 was an experiment with more road edges, not kept)

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
    """The street: heading ``phi``, building fronts at lateral offsets ``left`` and ``-right``, a road of half width
    ``road_half`` between raised sidewalks (curb height ``curb``), on gently sloping, bumpy terrain."""

    def __init__(self, rng: np.random.Generator):
        self.phi = rng.uniform(-0.3, 0.3)
        self.left, self.right = rng.uniform(9.0, 16.0, 2)
        self.road_half = rng.uniform(3.5, min(self.left, self.right) - 2.5)
        self.curb = rng.uniform(0.08, 0.18)
        self.grade = np.clip(rng.normal(0.0, 0.01, 2), -0.03, 0.03)  # dz/dx, dz/dy
        self.bump_amp = rng.uniform(0.02, 0.08, 3)
        angle = rng.uniform(0, 2 * np.pi, 3)
        self.bump_k = (2 * np.pi / rng.uniform(12.0, 40.0, 3))[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
        self.bump_phase = rng.uniform(0, 2 * np.pi, 3)

    def to_lidar(self, u, v):
        """Street coordinates (u along, v to the left) -> LiDAR x, y (floats or arrays)."""
        c, s = np.cos(self.phi), np.sin(self.phi)
        return u * c - v * s, u * s + v * c

    def lateral(self, x, y):
        """LiDAR x, y -> v (metres to the left of the street axis)."""
        return -x * np.sin(self.phi) + y * np.cos(self.phi)

    def road_z(self, x, y):
        """Height of the road surface at LiDAR x, y, metres: ``GROUND_Z`` at the origin, slope and bumps."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        bumps = sum(a * (np.sin(k[0] * x + k[1] * y + p) - np.sin(p))
                    for a, k, p in zip(self.bump_amp, self.bump_k, self.bump_phase))
        return GROUND_Z + self.grade[0] * x + self.grade[1] * y + bumps

    def surface_z(self, x, y):
        """Height of the ground at LiDAR x, y, metres: the road, raised by ``curb`` on the sidewalks."""
        return self.road_z(x, y) + self.curb * (np.abs(self.lateral(x, y)) >= self.road_half)

    def pavement(self, rng: np.random.Generator) -> float:
        """A lateral offset on a random sidewalk (between the curb and the buildings)."""
        side = 1 if rng.random() < 0.5 else -1
        front = self.left if side > 0 else self.right
        return side * rng.uniform(self.road_half + 0.4, front - 0.5)

    def lane(self, rng: np.random.Generator, half_width: float) -> float:
        """A lateral offset on the road where an object of half width ``half_width`` fits."""
        room = self.road_half - half_width - 0.2
        return rng.uniform(-room, room)


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


def _sample_pose(rng: np.random.Generator, cls: str, street: _Street, half_width: float
                 ) -> tuple[float, float, float]:
    """Draw x, y (metres, LiDAR frame) and yaw (radians) for an object of class ``cls``: vehicles and cyclists on
    the road, pedestrians mostly on the sidewalks."""
    if cls == "Pedestrian" and rng.random() < 0.6:  # on a sidewalk
        x, y = street.to_lidar(rng.uniform(2.0, 35.0), street.pavement(rng))
        return x, y, rng.uniform(-np.pi, np.pi)
    far = {"Car": 50.0, "Van": 50.0, "Cyclist": 40.0, "Pedestrian": 30.0}[cls]
    if rng.random() < 0.8:  # in the camera view (its half-angle is about 40 degrees)
        u = rng.uniform(4.0, far)
    else:
        u = rng.uniform(-40.0, far)
    x, y = street.to_lidar(u, street.lane(rng, half_width))
    aligned = {"Car": 0.8, "Van": 0.8, "Cyclist": 0.8, "Pedestrian": 0.0}[cls]
    if rng.random() < aligned:
        yaw = street.phi + np.pi * rng.integers(0, 2) + rng.normal(0.0, 0.1)
    else:
        yaw = rng.uniform(-np.pi, np.pi)
    return x, y, yaw


@dataclass
class _Layout:
    """A frame's scene: labelled objects, unlabelled meshes, scatter volumes."""

    objects: list[tuple[str, np.ndarray]]
    object_meshes: list[shapes.PartMesh]
    clutter: list[shapes.PartMesh]
    volumes: ScatterVolumes
    street: _Street


def _place(taken: list[np.ndarray], x: float, y: float, l: float, w: float, yaw: float) -> bool:
    """Claim a footprint unless it overlaps one already taken."""
    quad = _footprint(x, y, l, w, yaw)
    if _overlaps_any(quad, taken):
        return False
    taken.append(quad)
    return True


def _add_object(layout: _Layout, taken: list, rng: np.random.Generator, cls: str, x: float, y: float, yaw: float,
                size: tuple[float, float, float]) -> bool:
    l, w, h = size
    v = layout.street.lateral(x, y)
    reach = np.hypot(l, w) / 2 + 0.3
    if not (-layout.street.right + reach < v < layout.street.left - reach) or not _place(taken, x, y, l, w, yaw):
        return False
    z = float(layout.street.surface_z(x, y))
    layout.objects.append((cls, np.array([x, y, z + h / 2, l, w, h, yaw])))
    material = rng.uniform(0.03, 0.6) if cls in ("Car", "Van") else rng.uniform(0.1, 0.5)
    layout.object_meshes.append(_MESHES[cls](l, w, h, material, rng).placed(yaw, (x, y, z)))
    return True


def _parked_rows(layout: _Layout, taken: list, rng: np.random.Generator) -> None:
    """Rows of cars parked along the curbs, bumper to bumper, facing the traffic on their side."""
    street = layout.street
    for side in (1, -1):
        if rng.random() > 0.4:
            continue
        u = rng.uniform(-30.0, 25.0)
        for _ in range(int(rng.integers(2, 9))):
            cls = "Van" if rng.random() < 0.1 else "Car"
            l, w, h = _sample_size(rng, cls)
            v = side * (street.road_half - w / 2 - rng.uniform(0.15, 0.45))
            x, y = street.to_lidar(u + l / 2, v)
            yaw = street.phi + (np.pi if side > 0 else 0.0) + rng.normal(0.0, 0.04)
            if rng.random() > 0.1:  # a gap in the row now and then
                _add_object(layout, taken, rng, cls, x, y, yaw, (l, w, h))
            u += l + rng.uniform(0.6, 3.0)


def _road_edges(layout: _Layout, taken: list, rng: np.random.Generator) -> None:
    """Linear structures right behind the curbs, with no car beside them: guard rails, low walls, hedge strips and
    grass verges in segments with gaps (real streets have long edges like these; without them every edge in the
    training scenes is a row of parked cars, and a detector learns that a line along the road is cars)."""
    street, volumes = layout.street, layout.volumes
    for side in (1, -1):
        if rng.random() > 0.6:
            continue
        u = rng.uniform(-40.0, 10.0)
        while u < 70.0:
            length = rng.uniform(5.0, 30.0)
            offset = street.road_half + rng.uniform(0.2, 0.8)
            front = street.left if side > 0 else street.right
            depth = min(rng.uniform(0.3, 2.5), front - offset - 0.3)
            v = side * (offset + depth / 2)
            x, y = street.to_lidar(u + length / 2, v)
            kind = rng.random()
            if depth > 0.2 and kind < 0.85 and _place(taken, x, y, length, depth, street.phi):
                z = float(street.surface_z(x, y))
                if kind < 0.2:  # guard rail: posts and a rail
                    rail = shapes.fence(length, rng.uniform(0.6, 0.9), rng)
                    layout.clutter.append(rail.placed(street.phi, (x, y, z)))
                elif kind < 0.35:  # low wall
                    height = rng.uniform(0.3, 1.1)
                    wall = shapes.box(-length / 2, length / 2, -depth / 4, depth / 4, 0.0, height,
                                      float(rng.uniform(0.15, 0.6)))
                    layout.clutter.append(wall.placed(street.phi, (x, y, z)))
                elif kind < 0.5:  # hedge strip, often sparse enough to see into
                    height = rng.uniform(0.6, 2.4)
                    volumes.add((x, y, z + height / 2), (length / 2, depth / 2, height / 2), street.phi, True,
                                rng.uniform(1.0, 6.0), rng.uniform(0.15, 0.45))
                elif kind < 0.7:  # a row of bushes: car-sized blobs of foliage, the road edge's hardest negative
                    _bush_row(volumes, street, u, length, offset, side, depth, rng)
                else:  # grass verge, bushes in it now and then
                    height = rng.uniform(0.1, 0.4)
                    volumes.add((x, y, z + height / 2), (length / 2, depth / 2, height / 2), street.phi, True,
                                rng.uniform(6.0, 15.0), rng.uniform(0.2, 0.5))
            u += length + rng.uniform(0.0, 10.0)


def _bush_row(volumes: ScatterVolumes, street: _Street, u0: float, length: float, offset: float, side: int,
              depth: float, rng: np.random.Generator) -> None:
    """Overlapping ellipsoids of foliage along ``length`` metres of street from ``u0``, in the strip from ``offset``
    to ``offset + depth`` metres from the street's axis on one side (``side``: +1 left, -1 right): each bush
    1.5-4.5 m long and 0.8-2.8 m tall, so many are the size of a car but scatter returns through their volume."""
    u = u0
    leaf, sigma = rng.uniform(0.15, 0.45), rng.uniform(1.0, 6.0)
    while u0 + length - u >= 1.0:  # every bush inside the strip that was checked to be free
        size = min(rng.uniform(1.5, 4.5), u0 + length - u)
        across = rng.uniform(0.5, 1.0) * depth
        height = rng.uniform(0.8, 2.8)
        v = side * offset + side * (depth - across / 2 - rng.uniform(0.0, depth - across))
        x, y = street.to_lidar(u + size / 2, v)
        z = float(street.surface_z(x, y))
        volumes.add((x, y, z + 0.45 * height), (size / 2, across / 2, height / 2), street.phi, False, sigma, leaf)
        u += size * rng.uniform(0.6, 1.1)


def _large_vehicles(layout: _Layout, taken: list, rng: np.random.Generator) -> None:
    """Lorries and buses in the lanes: unlabelled clutter that is not a car."""
    street = layout.street
    for make, chance, size in ((shapes.truck, 0.35, ((6.0, 10.0), (2.3, 2.5), (3.0, 3.8))),
                               (shapes.bus, 0.15, ((10.0, 12.5), (2.45, 2.55), (2.9, 3.3)))):
        if rng.random() > chance:
            continue
        l, w, h = (rng.uniform(*r) for r in size)
        for _attempt in range(20):
            x, y = street.to_lidar(rng.uniform(-30.0, 60.0), street.lane(rng, w / 2))
            yaw = street.phi + np.pi * rng.integers(0, 2) + rng.normal(0.0, 0.05)
            if _place(taken, x, y, l, w, yaw):
                z = float(street.road_z(x, y))
                layout.clutter.append(make(l, w, h, rng.uniform(0.1, 0.7), rng).placed(yaw, (x, y, z)))
                break


def _vegetation(layout: _Layout, taken: list, rng: np.random.Generator) -> None:
    """Trees (solid trunk, crown of 1-3 scattering blobs), bushes and poles on the sidewalks."""
    street, volumes = layout.street, layout.volumes
    for _ in range(int(rng.integers(4, 17))):
        crown = rng.uniform(1.2, 2.8)
        x, y = street.to_lidar(rng.uniform(-60.0, 60.0), street.pavement(rng))
        if not _place(taken, x, y, 2 * crown + 0.6, 2 * crown + 0.6, 0.0):
            continue
        z = float(street.surface_z(x, y))
        mesh, height = shapes.trunk(rng)
        layout.clutter.append(mesh.placed(0.0, (x, y, z)))
        sigma, leaf = rng.uniform(0.8, 2.5), rng.uniform(0.15, 0.45)
        vertical = rng.uniform(1.2, 2.5)
        for blob in range(int(rng.integers(1, 4))):
            radius = crown * (1.0 if blob == 0 else rng.uniform(0.5, 0.8))
            offset = np.zeros(2) if blob == 0 else rng.uniform(-1, 1, 2) * (crown - radius)
            volumes.add((x + offset[0], y + offset[1], z + height + 0.7 * vertical + rng.uniform(-0.3, 0.5)),
                        (radius, radius * rng.uniform(0.8, 1.0), vertical * (1.0 if blob == 0 else 0.7)),
                        rng.uniform(-np.pi, np.pi), False, sigma, leaf)
    for _ in range(int(rng.integers(3, 13))):
        radius = rng.uniform(0.4, 1.2)
        x, y = street.to_lidar(rng.uniform(-60.0, 60.0), street.pavement(rng))
        if not _place(taken, x, y, 2 * radius, 2 * radius, 0.0):
            continue
        z = float(street.surface_z(x, y))
        height = radius * rng.uniform(0.7, 1.3)
        volumes.add((x, y, z + height * 0.9), (radius, radius * rng.uniform(0.7, 1.0), height),
                    rng.uniform(-np.pi, np.pi), False, rng.uniform(1.0, 6.0), rng.uniform(0.15, 0.45))
    for _ in range(int(rng.integers(3, 11))):
        mesh = shapes.pole(rng)
        radius = float(np.linalg.norm(mesh.vertices[:, :2], axis=1).max())  # any yaw stays inside
        x, y = street.to_lidar(rng.uniform(-60.0, 60.0), street.pavement(rng))
        if _place(taken, x, y, 2 * radius, 2 * radius, street.phi):
            layout.clutter.append(mesh.placed(rng.uniform(-np.pi, np.pi), (x, y, float(street.surface_z(x, y)))))


def _layout(rng: np.random.Generator) -> _Layout:
    """Place the labelled objects, the clutter and the scatter volumes of one frame."""
    street = _Street(rng)
    layout = _Layout([], [], [], ScatterVolumes(), street)
    taken = [_footprint(*_EGO)]
    _parked_rows(layout, taken, rng)
    _large_vehicles(layout, taken, rng)
    _road_edges(layout, taken, rng)
    counts = {"Car": rng.integers(2, 10), "Van": rng.integers(0, 3), "Cyclist": rng.integers(0, 3),
              "Pedestrian": rng.integers(0, 5)}
    for cls, count in counts.items():
        for _ in range(count):
            size = _sample_size(rng, cls)
            for _attempt in range(30):
                x, y, yaw = _sample_pose(rng, cls, street, size[1] / 2)
                if _add_object(layout, taken, rng, cls, x, y, yaw, size):
                    break
    _vegetation(layout, taken, rng)
    layout.clutter = [_ground(street)] + layout.clutter + _buildings(rng, street, layout.volumes)
    return layout


def _ground(street: _Street, half: float = 150.0, step: float = 3.0) -> shapes.PartMesh:
    """The terrain: a height field in street coordinates (slope, bumps) with raised sidewalks beyond 2 cm wide
    curb faces at ``+-road_half``; asphalt on the road, paving on the sidewalks."""
    u = np.arange(-half, half + step / 2, step)
    regular = np.arange(-half, half + step / 2, step)
    curbs = [street.road_half, street.road_half + 0.02]
    v = np.unique(np.concatenate([regular[np.abs(np.abs(regular) - street.road_half) > 0.3],
                                  curbs, [-c for c in curbs]]))
    uu, vv = np.meshgrid(u, v, indexing="ij")
    x, y = street.to_lidar(uu, vv)
    z = street.road_z(x, y) + street.curb * (np.abs(vv) >= street.road_half + 0.01)
    vertices = np.stack([x, y, z], -1).reshape(-1, 3).astype(np.float32)
    nu, nv = len(u), len(v)
    i, j = np.meshgrid(np.arange(nu - 1), np.arange(nv - 1), indexing="ij")
    a, b, c, d = i * nv + j, (i + 1) * nv + j, (i + 1) * nv + j + 1, i * nv + j + 1
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    centre_v = np.concatenate([(vv[:-1, :-1] + vv[1:, 1:]).reshape(-1) / 2] * 2)
    rng_free = 0.5 + 0.5 * np.sin(7.3 * centre_v)  # deterministic texture: paving slabs a little brighter
    reflectance = np.where(np.abs(centre_v) < street.road_half, 0.3, 0.35 + 0.05 * rng_free).astype(np.float32)
    return shapes.PartMesh(vertices, faces.astype(np.int32), reflectance)


def _buildings(rng: np.random.Generator, street: _Street, volumes: ScatterVolumes) -> list[shapes.PartMesh]:
    """Building blocks with facades along both sides of the street, walls, fences and hedges in between."""
    out = []
    for side, offset in ((1, street.left), (-1, street.right)):
        u = -90.0
        yaw = street.phi if side > 0 else street.phi + np.pi  # local +y points away from the street
        while u < 90.0:
            length = rng.uniform(8.0, 30.0)
            x, y = street.to_lidar(u + length / 2, side * offset)
            z = float(street.road_z(x, y)) + street.curb - 0.5  # sunk 0.5 m: no gap under it on a slope
            kind = rng.random()
            if kind < 0.1:  # a wall
                mesh = shapes.building(length, 0.3, rng.uniform(0.8, 2.0) + 0.5, float(rng.uniform(0.15, 0.6)))
            elif kind < 0.2:  # a fence: posts and rails, often with a wire mesh between them
                height = rng.uniform(1.0, 2.0)
                mesh = shapes.fence(length, height + 0.5, rng)
                if rng.random() < 0.7:
                    p = rng.uniform(0.25, 0.6)  # share of rays the 4 cm mesh returns
                    volumes.add((x, y, z + 0.5 + height / 2), (length / 2, 0.02, height / 2), yaw, True,
                                -np.log(1 - p) / 0.04, rng.uniform(0.2, 0.5))
            elif kind < 0.3:  # a hedge
                thickness, height = rng.uniform(0.6, 1.2), rng.uniform(0.8, 2.0)
                cx, cy = street.to_lidar(u + length / 2, side * (offset + thickness / 2))
                volumes.add((cx, cy, z + 0.5 + height / 2), (length / 2, thickness / 2, height / 2), yaw, True,
                            rng.uniform(1.0, 6.0), rng.uniform(0.15, 0.45))
                mesh = None
            else:
                mesh = shapes.building(length, rng.uniform(6.0, 14.0), rng.uniform(3.0, 18.0) + 0.5,
                                       float(rng.uniform(0.15, 0.6)), rng)
            if mesh is not None:
                out.append(mesh.placed(yaw, (x, y, z)))
            u += length + (rng.uniform(3.0, 12.0) if rng.random() < 0.3 else 0.0)
    return out


# --------------------------------------------------------------------------------------------- sensor

def _scan(meshes: list[shapes.PartMesh], boxes: np.ndarray, clutter: list[shapes.PartMesh], lidar: LidarSpec,
          rng: np.random.Generator, nthreads: int, volumes: ScatterVolumes | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast one revolution (:func:`geo3d.synth.lidar.scan`) and attribute the returns to the objects.

    Args:
        meshes: the labelled objects' meshes, LiDAR frame.
        boxes: (M, 7) float64 their LiDAR boxes, same order.
        clutter: unlabelled meshes, LiDAR frame.
        lidar: the sensor.
        rng: random stream (jitter, drop, scatter, noise).
        nthreads: Open3D threads (0: all cores).
        volumes: scatter volumes (foliage, wire mesh), or None.

    Returns:
        points: (P, 4) float32 ``x, y, z`` metres, reflectance in [0, 1].
        owner: (P,) int64 index of the object each point came from, -1 for clutter and foliage.
        visibility: (M,) float64 share of the rays crossing object m whose first hit is m (before drop).
    """
    scene_mesh = shapes.merge(meshes + clutter)
    owner_of_face = np.concatenate([np.full(len(m.faces), i) for i, m in enumerate(meshes)]
                                   + [np.full(len(m.faces), -1) for m in clutter])
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(scene_mesh.vertices), o3d.core.Tensor(scene_mesh.faces.astype(np.uint32)))
    result = scan(scene, scene_mesh.reflectance, scene_mesh.material,
                  volumes if volumes is not None else ScatterVolumes(), lidar, rng, nthreads)
    first_owner = np.where(result.first_face >= 0, owner_of_face[np.maximum(result.first_face, 0)], -2)
    visibility = _visibility(scene, result.rays, first_owner, owner_of_face, boxes, nthreads)
    owner = np.where(result.face >= 0, owner_of_face[np.maximum(result.face, 0)], -1)
    return result.points, owner, visibility


def _visibility(scene, rays: np.ndarray, owner: np.ndarray, owner_of_face: np.ndarray, boxes: np.ndarray,
                nthreads: int) -> np.ndarray:
    """Share of the rays crossing each object whose first hit is that object (scatter volumes ignored).

    Only rays inside some object's angular window can cross an object, so only those are traced for all
    their intersections (``list_intersections`` is slower than ``cast_rays``).

    Returns:
        (M,) float64 in [0, 1]; 1 for an object no ray crosses.
    """
    count = len(boxes)
    if count == 0:
        return np.ones(0)
    near = _rays_in_windows(rays[:, 3:], boxes)
    if not near.any():
        return np.ones(count)
    hits = scene.list_intersections(o3d.core.Tensor(rays[near]), nthreads=nthreads)
    ray = hits["ray_ids"].numpy().astype(np.int64)
    obj = owner_of_face[hits["primitive_ids"].numpy().astype(np.int64)]
    pairs = np.unique(ray[obj >= 0] * count + obj[obj >= 0])  # each (ray, object) crossing once
    crossing = np.bincount(pairs % count, minlength=count)
    seen = np.bincount(owner[owner >= 0], minlength=count)
    return np.where(crossing > 0, seen / np.maximum(crossing, 1), 1.0).clip(0.0, 1.0)


def _rays_in_windows(directions: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(R,) bool: rays (unit ``directions`` (R, 3) from the origin) within the azimuth / elevation window of some
    box (0.5 deg margin).

    The azimuth span of a box not containing the sensor is that of its corners; the elevation span is
    bounded by the box's lowest / highest z at its nearest / farthest horizontal distance.
    """
    elevation = np.arcsin(np.clip(directions[:, 2], -1.0, 1.0))
    azimuth = np.arctan2(directions[:, 1], directions[:, 0])
    corners = box_corners(torch.from_numpy(boxes)).numpy()  # (M, 8, 3)
    margin = np.deg2rad(0.5)
    mask = np.zeros(len(directions), dtype=bool)
    for box, corner in zip(boxes, corners):
        centre = np.arctan2(box[1], box[0])
        span = _wrap(np.arctan2(corner[:, 1], corner[:, 0]) - centre)
        rel = _wrap(azimuth - centre)
        dist, reach = np.hypot(box[0], box[1]), np.hypot(box[3], box[4]) / 2
        r = np.array([max(dist - reach, 0.1), dist + reach])
        z = np.array([box[2] - box[5] / 2, box[2] + box[5] / 2])
        el = np.arctan2(z[:, None], r[None, :])
        mask |= ((rel >= span.min() - margin) & (rel <= span.max() + margin)
                 & (elevation >= el.min() - margin) & (elevation <= el.max() + margin))
    return mask


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
    layout = _layout(rng)
    classes = [cls for cls, _ in layout.objects]
    boxes = np.array([box for _, box in layout.objects]).reshape(-1, 7)
    points, owner, visibility = _scan(layout.object_meshes, boxes, layout.clutter, lidar, rng, nthreads,
                                      layout.volumes)
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
    meta = {"generator": "geo3d.synth.kitti", "version": _VERSION, "seed": int(seed), "frames": int(frames),
            "val_frames": int(val_frames)}
    claim_folder(out / _META, meta, any((out / "training" / "velodyne").glob("*.bin")), "geo3d synth kitti")
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
