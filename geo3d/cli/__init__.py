"""The ``geo3d`` command line: the one place (this package) that wires pipelines and viewers together.

Subcommands:
    fit | validate | test | predict   Lightning CLI (model and data chosen by class path in the YAML)
    synth KIND OUT                    write synthetic data in real file formats
    view FILE...                      show point clouds, meshes, 3DGS splats and KITTI frames (window or PNG)
    render SCENE.ply                  render a 3DGS PLY: a transforms.json's cameras or a turntable -> PNG, GIF
    demo                              every pipeline on fresh data and the shared samples (zoo weights) -> report
    reconstruct --input D --output D  batch surface reconstruction of RGB-D scene folders (resumable)
    complete RGB SPARSE --out D.png   depth completion of one frame (a trained model or IP-Basic/linear/nearest)
    zoo [NAME]                        the model zoo's table, or one model card (weights loaded as zoo:NAME)

Bad input prints one line ``geo3d: error: <file>: <problem>`` and exits with code 2
(set ``GEO3D_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
import warnings
from pathlib import Path

from geo3d.cli.lightning import run_lightning
from geo3d.cli.paths import check_output_file, check_output_folder
from geo3d.errors import InputError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

EXAMPLES = """\
examples:
  geo3d demo                                  # end to end on generated data -> out/demo/report.md
  geo3d synth shapes out/shapes               # a small mesh scene + point cloud (PLY)
  geo3d synth kitti data/synth_kitti --frames 400 --val-frames 120 --seed 0
  geo3d fit --config configs/detection/second_tiny_cpu.yaml
  geo3d view frame.bin --boxes label.txt --calib calib.txt --out frame.png
  geo3d render scene_3dgs.ply --turntable 36 --out out/turntable
  geo3d reconstruct --input data/synth_rgbd --output out/recon --method tsdf --workers 2
  geo3d complete rgb.png sparse_depth.png --out dense.png --method ip_basic
  geo3d zoo                                   # the model zoo: trained weights, loaded as zoo:NAME
