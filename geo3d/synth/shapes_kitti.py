"""Low-poly meshes of street objects for the synthetic LiDAR scenes: vehicles, people, trees, poles, buildings.

Each object is a few primitives (boxes, tapered boxes, cylinders, ellipsoids from trimesh) in its own
frame: x along the length (forward), y along the width (left), z up, origin at the bottom centre. The
labelled classes span exactly ``[-l/2, l/2] x [-w/2, w/2] x [0, h]``, so the label box is tight. Every
triangle carries a base reflectance in [0, 1] (the material), used by the LiDAR simulator.

The meshes are plain numpy arrays rather than :class:`geo3d.types.Mesh`: they are built and thrown away
per frame inside the simulator, never crossing an API, and float32/int32 numpy is what Open3D's
``RaycastingScene`` takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import trimesh


@dataclass
class PartMesh:
    """A triangle soup with a reflectance per triangle.

    Attributes:
        vertices: (V, 3) float32 metres.
        faces: (F, 3) int32 vertex indices.
        reflectance: (F,) float32 base reflectance of each triangle, in [0, 1].
    """

    vertices: np.ndarray
    faces: np.ndarray
    reflectance: np.ndarray

    def placed(self, yaw: float, translation: tuple[float, float, float]) -> PartMesh:
        """Rotate by ``yaw`` (radians, about +z) and translate (metres)."""
        c, s = np.cos(yaw), np.sin(yaw)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float32)
        vertices = self.vertices @ rot.T + np.asarray(translation, dtype=np.float32)
        return PartMesh(vertices.astype(np.float32), self.faces, self.reflectance)


def merge(parts: list[PartMesh]) -> PartMesh:
    """Concatenate meshes into one (face indices offset)."""
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    return PartMesh(
        np.concatenate([p.vertices for p in parts]).astype(np.float32),
        np.concatenate([p.faces + o for p, o in zip(parts, offsets)]).astype(np.int32),
        np.concatenate([p.reflectance for p in parts]).astype(np.float32),
    )


@cache
def _unit(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Unit primitives centred at the origin: box (side 1), cylinder (radius 1, height 1, axis z), sphere."""
    if kind == "box":
        mesh = trimesh.creation.box()
    elif kind == "cylinder":
        mesh = trimesh.creation.cylinder(radius=1.0, height=1.0, sections=12)
    else:
        mesh = trimesh.creation.icosphere(subdivisions=1)
    return np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces, dtype=np.int32)


def _part(kind: str, scale, centre, reflectance: float) -> PartMesh:
    vertices, faces = _unit(kind)
    vertices = vertices * np.asarray(scale, dtype=np.float32) + np.asarray(centre, dtype=np.float32)
    return PartMesh(vertices, faces, np.full(len(faces), reflectance, dtype=np.float32))


