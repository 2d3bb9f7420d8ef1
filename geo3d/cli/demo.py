"""``geo3d demo``: the main job end to end on generated data, written up as a report.

Stages (each timed, each adds metrics and pictures to ``OUT/report.md`` and ``OUT/metrics.json``):

1. ``shapes``: synthesize a mesh scene and a point cloud (PLY), read them back, check them against the generator's
   ground truth, render both headless.
2. ``formats``: round-trip the data through the other writers (OBJ mesh, 3DGS PLY) and measure the error.
3. ``kitti``: synthesize a LiDAR frame as a KITTI dataset, read it back, render it with its label boxes; render the
   real KITTI sample too when ``../shared/data`` is present.
4. ``detection``: the detection pipeline's own demo stage (train or reuse a checkpoint, evaluate, render).
5. ``splatting``: a synthetic object reconstructed as 3D Gaussians from 4 views (short schedule), evaluated on
   held-out views, rendered as a turntable and shown in the viewer.
6. ``surface``: ``geo3d reconstruct`` (TSDF fusion on sparse voxel blocks, and Poisson) over synthetic RGB-D scans
   with point-to-mesh metrics, and the real 7-Scenes frames fused at 1 cm and rendered.
7. ``depth``: synthetic depth-completion frames, a one-minute training run of the depth network, the baselines
   (nearest, linear, IP-Basic) beside it on held-out frames, and the real KITTI frame completed and pictured.
8. ``simulation``: an MPM particle dataset, a short training run of the GIOROM reduced-order model, a held-out
   rollout against the constant-velocity baseline, and a GIF of ground truth beside prediction.

``--stages NAME...`` runs a chosen few (in this order).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from geo3d.io.atomic import atomic_write_text
from geo3d.io.shared_data import shared_data_dir

STAGES = ("shapes", "formats", "kitti", "detection", "splatting", "surface", "depth", "simulation")


class Report:
    """Collects sections, metrics and images; writes ``report.md`` and ``metrics.json`` atomically."""

    def __init__(self, out: Path):
        self.out = out
        self.sections: list[str] = []
        self.metrics: dict[str, dict] = {}

    def add(self, stage: str, text: str, metrics: dict | None = None, images: list[Path] | None = None) -> None:
        lines = [f"## {stage}", "", text.strip(), ""]
        if metrics:
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
            lines.append("")
            self.metrics[stage] = metrics
        for image in images or []:
            lines += [f"![{image.stem}]({image.relative_to(self.out).as_posix()})", ""]
        self.sections.append("\n".join(lines))
        self.write()

    def write(self) -> Path:
        header = (f"# geo3d demo report\n\n{time.strftime('%Y-%m-%d %H:%M:%S')}, torch {torch.__version__}, "
                  f"{platform.machine()}, {torch.get_num_threads()} threads, "
                  f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}\n")
        atomic_write_text(self.out / "report.md", "\n".join([header, *self.sections]))
        atomic_write_text(self.out / "metrics.json", json.dumps(self.metrics, indent=2, default=float))
        return self.out / "report.md"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def stage_shapes(out: Path, report: Report) -> None:
    """Synthesize a mesh scene, read it back, check it, render it."""
    from geo3d.io import read_mesh, read_point_cloud
    from geo3d.synth.shapes import generate_shapes
    from viewers.files import view_files

    data = generate_shapes(out / "data" / "shapes", num_objects=5, num_points=20000, seed=0)
    meta = json.loads((data / "scene.json").read_text())
    scene = read_mesh(data / "scene.ply")
    cloud = read_point_cloud(data / "points.ply")
    per_object = [read_mesh(data / o["file"]) for o in meta["objects"]]
    centre_err = max(
        float(np.linalg.norm(m.vertices.mean(0).numpy()[:2] - np.array(o["centre"][:2])))
        for m, o in zip(per_object, meta["objects"])
    )
    images = [
        view_files([data / "scene.ply"], out=out / "shapes_mesh.png", width=960, height=540),
        view_files([data / "points.ply"], out=out / "shapes_points.png", width=960, height=540),
    ]
    report.add(
        "shapes",
        f"`geo3d synth shapes` wrote {len(per_object)} objects ({', '.join(o['kind'] for o in meta['objects'])}) on "
        f"a ground plane to `{data.relative_to(out)}`; the files were read back with `geo3d.io` and rendered headless.",
        {"scene_vertices": scene.num_vertices, "scene_faces": scene.num_faces, "points": len(cloud),
         "points_with_colors": cloud.colors is not None, "max_object_centre_error_m": centre_err},
        images,
    )


def stage_formats(out: Path, report: Report) -> None:
    """Round-trip the shapes scene through OBJ and 3DGS PLY."""
    from geo3d.io import read_gaussian_ply, read_mesh, read_point_cloud, write_gaussian_ply, write_mesh
    from geo3d.types import Gaussians

    data = out / "data" / "shapes"
    scene = read_mesh(data / "scene.ply")
    write_mesh(data / "scene.obj", scene)
    obj = read_mesh(data / "scene.obj")
    cloud = read_point_cloud(data / "points.ply")
    gaussians = Gaussians.from_points(cloud.points, cloud.colors, scale=0.01, sh_degree=1)
    write_gaussian_ply(data / "points_3dgs.ply", gaussians)
    back = read_gaussian_ply(data / "points_3dgs.ply")
    report.add(
        "formats",
        "The mesh was written as OBJ and the point cloud as a 3DGS PLY (standard attribute names: opens in common "
        "splat viewers), then read back.",
        {"obj_vertex_max_error_m": float((obj.vertices - scene.vertices).abs().max()),
         "obj_faces_equal": bool(torch.equal(obj.faces, scene.faces)),
         "gaussians": len(back), "3dgs_means_max_error_m": float((back.means - gaussians.means).abs().max()),
         "3dgs_sh_max_error": float((back.sh - gaussians.sh).abs().max())},
    )


def stage_kitti(out: Path, report: Report) -> None:
    """A synthetic LiDAR frame in KITTI format, read back and rendered; the real sample too when present."""
    from geo3d.io.kitti import read_frame
    from geo3d.synth.kitti import generate_kitti
    from viewers.files import view_files

    root = generate_kitti(out / "data" / "kitti_synth", frames=1, val_frames=0, seed=0, workers=1)
    frame_id = "000000"
    frame = read_frame(root, frame_id)
    t = root / "training"
    images = [view_files([t / "velodyne" / f"{frame_id}.bin"], boxes=t / "label_2" / f"{frame_id}.txt",
                         calib=t / "calib" / f"{frame_id}.txt", out=out / "kitti_synth.png", width=1280, height=720)]
    metrics = {"synthetic_points": int(len(frame.points)), "synthetic_objects": len(frame.objects),
               "synthetic_types": ", ".join(sorted({o.type for o in frame.objects}))}
    real = shared_data_dir() / "kitti" / "training"
    if (real / "velodyne" / "000001.bin").exists():
        images.append(view_files([real / "velodyne" / "000001.bin"], boxes=real / "label_2" / "000001.txt",
                                 calib=real / "calib" / "000001.txt", out=out / "kitti_real_000001.png",
                                 width=1280, height=720))
        metrics["real_frame"] = "rendered"
    else:
        metrics["real_frame"] = f"skipped ({real} not found)"
    report.add("kitti", "A synthetic LiDAR frame (64-beam ray casting) written as KITTI files, read back and "
                        "rendered with its label boxes; and the real KITTI sample frame with its labels.",
               metrics, images)


def stage_detection(out: Path, report: Report, minutes: float | None) -> None:
    """The detection pipeline's stage: train (or reuse a checkpoint), evaluate, render predictions."""
    from geo3d.io.kitti import read_label
    from pipelines.detection.demo import run_detection_demo
    from viewers.files import view_files

    kwargs = {} if minutes is None else {"max_minutes": minutes}
    result = run_detection_demo(out / "detection", **kwargs)
    images = []
    # The validation frame with the most labelled cars, ground truth (green) against predictions (red).
    val = result["data_dir"] / "training"
    frame_ids = sorted(p.stem for p in result["val_results"].glob("*.txt"))
    if frame_ids:
        frame = max(frame_ids, key=lambda i: sum(o.type == "Car" for o in read_label(val / "label_2" / f"{i}.txt")))
        images.append(view_files([val / "velodyne" / f"{frame}.bin"], boxes=val / "label_2" / f"{frame}.txt",
                                 calib=val / "calib" / f"{frame}.txt", pred=result["val_results"] / f"{frame}.txt",
                                 out=out / f"detection_val_{frame}.png", width=1280, height=720))
    if result["results"] is not None:
        real = result["real_dir"] / "training"
        images.append(view_files([real / "velodyne" / "000001.bin"], boxes=real / "label_2" / "000001.txt",
                                 calib=real / "calib" / "000001.txt", pred=result["results"] / "000001.txt",
                                 out=out / "detection_real_000001.png", width=1280, height=720))
    text = result["text"] + (" Renders: ground truth green, predictions red with their scores (a validation "
                             "frame, then the real KITTI frame)")
    if result.get("real_report") is not None:
        text += ("; then the real-scan report's bird's-eye views, one per real frame (labelled cars green, "
                 "predictions with their scores: matching a car cyan, false positives red, out of the camera's "
                 "view or in DontCare grey).")
    else:
        text += "."
    report.add("detection", text, result["metrics"], images + result.get("images", []))