"""


# --- synth -------------------------------------------------------------------------------------------

def _cmd_synth(args: argparse.Namespace) -> None:
    check_output_folder(args.out)
    if args.kind == "shapes":
        from geo3d.synth.shapes import generate_shapes

        out = generate_shapes(args.out, num_objects=args.objects, num_points=args.points, seed=args.seed)
    elif args.kind == "kitti":
        from geo3d.synth.kitti import generate_kitti

        out = generate_kitti(args.out, frames=400 if args.frames is None else args.frames,
                             val_frames=args.val_frames, seed=args.seed, workers=args.workers)
    elif args.kind == "nerf":
        from geo3d.synth.nerf import generate_nerf

        out = generate_nerf(args.out, object=args.object or "toy", res=128 if args.res is None else args.res,
                            views=args.views, test_views=args.test_views, seed=args.seed)
    elif args.kind == "rgbd":
        from geo3d.synth.rgbd import generate_rgbd

        width = 160 if args.res is None else args.res
        if width < 2:  # the height is 3/4 of it: generate_rgbd's own message would name width or height
            raise InputError(None, f"--res: expected an image width of at least 2 pixels (the height is 3/4 of it), "
                                   f"got {width}")
        out = generate_rgbd(args.out, object=args.object or "bunny", frames=30 if args.frames is None else args.frames,
                            noise=args.noise, seed=args.seed, width=width, height=width * 3 // 4)
    elif args.kind == "depth":
        from geo3d.synth.depth import generate_depth

        out = generate_depth(args.out, frames=100 if args.frames is None else args.frames, seed=args.seed,
                             width=args.width, height=args.height, kind=args.depth_kind)
    elif args.kind == "particles":
        from geo3d.synth.particles import generate_particles

        out = generate_particles(args.out, material=args.material, dim=args.dim, trajectories=args.trajectories,
                                 particles=args.particles, steps=args.steps, seed=args.seed, npz=args.npz,
                                 frame_dt=args.dt, walls=args.walls)
    else:  # argparse restricts choices; kept for clarity
        raise InputError(None, f"unknown synth kind {args.kind!r}")
    print(f"wrote {args.kind} data to {out}")


def _add_synth(sub) -> None:
    p = sub.add_parser(
        "synth", help="write synthetic data in real file formats",
        description="Write synthetic data with exact ground truth, in the formats real data uses.",
        epilog=textwrap.dedent("""\
            kinds:
              shapes  coloured primitives on a ground plane: scene.ply, objects/*.ply, points.ply, scene.json
              kitti   LiDAR scenes ray-cast by a simulated 64-beam sensor, as a KITTI object dataset
              nerf    RGBA renders of one coloured object around a sphere, NeRF-synthetic layout + mesh.ply
              rgbd    RGB-D scans of one object with Kinect-like depth noise, 7-Scenes layout + mesh.ply
              depth   textured rooms and streets: RGB + exact depth + K, KITTI depth-completion layout
              particles  MLS-MPM particle trajectories (elastic, fluid, sand, plasticine), LagrangeBench h5
                      (+ GNS npz) with metadata.json
            examples:
              geo3d synth shapes out/shapes --objects 5 --seed 0
              geo3d synth kitti data/synth_kitti --frames 400 --val-frames 120 --seed 0
              geo3d synth nerf data/synth_nerf --object toy --res 128 --views 100 --test-views 50
              geo3d synth rgbd data/synth_rgbd --object bunny --frames 30 --noise kinect --res 160
              geo3d synth depth data/synth_depth --frames 100 --seed 0 --width 320 --height 96 --depth-kind mixed
              geo3d synth particles data/synth_sand --material sand --dim 2 --trajectories 20 --particles 2000 \\
                  --steps 200 --seed 0"""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("kind", choices=["shapes", "kitti", "nerf", "rgbd", "depth", "particles"],
                   help="what to generate")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same files")
    p.add_argument("--objects", type=int, default=5, help="shapes: number of objects (default 5)")
    p.add_argument("--points", type=int, default=20000, help="shapes: surface samples (default 20000)")
    p.add_argument("--frames", type=int, help="kitti: training frames (default 400); rgbd: frames (default 30); "
                                              "depth: frames (default 100)")
    p.add_argument("--val-frames", type=int, default=120, help="kitti: validation frames (default 120)")
    p.add_argument("--workers", type=int, default=2, help="kitti: worker processes (default 2)")
    p.add_argument("--object", metavar="NAME",
                   help="nerf: toy, chair, mug or robot (default toy); rgbd: also bunny, blob, torus_knot "
                        "(default bunny)")
    p.add_argument("--res", type=int, help="nerf: image width and height in pixels (default 128); "
                                           "rgbd: image width, height 3/4 of it (default 160)")
    p.add_argument("--views", type=int, default=100, help="nerf: training views (default 100)")
    p.add_argument("--test-views", type=int, default=50, help="nerf: test views (default 50)")
    p.add_argument("--noise", choices=["kinect", "none"], default="kinect",
                   help="rgbd: Kinect v1 depth noise, or exact depth (default kinect)")
    p.add_argument("--width", type=int, default=320, help="depth: image width in pixels (default 320)")
    p.add_argument("--height", type=int, default=96, help="depth: image height in pixels (default 96)")
    p.add_argument("--depth-kind", choices=["indoor", "outdoor", "mixed"], default="mixed",
                   help="depth: rooms, streets, or each frame either at random (default mixed)")
    p.add_argument("--material", default="elastic",
                   help="particles: elastic, fluid, sand or plasticine (default elastic)")
    p.add_argument("--dim", type=int, default=2, help="particles: 2 or 3 dimensions (default 2)")
    p.add_argument("--trajectories", type=int, default=20,
                   help="particles: trajectories, split 80/10/10 into train/valid/test (default 20: 16/2/2)")
    p.add_argument("--particles", type=int, default=2000, help="particles: particles per trajectory (default 2000)")
    p.add_argument("--steps", type=int, default=200, help="particles: stored frames per trajectory (default 200)")
    p.add_argument("--dt", type=float, default=0.0025, help="particles: seconds between stored frames "
                                                            "(default 0.0025)")
    p.add_argument("--walls", help="particles: slip or sticky box walls (default: slip for fluid and elastic, "
                                   "sticky for sand and plasticine)")
    p.add_argument("--npz", action="store_true", help="particles: also write GNS train/valid/test.npz")
    p.set_defaults(func=_cmd_synth)


# --- view --------------------------------------------------------------------------------------------

def _cmd_view(args: argparse.Namespace) -> None:
    if args.out is not None:
        check_output_file(args.out)
    if args.depth:
        from viewers.depth import view_depth

        used = [f"--{name}" for name in ("boxes", "pred", "calib") if getattr(args, name) is not None]
        if used:
            raise InputError(None, f"{', '.join(used)}: not used with --depth (depth maps are drawn alone)")
        written = view_depth(args.files, image=args.image, K=args.K,
                             depth_scale=256.0 if args.depth_scale is None else args.depth_scale, out=args.out,
                             width=args.width, height=args.height, view=args.view)
        for path in written:
            print(f"wrote {path}")
        return
    used = [flag for flag, value in (("--image", args.image), ("--K", args.K), ("--depth-scale", args.depth_scale))
            if value is not None]
    if used:
        raise InputError(None, f"{', '.join(used)}: only for depth maps; add --depth to read the files as depth maps")
    from viewers.particles import PARTICLE_SUFFIXES, view_particles

    particles = [path for path in args.files if path.suffix.lower() in PARTICLE_SUFFIXES]
    if particles:
        if len(args.files) > 1:
            raise InputError(particles[0], "particle files are shown alone: give one file")
        used = [f"--{name}" for name in ("boxes", "pred", "calib") if getattr(args, name) is not None]
        if used:
            raise InputError(particles[0], f"{', '.join(used)}: not used with particle files")
        out = view_particles(particles[0], args.out, args.trajectory, args.baseline, args.color, args.width,
                             args.height, args.max_frames, args.fps)
        if out is not None:
            print(f"wrote {out}")
        return
    used = [flag for flag, value in (("--trajectory", args.trajectory != 0), ("--baseline", args.baseline),
                                     ("--color", args.color != "speed"), ("--max-frames", args.max_frames))
            if value]
    if used:
        raise InputError(None, f"{', '.join(used)}: only for particle files (.h5 .hdf5 .npz)")
    from viewers.files import view_files

    out = view_files(args.files, boxes=args.boxes, calib=args.calib, pred=args.pred, out=args.out,
                     width=1280 if args.width is None else args.width,
                     height=720 if args.height is None else args.height, view=args.view, gaussians=args.gaussians)
    if out is not None:
        print(f"wrote {out}")


def _add_view(sub) -> None:
    p = sub.add_parser(
        "view", help="show point clouds, meshes, 3DGS splats and KITTI frames",
        description="Show files in an Open3D window, or render them headless to a PNG (with --out, or when there is "
                    "no display). Point clouds are coloured by height (or LiDAR intensity), KITTI label boxes "
                    "are drawn as oriented boxes (ground truth green, predictions red with scores). A 3D Gaussian "
                    "splatting PLY is drawn as coloured Gaussian centres (or, with --gaussians ellipsoids, its "
                    "largest Gaussians as 2-sigma ellipsoids). With --depth, the files are depth maps (16-bit PNG, "
                    "metres = code / --depth-scale, or .npy (H, W) metres): they are back-projected with --K to a "
                    "3D point cloud coloured by --image (else by depth: near red, far blue); --out X.png writes a "
                    "colour-mapped panel X.png (the image above each depth map) and the cloud seen from the depth "
                    "camera, pulled back a little, X_points.png. A particle file (a rollout written by geo3d "
                    "predict, a LagrangeBench .h5 split or a GNS .npz) plays as an animation, ground truth beside "
                    "prediction; --out X.gif renders it headless (X.png: the last frame).",
        epilog=textwrap.dedent("""\
            examples:
              geo3d view scan.ply mesh.obj
              geo3d view velodyne/000001.bin --boxes label_2/000001.txt --calib calib/000001.txt --out f.png
              geo3d view velodyne/000001.bin --calib calib/000001.txt --pred pred/000001.txt --view bev --out p.png
              geo3d view fox/transforms.json --out cameras.png
              geo3d view scene_3dgs.ply --gaussians ellipsoids --out splats.png
              geo3d view --depth gt_depth.png --image rgb.png --out depth.png   # depth.png + depth_points.png
              geo3d view --depth completed.npy --K 721.5,721.5,609.6,172.9
              geo3d view out/simulation/giorom_elastic_tiny_cpu/rollouts/rollout_00000.h5 --out rollout.gif
              geo3d view data/simulation/elastic_2d/test.h5 --trajectory 1 --color type"""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", type=Path,
                   help="point clouds (.bin .ply .pcd .xyz), meshes (.ply .obj .off .stl .glb), "
                        "3DGS splats (.ply), cameras (transforms.json), particle rollouts and datasets "
                        "(.h5 .hdf5 .npz, one file); with --depth: depth maps (.png .npy)")
    p.add_argument("--boxes", type=Path, help="KITTI label_2 file: ground-truth boxes (camera frame; needs --calib)")
    p.add_argument("--pred", type=Path, help="KITTI result file with scores: predicted boxes (needs --calib)")
    p.add_argument("--calib", type=Path, help="KITTI calib file for --boxes/--pred")
    p.add_argument("--out", type=Path, help="write a PNG here instead of opening a window")
    p.add_argument("--view", choices=["auto", "bev", "front"], default="auto", help="camera (default auto)")
    p.add_argument("--width", type=int, help="PNG width in pixels (default 1280; --depth: the depth map's "
                                             "aspect, at least 640 wide)")
    p.add_argument("--height", type=int, help="PNG height in pixels (default 720; --depth: from the width)")
    p.add_argument("--gaussians", choices=["centres", "ellipsoids"], default="centres",
                   help="3DGS PLY files: draw each Gaussian's centre, or the largest as ellipsoids (default centres)")
    particles = p.add_argument_group("particle trajectories and rollouts (.h5 .hdf5 .npz)")
    particles.add_argument("--trajectory", type=int, default=0, metavar="I",
                           help="dataset files: which trajectory to play (default 0)")
    particles.add_argument("--baseline", action="store_true",
                           help="rollout files: add the constant-velocity baseline as a third panel")
    particles.add_argument("--color", choices=["speed", "type"], default="speed",
                           help="colour particles by speed (one scale for all frames) or by type (default speed)")
    particles.add_argument("--max-frames", type=int, metavar="N",
                           help="show about N evenly spaced frames (default: 120 in a GIF, 400 in the window)")
    particles.add_argument("--fps", type=float, default=20.0, help="GIF frames per second (default 20)")
    depth = p.add_argument_group("depth maps")
    depth.add_argument("--depth", action="store_true",
                       help="the files are depth maps: 16-bit PNGs (code / --depth-scale = metres, 0 = missing) or "
                            ".npy (H, W) float arrays of metres")
    depth.add_argument("--image", type=Path, metavar="RGB",
                       help="--depth: RGB image registered with the depth: point colours and the first panel")
    depth.add_argument("--K", metavar="K",
                       help="--depth: intrinsics 'fx,fy,cx,cy' (pixels) or a 3x3 text file; default KITTI-like: "
                            "fx = fy = 721.5 * W / 1242, cx = W/2, cy = H/2 (a note is printed)")
    depth.add_argument("--depth-scale", type=float, metavar="CODES",
                       help="--depth: PNG codes per metre (default 256: KITTI depth completion; 1000: millimetres)")
    p.set_defaults(func=_cmd_view)


# --- render ------------------------------------------------------------------------------------------

def _cmd_render(args: argparse.Namespace) -> None:
    from pipelines.splatting.predict import render_to_files

    check_output_folder(args.out)
    written = render_to_files(args.scene, args.out, cameras=args.cameras, turntable=args.turntable,
                              depth=args.depth, scale=args.scale, background=args.background, width=args.width,
                              height=args.height, elevation=args.elevation)
    images = [p for p in written if p.parent == args.out and p.suffix == ".png"]
    others = [p for p in written if p.parent == args.out and p.suffix != ".png"]
    print(f"wrote {len(images)} images to {args.out}" + "".join(f", {p}" for p in others))
    if args.depth:
        print(f"wrote RGB-D frames (7-Scenes layout, depth in mm) to {args.out / 'rgbd'}")


def _add_render(sub) -> None:
    p = sub.add_parser(
        "render", help="render a 3D Gaussian splatting PLY into cameras or a turntable",
        description="Render a 3DGS PLY (full SH degree) into the cameras of a transforms.json or into N turntable "
                    "views, and write PNGs and an animated GIF; with --depth also an RGB-D folder (7-Scenes "
                    "layout: colour, uint16 depth in millimetres, camera-to-world poses, intrinsics).",
        epilog=textwrap.dedent("""\
            examples:
              geo3d render scene.ply --cameras transforms.json --out out/renders --depth
              geo3d render scene.ply --turntable 36 --out out/turntable --background black
              geo3d render scene.ply --cameras transforms.json --turntable 60 --scale 0.5 --out out/orbit"""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scene", type=Path, help="3D Gaussian splatting PLY file")
    p.add_argument("--cameras", type=Path, help="transforms.json: render its cameras (with --turntable: circle "
                                                "what they look at, at their distance, with their intrinsics)")
    p.add_argument("--turntable", type=int, metavar="N", help="render N views on a circle around the scene")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--depth", action="store_true", help="also write an RGB-D folder OUT/rgbd (depth in mm)")
    p.add_argument("--scale", type=float, default=1.0, help="image size factor (default 1)")
    p.add_argument("--background", choices=["white", "black"], default="white", help="background (default white)")
    p.add_argument("--width", type=int, help="turntable width in pixels (default: the cameras', else 512)")
    p.add_argument("--height", type=int, help="turntable height in pixels (default: the cameras', else 512)")
    p.add_argument("--elevation", type=float, metavar="DEG",
                   help="turntable elevation in degrees (default: the cameras' mean, else 20)")
    p.set_defaults(func=_cmd_render)


# --- demo --------------------------------------------------------------------------------------------

def _cmd_demo(args: argparse.Namespace) -> None:
    from geo3d.cli.demo import STAGES, run_demo

    stages = list(args.stages) if args.stages else list(STAGES)
    stages = [s for s in stages if s not in set(args.skip or [])]
    report = run_demo(args.out, stages=stages)
    print(f"report: {report}")


def _add_demo(sub) -> None:
    from geo3d.cli.demo import STAGES

    p = sub.add_parser(
        "demo", help="run every pipeline on fresh synthetic data and the shared real samples; write a report",
        description="Generate data in real formats, read it back, run each pipeline's stage (the model zoo's "
                    "weights; one short training run), evaluate, and render headless pictures. Writes "
                    "OUT/report.md (what each stage shows, then its numbers beside the zoo cards'), "
                    f"OUT/metrics.json and pictures. Stages: {', '.join(STAGES)}.",
        epilog="examples:\n  geo3d demo --out out/demo\n  geo3d demo --stages splatting chain",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="report folder (default out/demo)")
    p.add_argument("--stages", nargs="+", choices=STAGES, metavar="STAGE",
                   help=f"run only these stages, in the usual order ({', '.join(STAGES)}; default all)")
    p.add_argument("--skip", nargs="+", choices=STAGES, metavar="STAGE", help="stages to leave out")
    p.set_defaults(func=_cmd_demo)


# --- reconstruct -------------------------------------------------------------------------------------

def _fraction(text: str) -> float:
    """argparse type: a positive number, also written as a fraction (``1/128``)."""
    try:
        num, _, den = text.partition("/")
        value = float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 1/128, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive value, got {text!r}")
    return value


def _cmd_reconstruct(args: argparse.Namespace) -> None:
    from geo3d.zoo import resolve
    from pipelines.surface.predict import ReconstructOptions, reconstruct_batch

    check_output_folder(args.output)
    checkpoint = None if args.checkpoint is None else str(resolve(args.checkpoint))  # zoo:NAME -> verified file
    options = ReconstructOptions(method=args.method, checkpoint=checkpoint, voxel_size=args.voxel_size,
                                 voxel_fraction=args.voxel_fraction, depth_max=args.depth_max,
                                 depth_scale=args.depth_scale, eval_points=args.eval_points,
                                 largest_component=args.largest_component, mesh_format=args.format)
    result = reconstruct_batch(args.input, args.output, options, workers=args.workers, backend=args.backend,
                               ray_address=args.ray_address, overwrite=args.overwrite,
                               progress=not args.no_progress)
    failed = result.failed
    if failed and len(result.records) == 1:
        raise InputError(None, failed[0]["error"])
    for record in failed:
        print(f"geo3d: reconstruct: {record['scene']} failed: {record.get('error')}", file=sys.stderr)
    done = len(result.records) - len(failed)
    print(f"reconstructed {done} of {len(result.records)} scenes ({len(result.computed)} computed now) into "
          f"{args.output}; summary: {result.summary_md}")
    if failed:
        raise InputError(args.output, f"{len(failed)} of {len(result.records)} scenes failed (see "
                                      f"{result.summary_md}); a re-run retries them")


def _add_reconstruct(sub) -> None:
    p = sub.add_parser(
        "reconstruct", help="batch surface reconstruction of RGB-D scene folders (resumable, parallel)",
        description="Fuse every RGB-D scene folder under --input (7-Scenes layout: camera-intrinsics.txt, "
                    "frame-N.color.png|jpg, frame-N.depth.png, frame-N.pose.txt; or --input itself) and mesh it. "
                    "Writes OUTPUT/<scene>/mesh.ply (or .obj), metrics.json when the scene has a ground-truth mesh.ply "
                    "(Chamfer, F-score at 0.25% of the diagonal, normal consistency, seconds, peak RSS), and "
                    "status.json last; then OUTPUT/summary.csv and summary.md. A re-run skips the scenes whose "
                    "status.json is ok for the same settings and retries failed or unfinished ones. Exit code 2 "
                    "when a scene failed (each failure is printed and recorded in its status.json).",
        epilog=textwrap.dedent("""\
            examples:
              geo3d reconstruct --input data/synth_rgbd --output out/recon
              geo3d reconstruct --input data/scans --output out/poisson --method poisson --workers 4
              geo3d reconstruct --input data/scans --output out/refined --method refined --checkpoint last.ckpt
              geo3d reconstruct --input data/scans --output out/recon --backend ray --ray-address auto"""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", type=Path, required=True, metavar="DIR",
                   help="a scene folder, or a folder of scene folders")
    p.add_argument("--output", type=Path, required=True, metavar="DIR",
                   help="output folder (one sub-folder per scene)")
    p.add_argument("--method", choices=["tsdf", "refined", "poisson"], default="tsdf",
                   help="TSDF marching cubes, the learned refinement (needs --checkpoint), or screened Poisson "
                        "of the TSDF surface points (default tsdf)")
    p.add_argument("--checkpoint", metavar="CKPT",
                   help="refined: a SurfaceRefiner checkpoint (.ckpt), or zoo:NAME (e.g. zoo:surface_unet)")
    voxels = p.add_mutually_exclusive_group()
    voxels.add_argument("--voxel-size", type=float, metavar="M", help="voxel edge in metres")
    voxels.add_argument("--voxel-fraction", type=_fraction, default=1 / 128, metavar="F",
                        help="voxel edge as a fraction of each scene's diagonal (scene.json, else the ground-truth "
                             "mesh's bounding box, else the extent of the frames' back-projected depth), e.g. 1/128 "
                             "(the default)")
    p.add_argument("--depth-max", type=float, metavar="M",
                   help="ignore depths beyond this, metres (default: none, every valid depth is fused)")
    p.add_argument("--depth-scale", type=float, metavar="CODES",
                   help="depth PNG codes per metre (default: scene.json's depth_scale, else 1000)")
    p.add_argument("--eval-points", type=int, default=20000, metavar="N",
                   help="surface samples per mesh for the metrics (default 20000)")
    p.add_argument("--largest-component", action="store_true",
                   help="keep only each mesh's largest connected component (drops floating fragments)")
    p.add_argument("--format", choices=["ply", "obj"], default="ply",
                   help="output mesh format: OUTPUT/<scene>/mesh.ply (binary, colours) or mesh.obj (default ply)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="local backend: parallel worker processes (default 1)")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local processes, or Ray tasks (pip install 'geo3d[ray]') (default local)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster address (e.g. auto, ray://host:10001); default: start a local Ray")
    p.add_argument("--overwrite", action="store_true", help="recompute complete scenes too")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_reconstruct)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for the plain subcommands (the Lightning ones are listed in the help)."""
    parser = argparse.ArgumentParser(
        prog="geo3d",
        description="geo3d: 3D sparse-geometry and point-cloud pipelines.\n\n"
                    "training (Lightning CLI; run `geo3d fit --help`):\n"
                    "  fit | validate | test | predict --config CONFIG.yaml",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command",
                                metavar="{fit,validate,test,predict,synth,view,render,demo,reconstruct,complete,zoo}")
    _add_synth(sub)
    _add_view(sub)
    _add_render(sub)
    _add_demo(sub)
    _add_reconstruct(sub)
    from geo3d.cli.complete import add_complete
    from geo3d.cli.zoo import add_zoo

    add_complete(sub)
    add_zoo(sub)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """``warnings.formatwarning`` for the plain subcommands: ``geo3d: warning: <message>``, one line per
    warning without the source location (the messages name the file they are about)."""
    return f"geo3d: warning: {message}\n"


_INPUT_ERRORS = ("InputError", "FileNotFoundError", "ValueError")
_WORKER_ERROR = re.compile(r"Caught (\w+) in DataLoader worker process \d+\.\nOriginal Traceback")


def _worker_error(err: BaseException) -> str | None:
    """The one-line message of an input error raised in a DataLoader worker, else None.

    PyTorch re-raises a worker's exception in the main process as ``RuntimeError`` (or the same type when
    it can be built from one string) whose message is ``Caught InputError in DataLoader worker process 0.``
    followed by the worker's traceback; its last line is ``geo3d.errors.InputError: <file>: <problem>``.
    """
    match = _WORKER_ERROR.match(str(err))
    if match is None or match.group(1) not in _INPUT_ERRORS:
        return None
    last = str(err).rstrip().splitlines()[-1]
    return re.sub(r"^[\w.]*(" + "|".join(_INPUT_ERRORS) + r"): ", "", last)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``geo3d`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            run_lightning(argv)
            return 0
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        default_format, warnings.formatwarning = warnings.formatwarning, _format_warning
        try:
            args.func(args)
        finally:
            warnings.formatwarning = default_format
        return 0
    except (InputError, FileNotFoundError, ValueError, RuntimeError) as err:
        worker_error = _worker_error(err)
        if os.environ.get("GEO3D_DEBUG") or (isinstance(err, RuntimeError) and worker_error is None):
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, FileNotFoundError) and err.filename:
            message = f"{err.filename}: file not found"
        print(f"geo3d: error: {worker_error or message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("geo3d: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
