#!/usr/bin/env python
"""The surface benchmark protocol: raw TSDF vs learned refinement vs Poisson on held-out synthetic scans.

Protocol (fixed so anyone can rerun it):

* held-out scans from ``scripts/make_surface_data.py`` (objects and seeds never used for training: bunny 100/101,
  mug 100, blob 100/101), each object scaled to a bounding-box diagonal of 1 m, ``--frames`` depth views (8 by
  default; 30 for the dense check) from random poses on a sphere, Kinect v1 noise (depth-dependent sigma, 1 %
  dropout, edge dropout, 1 mm quantization), 320 x 240;
* voxel = 1/128 of the diagonal, truncation 4 voxels, Open3D voxel-block fusion, Open3D marching cubes for all
  TSDF meshes;
* metrics against the ground-truth mesh: point-to-mesh Chamfer (mean of accuracy and completeness, each the mean
  distance from 100k points sampled on one mesh to the other mesh's surface), F-score at 0.25 % of the diagonal,
  normal consistency.

Usage:
    python scripts/make_surface_data.py data/surface                       # once
    python scripts/bench_surface.py --checkpoint CKPT                        # 8 views
    python scripts/bench_surface.py --checkpoint CKPT --frames 30 --data data/surface30
    python scripts/bench_surface.py --checkpoint zoo:surface_unet --json out/zoo/surface_unet/bench_surface.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as geo3d sets it, before torch starts its thread pool

METHODS = ("tsdf", "refined", "poisson")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/surface"), help="scan sets root (default data/surface)")
    parser.add_argument("--frames", type=int, default=8, help="views per held-out scan (default 8)")
    parser.add_argument("--split", choices=["val", "train"], default="val",
                        help="scan set under --data (default val: the held-out scans; train: for choosing "
                             "settings such as --keep-threshold without looking at the held-out ones)")
    parser.add_argument("--scans", type=int, metavar="N",
                        help="only N scans, evenly spaced over the split's sorted list (default all)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="methods to evaluate (default all; refined needs --checkpoint)")
    parser.add_argument("--checkpoint", help="SurfaceRefiner checkpoint, or zoo:NAME (without it: no refined column)")
    parser.add_argument("--points", type=int, default=100_000, help="surface samples per mesh (default 100000)")
    parser.add_argument("--keep-threshold", type=float, help="refined: keep probability (default: the model's)")
    parser.add_argument("--trust-weight", type=float, help="refined: voxels fused from at least this many "
                                                             "observations keep their fused TSDF (default: the "
                                                             "model's)")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) and per-scan JSON here")
    parser.add_argument("--json", type=Path, metavar="OUT",
                        help="also write the methods' means as one JSON object: 'method/metric' -> value (e.g. "
                             "'refined/chamfer_rel', 'poisson/fscore'; what make_weights.py --check reads)")
    args = parser.parse_args(argv)

    import torch

    from geo3d.io import read_mesh
    from geo3d.io.checkpoint import load_module
    from geo3d.metrics.geometry import canonical_mesh, mesh_metrics
    from pipelines.surface.baselines import poisson_mesh
    from pipelines.surface.data import list_scans, scan_diagonal, scan_voxel_size
    from pipelines.surface.fusion import fuse_rgbd
    from pipelines.surface.module import SurfaceRefiner, refine_volume

    val = args.data / args.split
    if not val.is_dir():
        parser.error(f"{val} not found: write the scans first (python scripts/make_surface_data.py {args.data})")
    scans = list_scans(val)
    if args.scans:
        scans = [scans[i * len(scans) // args.scans] for i in range(min(args.scans, len(scans)))]
    model = load_module(args.checkpoint, SurfaceRefiner) if args.checkpoint else None
    rows = []
    for scan in scans:
        frames = len(list(scan.glob("frame-*.pose.txt")))
        if frames != args.frames:
            print(f"warning: {scan} has {frames} frames, the protocol says {args.frames}", file=sys.stderr)
        gt = read_mesh(scan / "mesh.ply")
        voxel = scan_voxel_size(scan, 1 / 128)
        diag = scan_diagonal(scan)
        threshold = 0.0025 * diag
        meshes, seconds = {}, {}
        t0 = time.perf_counter()
        volume = fuse_rgbd(scan, voxel, 4 * voxel, progress=False)
        meshes["tsdf"] = volume.extract_mesh()
        seconds["tsdf"] = time.perf_counter() - t0
        if "poisson" in args.methods:
            t0 = time.perf_counter()
            meshes["poisson"] = poisson_mesh(volume.extract_points())
            seconds["poisson"] = time.perf_counter() - t0 + seconds["tsdf"]
        if model is not None and "refined" in args.methods:
            t0 = time.perf_counter()
            with torch.no_grad():
                meshes["refined"] = refine_volume(model, volume, args.keep_threshold, args.trust_weight)
            seconds["refined"] = time.perf_counter() - t0 + seconds["tsdf"]
        for method, mesh in meshes.items():
            if method not in args.methods:  # the TSDF mesh is always made (the others start from its fusion)
                continue
            # canonical order: marching cubes' triangle order varies run to run, and with it the seeded sampling
            m = mesh_metrics(canonical_mesh(mesh), gt, num_points=args.points, fscore_threshold=threshold)
            rows.append({"scan": scan.name, "method": method, "chamfer_rel": m["chamfer"] / diag,
                         "accuracy_rel": m["accuracy"] / diag, "completeness_rel": m["completeness"] / diag,
                         "fscore": m["fscore"], "normal_consistency": m["normal_consistency"],
                         "seconds": seconds[method]})
            print(f"{scan.name:12s} {method:8s} chamfer {m['chamfer'] / diag:.5f} F {m['fscore']:.3f} "
                  f"NC {m['normal_consistency']:.3f}", flush=True)

    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    lines = [f"# bench_surface: {len(scans)} {'held-out' if args.split == 'val' else 'training'} scans, "
             f"{args.frames} views, voxel 1/128 diagonal, "
             f"F-score at 0.25 % diagonal, {args.points} samples per mesh, torch {torch.__version__}"
             + (f", refined: checkpoint {args.checkpoint}, keep threshold {args.keep_threshold}, trust weight "
                f"{args.trust_weight}" if model is not None else ""),
             "", "| method | Chamfer (x diag) | accuracy | completeness | F-score | normal consistency | s/scan |",
             "|---|---|---|---|---|---|---|"]
    means = {}
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        mean = {k: sum(r[k] for r in sel) / len(sel) for k in ("chamfer_rel", "accuracy_rel", "completeness_rel",
                                                                "fscore", "normal_consistency", "seconds")}
        means[method] = mean
        lines.append(f"| {method} | {mean['chamfer_rel']:.5f} | {mean['accuracy_rel']:.5f} | "
                     f"{mean['completeness_rel']:.5f} | {mean['fscore']:.3f} | {mean['normal_consistency']:.3f} | "
                     f"{mean['seconds']:.2f} |")
    if "refined" in means and "tsdf" in means:
        ratio = means["refined"]["chamfer_rel"] / means["tsdf"]["chamfer_rel"]
        lines += ["", f"refined / raw TSDF Chamfer: {ratio:.3f} ({(1 - ratio) * 100:.1f} % lower); F-score "
                      f"{means['refined']['fscore']:.3f} vs {means['tsdf']['fscore']:.3f}"]
    lines += ["", "Per scan (Chamfer x diagonal / F-score):", "",
              "| scan | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for scan in scans:
        cells = {r["method"]: f"{r['chamfer_rel']:.5f} / {r['fscore']:.3f}" for r in rows if r["scan"] == scan.name}
        lines.append(f"| {scan.name} | " + " | ".join(cells[m] for m in methods) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_surface.md").write_text(table + "\n")
        (args.out / "bench_surface.json").write_text(json.dumps(rows, indent=2) + "\n")
    if args.json:
        from geo3d.io.atomic import atomic_write_text

        flat = {f"{method}/{key}": value for method, mean in means.items() for key, value in mean.items()}
        atomic_write_text(args.json, json.dumps(flat, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
