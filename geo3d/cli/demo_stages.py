"""The demo stages of the core (no pipeline): synthetic data in real formats, written, read back and rendered.

Each ``run_<stage>(out)`` takes the stage's folder (``REPORT/<stage>``; its pictures and data go beside it, under
the report folder) and returns a :class:`geo3d.report.StageResult`, like every pipeline's ``demo.run_stage``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from geo3d.io.shared_data import shared_data_dir
from geo3d.report import StageResult


def run_shapes(out: Path) -> StageResult:
    """Synthesize a mesh scene, read it back, check it, render it."""
    report = Path(out).parent
    from geo3d.io import read_mesh, read_point_cloud
    from geo3d.synth.shapes import generate_shapes
    from viewers.files import view_files

    data = generate_shapes(report / "data" / "shapes", num_objects=5, num_points=20000, seed=0)
    meta = json.loads((data / "scene.json").read_text())
    scene = read_mesh(data / "scene.ply")
    cloud = read_point_cloud(data / "points.ply")
    per_object = [read_mesh(data / o["file"]) for o in meta["objects"]]
    centre_err = max(
        float(np.linalg.norm(m.vertices.mean(0).numpy()[:2] - np.array(o["centre"][:2])))
        for m, o in zip(per_object, meta["objects"])
    )
    images = [
        view_files([data / "scene.ply"], out=report / "shapes_mesh.png", width=960, height=540),
        view_files([data / "points.ply"], out=report / "shapes_points.png", width=960, height=540),
    ]
    return StageResult(
        "shapes",
        f"`geo3d synth shapes` wrote {len(per_object)} objects ({', '.join(o['kind'] for o in meta['objects'])}) on "
        f"a ground plane to `{data.relative_to(report)}`; the files were read back with `geo3d.io` and rendered "
        "headless.",
        {"scene_vertices": scene.num_vertices, "scene_faces": scene.num_faces, "points": len(cloud),
         "points_with_colors": cloud.colors is not None, "max_object_centre_error_m": centre_err},
        images,
    )


def run_formats(out: Path) -> StageResult:
    """Round-trip the shapes scene through OBJ and 3DGS PLY."""
    report = Path(out).parent
    from geo3d.io import read_gaussian_ply, read_mesh, read_point_cloud, write_gaussian_ply, write_mesh
    from geo3d.types import Gaussians

    data = report / "data" / "shapes"
    scene = read_mesh(data / "scene.ply")
    write_mesh(data / "scene.obj", scene)
    obj = read_mesh(data / "scene.obj")
    cloud = read_point_cloud(data / "points.ply")
    gaussians = Gaussians.from_points(cloud.points, cloud.colors, scale=0.01, sh_degree=1)
    write_gaussian_ply(data / "points_3dgs.ply", gaussians)
    back = read_gaussian_ply(data / "points_3dgs.ply")
    return StageResult(
        "formats",
        "The mesh was written as OBJ and the point cloud as a 3DGS PLY (standard attribute names: opens in common "
        "splat viewers), then read back.",
        {"obj_vertex_max_error_m": float((obj.vertices - scene.vertices).abs().max()),
         "obj_faces_equal": bool(torch.equal(obj.faces, scene.faces)),
         "gaussians": len(back), "3dgs_means_max_error_m": float((back.means - gaussians.means).abs().max()),
         "3dgs_sh_max_error": float((back.sh - gaussians.sh).abs().max())},
    )


def run_kitti(out: Path) -> StageResult:
    """A synthetic LiDAR frame in KITTI format, read back and rendered; the real sample too when present."""
    report = Path(out).parent
    from geo3d.io.kitti import read_frame
    from geo3d.synth.kitti import generate_kitti
    from viewers.files import view_files

    root = generate_kitti(report / "data" / "kitti_synth", frames=1, val_frames=0, seed=0, workers=1)
    frame_id = "000000"
    frame = read_frame(root, frame_id)
    t = root / "training"
    images = [view_files([t / "velodyne" / f"{frame_id}.bin"], boxes=t / "label_2" / f"{frame_id}.txt",
                         calib=t / "calib" / f"{frame_id}.txt", out=report / "kitti_synth.png", width=1280,
                         height=720)]
    metrics = {"synthetic_points": int(len(frame.points)), "synthetic_objects": len(frame.objects),
               "synthetic_types": ", ".join(sorted({o.type for o in frame.objects}))}
    real = shared_data_dir() / "kitti" / "training"
    if (real / "velodyne" / "000001.bin").exists():
        images.append(view_files([real / "velodyne" / "000001.bin"], boxes=real / "label_2" / "000001.txt",
                                 calib=real / "calib" / "000001.txt", out=report / "kitti_real_000001.png",
                                 width=1280, height=720))
        metrics["real_frame"] = "rendered"
    else:
        metrics["real_frame"] = f"skipped ({real} not found)"
    return StageResult("kitti", "A synthetic LiDAR frame (64-beam ray casting) written as KITTI files, read back and "
                        "rendered with its label boxes; and the real KITTI sample frame with its labels.",
               metrics, images)