def box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, reflectance: float) -> PartMesh:
    """Axis-aligned box spanning ``[x0, x1] x [y0, y1] x [z0, z1]`` metres."""
    return _part("box", (x1 - x0, y1 - y0, z1 - z0), ((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2), reflectance)


def tapered_box(bottom: tuple[float, float], top: tuple[float, float], top_shift: float, z0: float, z1: float,
                x_centre: float, reflectance: float) -> PartMesh:
    """A box whose top face is smaller (a car cabin): ``bottom``/``top`` are (length, width) metres.

    The top face is centred ``top_shift`` metres ahead of the bottom one (negative: towards the back).
    """
    vertices, faces = _unit("box")
    upper = vertices[:, 2] > 0
    size = np.where(upper[:, None], np.array(top, dtype=np.float32), np.array(bottom, dtype=np.float32))
    out = np.empty_like(vertices)
    out[:, :2] = vertices[:, :2] * size
    out[:, 0] += x_centre + np.where(upper, top_shift, 0.0)
    out[:, 2] = np.where(upper, z1, z0)
    return PartMesh(out, faces, np.full(len(faces), reflectance, dtype=np.float32))


def cylinder(centre, radius: float, length: float, axis: str, reflectance: float) -> PartMesh:
    """Cylinder of ``radius`` and ``length`` metres about ``axis`` (``"y"`` for wheels, ``"z"`` for poles)."""
    part = _part("cylinder", (radius, radius, length), (0, 0, 0), reflectance)
    if axis == "y":
        part.vertices = part.vertices[:, [0, 2, 1]]
        part.faces = part.faces[:, ::-1].copy()  # the swap mirrors the mesh: keep faces outward
    part.vertices = part.vertices + np.asarray(centre, dtype=np.float32)
    return part


def ellipsoid(centre, radii, reflectance: float) -> PartMesh:
    """Ellipsoid with semi-axes ``radii`` (x, y, z) metres."""
    return _part("sphere", radii, centre, reflectance)


# ------------------------------------------------------------------------------------ labelled classes

def car(l: float, w: float, h: float, paint: float, rng: np.random.Generator) -> PartMesh:
    """A car: body on four wheels plus a narrower, shorter cabin with a sloped windscreen."""
    wheel_r, wheel_w = 0.31, 0.22
    body_top = h * rng.uniform(0.52, 0.6)
    cabin_len = l * rng.uniform(0.5, 0.6)
    parts = [
        box(-l / 2, l / 2, -w / 2, w / 2, wheel_r * 0.8, body_top, paint),
        tapered_box((cabin_len, 0.86 * w), (0.7 * cabin_len, 0.74 * w), -0.12 * cabin_len, body_top, h,
                    -0.06 * l, 0.08),  # glass: low reflectance
    ]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(cylinder((sx * (l / 2 - 0.8), sy * (w / 2 - wheel_w / 2), wheel_r), wheel_r, wheel_w,
                                  "y", 0.04))
    return merge(parts)


def van(l: float, w: float, h: float, paint: float, rng: np.random.Generator) -> PartMesh:
    """A van: a tall boxy body over most of the length, a short low bonnet at the front."""
    wheel_r, wheel_w = 0.34, 0.24
    bonnet_top = h * rng.uniform(0.42, 0.5)
    box_front = l / 2 - l * rng.uniform(0.12, 0.18)
    parts = [
        box(-l / 2, l / 2, -w / 2, w / 2, wheel_r * 0.8, bonnet_top, paint),
        tapered_box((box_front + l / 2, 0.97 * w), (box_front + l / 2 - 0.4, 0.95 * w), -0.2, bonnet_top, h,
                    (box_front - l / 2) / 2, paint),
    ]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(cylinder((sx * (l / 2 - 0.9), sy * (w / 2 - wheel_w / 2), wheel_r), wheel_r, wheel_w,
                                  "y", 0.04))
    return merge(parts)


def pedestrian(l: float, w: float, h: float, cloth: float, rng: np.random.Generator) -> PartMesh:
    """A walking person: two legs in a stride (spanning the length), torso, arms (spanning the width), head."""
    hip = 0.5 * h
    shoulder = h - 0.25
    leg = 0.15
    parts = [
        box(l / 2 - leg, l / 2, 0.02, 0.02 + leg, 0, hip, cloth),  # front leg
        box(-l / 2, -l / 2 + leg, -0.02 - leg, -0.02, 0, hip, cloth),  # back leg
        box(-0.13, 0.13, -w / 2 + 0.11, w / 2 - 0.11, hip, shoulder, cloth),  # torso
        box(-0.06, 0.06, w / 2 - 0.11, w / 2, hip + 0.1, shoulder, cloth),  # arms
        box(-0.06, 0.06, -w / 2, -w / 2 + 0.11, hip + 0.1, shoulder, cloth),
        ellipsoid((0, 0, h - 0.12), (0.1, 0.09, 0.12), 0.25),  # head
    ]
    return merge(parts)


def cyclist(l: float, w: float, h: float, cloth: float, rng: np.random.Generator) -> PartMesh:
    """A rider on a bicycle: two thin wheels and a frame over the length, handlebar across the width,
    a thin upright rider (legs, torso, arms reaching the bar, head)."""
    r = 0.34
    bar_x, bar_z = l / 2 - 0.5, 1.05
    parts = [
        cylinder((l / 2 - r, 0, r), r, 0.05, "y", 0.1),
        cylinder((-l / 2 + r, 0, r), r, 0.05, "y", 0.1),
        box(-l / 2 + r, bar_x, -0.03, 0.03, 0.5, 0.58, 0.5),  # frame
        box(bar_x - 0.03, bar_x + 0.03, -w / 2, w / 2, bar_z - 0.03, bar_z + 0.03, 0.5),  # handlebar
        box(-0.35, -0.15, -0.17, -0.05, 0.3, 0.9, cloth),  # legs
        box(-0.35, -0.15, 0.05, 0.17, 0.3, 0.9, cloth),
        box(-0.4, -0.1, -0.18, 0.18, 0.9, h - 0.24, cloth),  # torso
        box(-0.25, bar_x, -0.22, -0.15, bar_z + 0.05, bar_z + 0.25, cloth),  # arms
        box(-0.25, bar_x, 0.15, 0.22, bar_z + 0.05, bar_z + 0.25, cloth),
        ellipsoid((-0.22, 0, h - 0.12), (0.1, 0.09, 0.12), 0.25),  # head
    ]
    return merge(parts)


# ------------------------------------------------------------------------------- clutter (not labelled)

def tree(rng: np.random.Generator) -> PartMesh:
    """A trunk and an ellipsoid crown, 4-9 m tall."""
    trunk_h = rng.uniform(1.8, 4.0)
    crown = rng.uniform(1.2, 2.5, 2).tolist() + [rng.uniform(1.5, 3.0)]
    return merge([
        cylinder((0, 0, trunk_h / 2), rng.uniform(0.12, 0.3), trunk_h, "z", 0.3),
        ellipsoid((0, 0, trunk_h + 0.7 * crown[2]), (crown[0], crown[0], crown[2]), rng.uniform(0.1, 0.3)),
    ])


def pole(rng: np.random.Generator) -> PartMesh:
    """A street-light or sign pole, 3-9 m, sometimes with a sign plate."""
    height = rng.uniform(3.0, 9.0)
    parts = [cylinder((0, 0, height / 2), rng.uniform(0.06, 0.15), height, "z", rng.uniform(0.4, 0.8))]
    if rng.random() < 0.4:
        parts.append(box(-0.05, 0.05, -0.4, 0.4, height - 1.2, height - 0.4, 0.9))  # retro-reflective sign
    return merge(parts)


def building(length: float, depth: float, height: float, reflectance: float) -> PartMesh:
    """A building block: ``length`` along x, ``depth`` along y (from y=0 to y=depth), ``height`` metres."""
    return box(-length / 2, length / 2, 0, depth, 0, height, reflectance)
