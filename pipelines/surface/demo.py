"""The surface stage of ``geo3d demo`` (:func:`run_stage`): batch reconstruction of synthetic scans, and the real
7-Scenes frames.

1. Data: three held-out-style synthetic scans (``geo3d synth rgbd``: blob, torus knot, and the bunny when the
   shared data has it), 8 noisy depth views each, 160 x 120.
2. ``geo3d reconstruct`` over them with raw TSDF fusion and with Poisson on the fused points (voxel 1/128 of the
   diagonal): meshes, per-scene point-to-mesh metrics and the summary table.
3. The 25 real 7-Scenes frames (``../shared/data/surface/7scenes``) fused at 1 cm when present: time, peak RAM,
   triangles, and a render of the room.
4. Renders (into the report folder): the first two TSDF meshes, and the room from its middle frame's camera.

The learned refinement is not part of this stage: its training (``configs/surface/unet_tiny_cpu.yaml``) takes
longer than the stage's two minutes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from geo3d.io.shared_data import shared_data_dir
from geo3d.report import StageResult
from geo3d.synth.rgbd import generate_rgbd
from pipelines.surface.fusion import fuse_rgbd
from pipelines.surface.predict import ReconstructOptions, reconstruct_batch


def run_surface_demo(out_dir: str | os.PathLike) -> dict:
    """Generate, reconstruct, evaluate; returns ``{"text", "metrics", "meshes", "room_mesh", "room_frames",
    "summary_md"}`` (``room_frames``: the 7-Scenes folder fused into ``room_mesh``, or None)."""
    from geo3d.io import write_mesh

    out = Path(out_dir)
    scans = out / "scans"
    objects = [("blob", 100), ("torus_knot", 100)]
    if (shared_data_dir() / "surface" / "bunny.ply").is_file():
        objects.append(("bunny", 100))
    for obj, seed in objects:
        scene = scans / f"{obj}_{seed}"
        if not (scene / "scene.json").is_file():
            generate_rgbd(scene, object=obj, frames=8, seed=seed, width=160, height=120, progress=False)
    metrics: dict = {"scans": len(objects), "views_per_scan": 8}
    for method in ("tsdf", "poisson"):
        result = reconstruct_batch(scans, out / method, ReconstructOptions(method=method), progress=False)
        if result.failed:
            raise RuntimeError(f"surface demo: {len(result.failed)} scans failed: {result.failed}")
        rows = [json.loads(p.read_text()) for p in sorted((out / method).glob("*/metrics.json"))]
        # geo3d synth rgbd scales every object to a 1 m diagonal: metres are fractions of the diagonal
        metrics[f"{method}_chamfer_x_diag"] = sum(r["chamfer"] for r in rows) / len(rows)
        metrics[f"{method}_fscore"] = sum(r["fscore"] for r in rows) / len(rows)
    room = shared_data_dir() / "surface" / "7scenes"
    room_mesh = None
    room_frames = room if room.is_dir() else None
    if room.is_dir():
        volume = fuse_rgbd(room, 0.01, progress=False)
        mesh = volume.extract_mesh()
        room_mesh = out / "7scenes_1cm.ply"
        write_mesh(room_mesh, mesh)
        s = volume.stats
        metrics.update({"7scenes_frames": s.frames, "7scenes_fuse_seconds": round(s.fuse_seconds, 2),
                        "7scenes_extract_seconds": round(s.extract_seconds, 2), "7scenes_triangles": mesh.num_faces,
                        "7scenes_peak_rss_mib": round(s.peak_rss_mib)})
    else:
        metrics["7scenes"] = f"skipped ({room} not found)"
    text = (f"`geo3d synth rgbd` wrote {len(objects)} scans ({', '.join(o for o, _ in objects)}; 8 depth views with "
            "Kinect-like noise, 160 x 120, object diagonal 1 m); `geo3d reconstruct` fused them on sparse voxel "
            "blocks (voxel 1/128 of the diagonal) and meshed them by marching cubes (tsdf) and by Poisson on the "
            "fused points; Chamfer is point-to-mesh, F-score at 0.25 % of the diagonal. "
            + ("The real 7-Scenes frames were fused at 1 cm and rendered below." if room_mesh else ""))
    meshes = sorted((out / "tsdf").glob("*/mesh.ply"))
    return {"text": text, "metrics": metrics, "meshes": meshes, "room_mesh": room_mesh, "room_frames": room_frames,
            "summary_md": out / "tsdf" / "summary.md"}


def render_room(mesh: Path, frames: Path, png: Path) -> Path:
    """Render a fused room from its middle RGB-D frame's camera, pulled back 0.5 m (the room as the sensor saw
    it; the 7-Scenes world frame has no "up" for the viewer's default 3/4 view).

    Args:
        mesh: the fused room's mesh file (metres).
        frames: the RGB-D folder it was fused from (its middle frame's pose and K place the camera).
        png: the picture to write (960 x 720).

    Returns:
        ``png``.
    """
    from geo3d.io import read_rgbd_sequence
    from viewers.files import load_scene
    from viewers.render import camera_from_pose, render_png

    sequence = read_rgbd_sequence(frames)
    frame = sequence[len(sequence) // 2]
    height, fy = frame.depth.depth.shape[0], float(frame.depth.K[1, 1])
    fov = 2 * math.degrees(math.atan(height / (2 * fy)))
    scene, title = load_scene([mesh])
    camera = camera_from_pose(frame.cam_to_world.numpy(), fov * 1.2, back=0.5)
    return render_png(scene, png, 960, 720, title=f"{title}, seen from frame {sequence.indices[len(sequence) // 2]}",
                      camera=camera)


def run_stage(out: Path) -> StageResult:
    """The surface stage of ``geo3d demo``: :func:`run_surface_demo` into ``out``, then renders of two TSDF meshes
    (``surface_<scan>.png``, 640 x 480) and of the real room (``surface_7scenes.png``) into the report folder
    ``out.parent``.

    Args:
        out: the stage's folder (``REPORT/surface``); created.

    Returns:
        The stage's report section: the text with the per-scene summary table of ``geo3d reconstruct --method
        tsdf``, the metrics of :func:`run_surface_demo` and the PNGs (all under ``out.parent``).
    """
    from viewers.files import view_files

    out = Path(out)
    report_dir = out.parent
    result = run_surface_demo(out)
    images = [view_files([mesh], out=report_dir / f"surface_{mesh.parent.name}.png", width=640, height=480)
              for mesh in result["meshes"][:2]]
    if result["room_mesh"] is not None:
        images.append(render_room(result["room_mesh"], result["room_frames"], report_dir / "surface_7scenes.png"))
    summary = result["summary_md"].read_text() if result["summary_md"].is_file() else ""
    text = result["text"] + "\n\nPer-scene summary (`geo3d reconstruct --method tsdf`):\n\n" + summary
    return StageResult("surface", text, result["metrics"], images)
