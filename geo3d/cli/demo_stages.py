"""The demo stages of the core: synthetic data in real formats, written, read back and rendered; and the chain of
user commands across two pipelines (``geo3d render --depth`` then ``geo3d reconstruct``).

Each ``run_<stage>(out)`` takes the stage's folder (``REPORT/<stage>``; its pictures and data go beside it, under
the report folder) and returns a :class:`geo3d.report.StageResult`, like every pipeline's ``demo.run_stage``;
:data:`SHOWS` says in one line what each shows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from geo3d.io.shared_data import shared_data_dir
from geo3d.report import StageResult

SHOWS = {
    "shapes": "synthetic meshes and a point cloud written as PLY, read back and rendered headless",
    "formats": "the same data round-tripped through OBJ and 3DGS PLY, with the round-trip errors",
    "kitti": "a synthetic 64-beam LiDAR frame written as KITTI files, read back and rendered with its boxes (and the "
             "real KITTI frame)",
    "chain": "the splatting stage's Gaussians rendered to an RGB-D folder 4 m away (`geo3d render --depth`) and "
             "meshed by `geo3d reconstruct` with no flag, the mesh measured against the true object",
}
CHAIN_VIEWS = 24  # turntable views rendered to RGB-D
CHAIN_SCALE = 2.0  # the training cameras' image size x this


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


def _geo3d(args: list[str], log: Path) -> None:
    """Run ``geo3d ARGS`` in a child process (exactly the user's command), its output into ``log``.

    Raises:
        RuntimeError: the command failed (its last error line and the log file named).
    """
    env = {**os.environ, "GEO3D_DEBUG": ""}
    done = subprocess.run([sys.executable, "-m", "geo3d.cli", *args], capture_output=True, text=True, env=env)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"$ geo3d {' '.join(args)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"geo3d {args[0]} failed (exit {done.returncode}): "
                           f"{errors[-1] if errors else 'no message'}; see {log}")


def run_chain(out: Path) -> StageResult:
    """The splatting stage's Gaussians through two user commands, with no flag to guess: ``geo3d render --depth``
    writes an RGB-D folder from a turntable at the training cameras' distance (4 m), ``geo3d reconstruct`` meshes
    it; the mesh is measured against the generated object's true mesh."""
    from geo3d.io import read_mesh
    from geo3d.metrics.geometry import mesh_metrics
    from viewers.files import view_files

    out, report = Path(out), Path(out).parent
    splats, data = report / "splatting" / "model" / "gaussians.ply", report / "splatting" / "data"
    if not (splats.is_file() and (data / "mesh.ply").is_file()):
        return StageResult("chain", f"Skipped: the chain starts from the splatting stage's Gaussians (`{splats}`), "
                                    "not there: run `geo3d demo --stages splatting chain`.", {"chain": "skipped"})
    render, recon = out / "render", out / "reconstruct"
    render_args = ["render", str(splats), "--cameras", str(data / "transforms_train.json"), "--turntable",
                   str(CHAIN_VIEWS), "--scale", f"{CHAIN_SCALE:g}", "--depth", "--out", str(render)]
    reconstruct_args = ["reconstruct", "--input", str(render / "rgbd"), "--output", str(recon), "--no-progress"]
    _geo3d(render_args, out / "render.log")
    _geo3d(reconstruct_args, out / "reconstruct.log")
    (scene,) = [p.parent for p in recon.glob("*/status.json")]
    status = json.loads((scene / "status.json").read_text())
    mesh, truth = read_mesh(scene / "mesh.ply"), read_mesh(data / "mesh.ply")
    diagonal = float((truth.vertices.max(0).values - truth.vertices.min(0).values).norm())
    m = mesh_metrics(mesh, truth, num_points=20_000, fscore_threshold=0.01 * diagonal)
    poses = sorted((render / "rgbd").glob("frame-*.pose.txt"))
    distance = float(np.mean([np.linalg.norm(np.loadtxt(p)[:3, 3]) for p in poses]))  # the object is at the origin
    metrics = {"views": len(poses), "camera_distance_m": round(distance, 2),
               "depth_max_m": status.get("depth_max"), "voxel_size_m": status.get("voxel_size"),
               "voxel_from": status.get("voxel_from"), "triangles": mesh.num_faces,
               "accuracy_x_diag": m["accuracy"] / diagonal, "completeness_x_diag": m["completeness"] / diagonal,
               "chamfer_x_diag": m["chamfer"] / diagonal, "fscore_1pct": m["fscore"]}
    gif = render / "turntable.gif"
    images = [gif, view_files([scene / "mesh.ply"], out=report / "chain_mesh.png", width=960, height=540)]
    text = (f"Two user commands on the splatting stage's Gaussians, without a flag to guess: `geo3d "
            f"{' '.join(render_args)}` rendered {len(poses)} turntable views at the training cameras' distance "
            f"({distance:.1f} m) with their depth as an RGB-D folder, and `geo3d {' '.join(reconstruct_args)}` "
            f"fused and meshed it, taking its depth range ({metrics['depth_max_m']:.2f} m) and voxel size "
            f"({metrics['voxel_size_m'] * 100:.2f} cm, from the {metrics['voxel_from']}) from the data. Against the "
            f"generated object's true mesh: Chamfer {metrics['chamfer_x_diag']:.4f} of its diagonal, F-score "
            f"{metrics['fscore_1pct']:.3f} at 1 % of it (the Gaussians are the splatting stage's short run). "
            f"Pictures: the rendered turntable, the mesh.")
    return StageResult("chain", text, metrics, images)
