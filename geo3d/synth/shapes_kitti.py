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

from geo3d.synth.lidar import GLASS, OPAQUE


@dataclass
class PartMesh:
    """A triangle soup with a reflectance per triangle.

    Attributes:
        vertices: (V, 3) float32 metres.
        faces: (F, 3) int32 vertex indices.
        reflectance: (F,) float32 base reflectance of each triangle, in [0, 1].
        material: (F,) int8 :data:`~geo3d.synth.lidar.OPAQUE` or :data:`~geo3d.synth.lidar.GLASS` (default opaque).
    """

    vertices: np.ndarray
    faces: np.ndarray
    reflectance: np.ndarray
    material: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.material is None:
            self.material = np.full(len(self.faces), OPAQUE, dtype=np.int8)

    def placed(self, yaw: float, translation: tuple[float, float, float]) -> PartMesh:
        """Rotate by ``yaw`` (radians, about +z) and translate (metres)."""
        c, s = np.cos(yaw), np.sin(yaw)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float32)
        vertices = self.vertices @ rot.T + np.asarray(translation, dtype=np.float32)
        return PartMesh(vertices.astype(np.float32), self.faces, self.reflectance, self.material)

    def as_glass(self) -> PartMesh:
        """The same mesh with every triangle of material :data:`~geo3d.synth.lidar.GLASS`."""
        return PartMesh(self.vertices, self.faces, self.reflectance, np.full(len(self.faces), GLASS, dtype=np.int8))


