"""The surface stage of ``geo3d demo``: batch reconstruction of synthetic scans, and the real 7-Scenes frames.

1. Data: three held-out-style synthetic scans (``geo3d synth rgbd``: blob, torus knot, and the bunny when the
   shared data has it), 8 noisy depth views each, 160 x 120.
2. ``geo3d reconstruct`` over them with raw TSDF fusion and with Poisson on the fused points (voxel 1/128 of the
   diagonal): meshes, per-scene point-to-mesh metrics and the summary table.
3. The 25 real 7-Scenes frames (``../shared/data/surface/7scenes``) fused at 1 cm when present: time, peak RAM,
   triangles, and a render of the room.

The learned refinement is not part of this stage: its training (``configs/surface/unet_tiny_cpu.yaml``) takes
longer than the stage's two minutes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from geo3d.io.shared_data import shared_data_dir
from geo3d.synth.rgbd import generate_rgbd
from pipelines.surface.predict import ReconstructOptions, reconstruct_batch
from pipelines.surface.fusion import fuse_rgbd


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