def stage_splatting(out: Path, report: Report) -> None:
    """The splatting pipeline's stage: 4 views -> Gaussians, test PSNR, turntable GIF, viewer PNG."""
    from pipelines.splatting.demo import run_splatting_demo
    from pipelines.splatting.render import render_to_files
    from viewers.files import view_files

    result = run_splatting_demo(out / "splatting")
    images = []
    for i, render in enumerate(result["renders"]):
        target = out / f"splatting_test_{i}.png"
        target.write_bytes(render.read_bytes())
        images.append(target)
    turntable = render_to_files(result["ply"], out / "splatting" / "turntable", turntable=24, width=256, height=256,
                                progress=False)
    gif = next(p for p in turntable if p.suffix == ".gif")
    images.append(view_files([result["ply"]], out=out / "splatting_gaussians.png", width=960, height=540))
    metrics = {**result["metrics"], "turntable_gif": gif.relative_to(out).as_posix()}
    report.add("splatting", result["text"] + f" Turntable: `{metrics['turntable_gif']}`; the last picture is "
               "`geo3d view` of the exported PLY (Gaussian centres in their colours).", metrics, images)


def render_room(mesh: Path, frames: Path, png: Path) -> Path:
    """Render a fused room from its middle RGB-D frame's camera, pulled back 0.5 m (the room as the sensor saw
    it; the 7-Scenes world frame has no "up" for the viewer's default 3/4 view)."""
    import math

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