def merge(parts: list[PartMesh]) -> PartMesh:
    """Concatenate meshes into one (face indices offset)."""
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    return PartMesh(
        np.concatenate([p.vertices for p in parts]).astype(np.float32),
        np.concatenate([p.faces + o for p, o in zip(parts, offsets)]).astype(np.int32),
        np.concatenate([p.reflectance for p in parts]).astype(np.float32),
        np.concatenate([p.material for p in parts]).astype(np.int8),
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

CAR_BODIES = ("sedan", "hatchback", "wagon", "suv")
"""Car body types: where the cabin ends and how tall the body is, within the same label box."""


def car(l: float, w: float, h: float, paint: float, rng: np.random.Generator, body: str | None = None) -> PartMesh:
    """A car of a body type (:data:`CAR_BODIES`, random when None): body on four wheels, a cabin of glass windows
    between roof pillars, seats inside.

    The cabin's side, front and rear faces are glass (the LiDAR sees through them onto the seats and the far
    side); the roof and the pillars are painted. Sedans have a bonnet and a boot, hatchbacks and wagons a cabin
    that reaches the rear (short or long), SUVs a tall body and a long flat cabin.
    """
    body = body if body is not None else str(rng.choice(CAR_BODIES, p=[0.4, 0.25, 0.15, 0.2]))
    if body not in CAR_BODIES:
        raise ValueError(f"car: body must be one of {CAR_BODIES}, got {body!r}")
    wheel_r, wheel_w = (0.36, 0.24) if body == "suv" else (0.31, 0.22)
    belt = h * {"sedan": rng.uniform(0.52, 0.6), "hatchback": rng.uniform(0.52, 0.6),
                "wagon": rng.uniform(0.52, 0.58), "suv": rng.uniform(0.55, 0.62)}[body]
    # cabin (bottom front x, bottom rear x, top front x, top rear x) as fractions of l from the front
    front_bottom = {"sedan": 0.3, "hatchback": 0.33, "wagon": 0.3, "suv": 0.25}[body] + rng.uniform(-0.03, 0.03)
    rear_bottom = {"sedan": 0.82, "hatchback": 0.97, "wagon": 0.98, "suv": 0.98}[body]
    front_top = front_bottom + rng.uniform(0.14, 0.2)
    rear_top = rear_bottom - {"sedan": 0.14, "hatchback": 0.1, "wagon": 0.02, "suv": 0.03}[body]
    x = lambda f: l / 2 - f * l  # noqa: E731 - fraction from the front -> x
    roof = 0.06
    parts = [box(-l / 2, l / 2, -w / 2, w / 2, wheel_r * 0.8, belt, paint)]
    # glass cabin (slightly inset), painted roof slab, pillars at the four cabin corners and in the middle
    cabin_bottom = ((front_bottom - rear_bottom) * l, 0.9 * w)
    cabin_top = ((front_top - rear_top) * l, 0.78 * w)
    centre_bottom = (x(front_bottom) + x(rear_bottom)) / 2
    centre_top = (x(front_top) + x(rear_top)) / 2
    parts.append(tapered_box((abs(cabin_bottom[0]), cabin_bottom[1]), (abs(cabin_top[0]), cabin_top[1]),
                             centre_top - centre_bottom, belt, h - roof, centre_bottom, 0.08).as_glass())
    parts.append(box(x(rear_top), x(front_top), -0.8 * w / 2, 0.8 * w / 2, h - roof, h, paint))
    for frac_bottom, frac_top in ((front_bottom, front_top), (rear_bottom, rear_top),
                                  ((front_bottom + rear_bottom) / 2, (front_top + rear_top) / 2)):
        xb, xt = x(frac_bottom), x(frac_top)
        for side in (-1, 1):
            yb, yt = side * 0.9 * w / 2, side * 0.79 * w / 2
            parts.append(tapered_box((0.1, 0.06), (0.1, 0.06), xt - xb, belt, h - roof, xb, paint)
                         .placed(0.0, (0.0, (yb + yt) / 2, 0.0)))
    seat_top = belt + 0.45 * (h - belt)
    parts.append(box(x(rear_bottom) + 0.2, x(front_bottom) - 0.3, -0.35 * w, 0.35 * w, belt - 0.05, seat_top, 0.1))
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

def trunk(rng: np.random.Generator) -> tuple[PartMesh, float]:
    """A tree trunk (the crown is a scatter volume, see ``geo3d.synth.kitti``): the mesh and its height, metres."""
    height = rng.uniform(1.8, 4.0)
    return cylinder((0, 0, height / 2), rng.uniform(0.12, 0.3), height, "z", 0.3), height


def pole(rng: np.random.Generator) -> PartMesh:
    """A street-light or sign pole, 3-9 m, sometimes with a sign plate."""
    height = rng.uniform(3.0, 9.0)
    parts = [cylinder((0, 0, height / 2), rng.uniform(0.06, 0.15), height, "z", rng.uniform(0.4, 0.8))]
    if rng.random() < 0.4:
        parts.append(box(-0.05, 0.05, -0.4, 0.4, height - 1.2, height - 0.4, 0.9))  # retro-reflective sign
    return merge(parts)


def building(length: float, depth: float, height: float, reflectance: float,
             rng: np.random.Generator | None = None) -> PartMesh:
    """A building block: ``length`` along x, ``depth`` along y (its front at y = 0, the block behind it), ``height``.

    With ``rng``, the front is a facade: the block stands back by a recess (0.15-0.4 m) behind a frame of floor
    bands and pillars in the facade plane, so rays between them enter window and door openings and meet glass
    (see ``geo3d.synth.lidar``) on the recessed wall; ground-floor openings reach the ground (doors, shop fronts).
    Without it, a plain box (walls).
    """
    if rng is None:
        return box(-length / 2, length / 2, 0, depth, 0, height, reflectance)
    recess = rng.uniform(0.15, 0.4)
    room = min(rng.uniform(1.5, 4.0), depth - recess - 1.0)  # seen through the windows
    parts = [box(-length / 2, length / 2, recess + room, depth, 0, height, reflectance),
             box(-length / 2, length / 2, recess, recess + 0.01, 0.0, height, 0.1).as_glass()]
    floor = rng.uniform(2.8, 3.6)
    band = rng.uniform(0.5, 1.1)
    spacing = rng.uniform(2.0, 3.6)
    pillar = rng.uniform(0.35, 0.9)
    z = floor
    while z < height - 0.3:  # floor bands (the parapet above the top floor included)
        parts.append(box(-length / 2, length / 2, 0, recess, z - band / 2, min(z + band / 2, height), reflectance))
        z += floor
    parts.append(box(-length / 2, length / 2, 0, recess, height - 0.5, height, reflectance))
    columns = max(int(length / spacing), 1)
    for k in range(columns + 1):
        xc = -length / 2 + k * length / columns
        parts.append(box(max(xc - pillar / 2, -length / 2), min(xc + pillar / 2, length / 2), 0, recess, 0, height,
                         reflectance))
    return merge(parts)


def fence(length: float, height: float, rng: np.random.Generator) -> PartMesh:
    """Posts every 2-3 m and one or two rails along x (a railing; a wire mesh between them is a scatter volume)."""
    metal = rng.uniform(0.2, 0.6)
    parts = []
    posts = max(int(length / rng.uniform(2.0, 3.0)), 1)
    for k in range(posts + 1):
        xc = -length / 2 + k * length / posts
        parts.append(box(xc - 0.04, xc + 0.04, -0.04, 0.04, 0.0, height, metal))
    for z in (height,) if rng.random() < 0.5 else (height, height * 0.5):
        parts.append(box(-length / 2, length / 2, -0.03, 0.03, z - 0.06, z, metal))
    return merge(parts)


def truck(l: float, w: float, h: float, paint: float, rng: np.random.Generator) -> PartMesh:
    """A lorry (unlabelled clutter): a cab with a glass windscreen at the front, a tall cargo box behind."""
    wheel_r = 0.5
    cab = rng.uniform(1.8, 2.4)
    parts = [
        box(l / 2 - cab, l / 2, -w / 2, w / 2, wheel_r * 0.8, h * 0.55, paint),
        box(l / 2 - cab, l / 2 - 0.3, -w / 2, w / 2, h * 0.55, h * 0.85, paint),
        box(l / 2 - 0.3, l / 2, -0.95 * w / 2, 0.95 * w / 2, h * 0.55, h * 0.82, 0.08).as_glass(),
        box(-l / 2, l / 2 - cab - 0.2, -w / 2, w / 2, wheel_r * 1.4, h, rng.uniform(0.3, 0.8)),
    ]
    for xc in (l / 2 - cab / 2, -l / 2 + 1.2, -l / 2 + 2.5):
        for side in (-1, 1):
            parts.append(cylinder((xc, side * (w / 2 - 0.15), wheel_r), wheel_r, 0.3, "y", 0.04))
    return merge(parts)


def bus(l: float, w: float, h: float, paint: float, rng: np.random.Generator) -> PartMesh:
    """A bus (unlabelled clutter): a long box with a band of glass windows along its sides and front."""
    wheel_r = 0.5
    sill, top = h * rng.uniform(0.4, 0.5), h * 0.85
    parts = [
        box(-l / 2, l / 2, -w / 2, w / 2, wheel_r * 0.8, sill, paint),
        box(-l / 2, l / 2, -0.97 * w / 2, 0.97 * w / 2, sill, top, 0.08).as_glass(),
        box(-l / 2, l / 2, -w / 2, w / 2, top, h, paint),
    ]
    for xc in (l / 2 - 2.5, -l / 2 + 3.0):
        for side in (-1, 1):
            parts.append(cylinder((xc, side * (w / 2 - 0.15), wheel_r), wheel_r, 0.3, "y", 0.04))
    return merge(parts)
