"""A small synthetic scene of meshes on a ground plane, written in real formats.

Used by ``geo3d demo`` and the tests as data with exact ground truth: each object's mesh, its pose, and a
point cloud sampled from the union of surfaces. Files written under ``OUT``:

- ``scene.ply``: all meshes merged (vertex colours), metres, z up.
- ``objects/NN_<kind>.ply``: one mesh per object.
- ``points.ply``: ``num_points`` surface samples with colours and normals.
- ``scene.json``: seed, object kinds, centres, yaw, sizes, file names.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import trimesh

from geo3d.io.atomic import atomic_write_text
from geo3d.io.meshes import write_mesh, write_point_cloud
from geo3d.types import Mesh, PointCloud

KINDS = ("box", "sphere", "cylinder", "cone", "torus", "capsule")
PALETTE = np.array(
    [[0.90, 0.33, 0.25], [0.25, 0.60, 0.90], [0.35, 0.75, 0.35], [0.95, 0.75, 0.20], [0.70, 0.40, 0.85],
     [0.30, 0.80, 0.80]], dtype=np.float32,
)


def _make_shape(kind: str, size: float) -> trimesh.Trimesh:
    """One primitive of about ``size`` metres, resting on z = 0."""
    if kind == "box":
        mesh = trimesh.creation.box(extents=(size, size * 0.7, size * 0.5))
    elif kind == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=3, radius=size / 2)
    elif kind == "cylinder":
        mesh = trimesh.creation.cylinder(radius=size / 3, height=size, sections=32)
    elif kind == "cone":
        mesh = trimesh.creation.cone(radius=size / 2.5, height=size, sections=32)
    elif kind == "torus":
        mesh = trimesh.creation.torus(major_radius=size / 2.5, minor_radius=size / 8)
    elif kind == "capsule":
        mesh = trimesh.creation.capsule(height=size * 0.6, radius=size / 4)
    else:
        raise ValueError(f"unknown shape kind {kind!r}; expected one of {KINDS}")
    mesh.apply_translation([0, 0, -mesh.bounds[0, 2]])
    return mesh


def generate_shapes(out_dir: str | Path, num_objects: int = 5, num_points: int = 20000, seed: int = 0) -> Path:
    """Write a scene of ``num_objects`` coloured primitives on a 6 m x 6 m ground plane.

    Args:
        out_dir: output folder (created).
        num_objects: number of objects, 1-12.
        num_points: surface samples in ``points.ply``.
        seed: random seed; the same seed writes the same scene.

    Returns:
        ``out_dir`` as a Path.
    """
    if not 1 <= num_objects <= 12:
        raise ValueError(f"num_objects must be in [1, 12], got {num_objects}")
    out = Path(out_dir)
    (out / "objects").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    meshes, records = [], []
    slots = rng.permutation(16)[:num_objects]  # a 4 x 4 grid of 1.5 m cells: objects never overlap
    for i, slot in enumerate(slots):
        kind = KINDS[int(rng.integers(len(KINDS)))]
        size = float(rng.uniform(0.5, 1.0))
        yaw = float(rng.uniform(-np.pi, np.pi))
        jitter = rng.uniform(-0.2, 0.2, 3) * [1, 1, 0]
        centre = np.array([(slot % 4 - 1.5) * 1.5, (slot // 4 - 1.5) * 1.5, 0.0]) + jitter
        mesh = _make_shape(kind, size)
        mesh.apply_transform(trimesh.transformations.rotation_matrix(yaw, [0, 0, 1]))
        mesh.apply_translation(centre)
        color = PALETTE[i % len(PALETTE)]
        name = f"objects/{i:02d}_{kind}.ply"
        write_mesh(out / name, Mesh(mesh.vertices, mesh.faces, np.tile(color, (len(mesh.vertices), 1))))
        meshes.append((mesh, color))
        records.append({"kind": kind, "file": name, "centre": centre.round(6).tolist(), "yaw": yaw, "size": size,
                        "color": color.tolist()})
    ground = trimesh.creation.box(extents=(6.5, 6.5, 0.02))
    ground.apply_translation([0, 0, -0.01])
    meshes.append((ground, np.array([0.6, 0.6, 0.6], np.float32)))

    merged = trimesh.util.concatenate([m for m, _ in meshes])
    colors = np.concatenate([np.tile(c, (len(m.vertices), 1)) for m, c in meshes]).astype(np.float32)
    write_mesh(out / "scene.ply", Mesh(merged.vertices, merged.faces, colors))

    samples, face_idx = trimesh.sample.sample_surface(merged, num_points, seed=seed)
    face_colors = colors[merged.faces[face_idx, 0]]
    write_point_cloud(
        out / "points.ply",
        PointCloud(samples.astype(np.float32), colors=face_colors,
                   normals=merged.face_normals[face_idx].astype(np.float32)),
    )
    meta = {"seed": seed, "num_points": num_points, "objects": records, "ground": {"size": 6.5, "z": 0.0}}
    atomic_write_text(out / "scene.json", json.dumps(meta, indent=2))
    return out