def stage_surface(out: Path, report: Report) -> None:
    """The surface pipeline's stage: batch reconstruction with metrics, the real room, renders."""
    from pipelines.surface.demo import run_surface_demo
    from viewers.files import view_files

    result = run_surface_demo(out / "surface")
    images = [view_files([mesh], out=out / f"surface_{mesh.parent.name}.png", width=640, height=480)
              for mesh in result["meshes"][:2]]
    if result["room_mesh"] is not None:
        images.append(render_room(result["room_mesh"], result["room_frames"], out / "surface_7scenes.png"))
    summary = result["summary_md"].read_text() if result["summary_md"].is_file() else ""
    report.add("surface", result["text"] + "\n\nPer-scene summary (`geo3d reconstruct --method tsdf`):\n\n" + summary,
               result["metrics"], images)


def stage_depth(out: Path, report: Report) -> None:
    """The depth-completion stage: synthetic frames, a one-minute training run, baselines, the KITTI frame."""
    from pipelines.depth.demo import run_depth_demo

    result = run_depth_demo(out / "depth")
    report.add("depth", result["text"], result["metrics"], result["images"])


def stage_simulation(out: Path, report: Report) -> None:
    """The simulation stage: MPM data, a short GIOROM training run, a held-out rollout, its GIF."""
    from pipelines.simulation.demo import run_simulation_demo

    result = run_simulation_demo(out / "simulation")
    report.add("simulation", result["text"], result["metrics"], result["images"])


def run_demo(
    out: str | Path = "out/demo", detection_minutes: float | None = None, stages: list[str] | None = None
) -> Path:
    """Run the chosen stages (default all, in :data:`STAGES` order) into ``out``; returns the report path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = set(STAGES if stages is None else stages)
    unknown = chosen - set(STAGES)
    if unknown:
        raise ValueError(f"demo: unknown stage(s) {', '.join(sorted(unknown))}; expected {', '.join(STAGES)}")
    report = Report(out)
    runners: dict[str, Callable[[], None]] = {
        "shapes": lambda: stage_shapes(out, report),
        "formats": lambda: stage_formats(out, report),
        "kitti": lambda: stage_kitti(out, report),
        "detection": lambda: stage_detection(out, report, detection_minutes),
        "splatting": lambda: stage_splatting(out, report),
        "surface": lambda: stage_surface(out, report),
        "depth": lambda: stage_depth(out, report),
        "simulation": lambda: stage_simulation(out, report),
    }
    for name in STAGES:
        if name not in chosen:
            print(f"[demo] {name}: skipped")
            continue
        t0 = time.perf_counter()
        print(f"[demo] {name} ...", flush=True)
        runners[name]()
        print(f"[demo] {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    return report.write()
