#!/usr/bin/env python
"""Compare synthetic KITTI frames with real scans: the same LiDAR statistics side by side, as a table and a plot.

Statistics (``geo3d/synth/realism.py`` documents each, and how the ground is estimated): points per frame (all,
and in the camera's view); histograms of range, height above the ground and reflectance; points on a labelled
car against its distance (median per 0-10/10-20/20-30/30-40/40-60 m bin, and a fitted a / d^b compared at 10, 20
and 40 m). The table gives the relative difference synthetic vs real and flags where it exceeds 25 %.

Without --synth, FRAMES synthetic frames are generated first (``geo3d synth kitti OUT/synth_kitti --frames N
--val-frames 0 --seed SEED``; resumable). Writes OUT/realism.md, OUT/realism.json and OUT/realism.png.
Bad input: one line on stderr, exit code 2.

Usage:
    python scripts/synth_vs_real.py                                    # shared real frames vs 10 new synthetic ones
    python scripts/synth_vs_real.py --synth data/synth_kitti --frames 50 --out out/realism
    python scripts/synth_vs_real.py --real ../shared/data/kitti/training --frames 10 --seed 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def realism_charts(result: dict) -> list:
    """The plot's four panels: range, height and reflectance histograms, points on a car against distance."""
    import numpy as np

    from viewers.charts import BLUE, ORANGE, Chart, Series

    real, synth = result["real"], result["synth"]
    names = {"real": f"real ({len(real['frame_ids'])} frames)", "synth": f"synthetic ({len(synth['frame_ids'])})"}
    charts = []
    for key, title, unit in (("range_m", "range, points in camera view", "range (m)"),
                             ("height_m", "height above ground, points in camera view", "height (m)"),
                             ("intensity", "reflectance, points in camera view", "reflectance")):
        series = [Series(names[k], np.array(s["histograms"][key]["edges"]), np.array(s["histograms"][key]["share"]),
                         color, style="step") for k, s, color in (("real", real, BLUE), ("synth", synth, ORANGE))]
        charts.append(Chart(title, unit, "share of points per bin", series))
    cars = []
    grid = np.linspace(5.0, 70.0, 60)
    for k, s, color, marker in (("synth", synth, ORANGE, "x"), ("real", real, BLUE, "o")):  # real drawn on top
        pts = [c for c in s["cars"] if c["points"] > 0]
        cars.append(Series(names[k], np.array([c["distance_m"] for c in pts]), np.array([c["points"] for c in pts]),
                           color, style="points", marker=marker))
        if s["fit"]:
            cars.append(Series(f"{k}: {s['fit']['a']:.3g} / d^{s['fit']['b']:.2f}", grid,
                               s["fit"]["a"] / grid ** s["fit"]["b"], color))
    charts.append(Chart("points on a labelled car", "distance (m)", "points in the box (log)", cars, log_y=True,
                        xlim=(0.0, 70.0)))
    return charts


def main(argv: list[str] | None = None) -> int:
    from geo3d.io.shared_data import shared_data_dir

    shared = shared_data_dir() / "kitti" / "training"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=shared, help=f"real KITTI training folder (default {shared})")
    parser.add_argument("--synth", type=Path, help="synthetic KITTI folder (default: generate into OUT/synth_kitti)")
    parser.add_argument("--frames", type=int, default=10, help="synthetic frames used (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of generated frames and ground fits (default 0)")
    parser.add_argument("--out", type=Path, default=Path("out/realism"), help="output folder (default out/realism)")
    args = parser.parse_args(argv)
    from geo3d.errors import InputError
    from geo3d.synth.realism import compare_kitti_folders, write_report
    from viewers.charts import write_charts_png

    try:
        if args.frames < 1:
            raise InputError(None, f"--frames: expected at least 1, got {args.frames}")
        if args.out.exists() and not args.out.is_dir():
            raise InputError(args.out, "exists and is not a folder (--out expects an output folder)")
        if not args.real.exists():
            raise InputError(args.real, "real KITTI frames not found (give --real DIR, or set GEO3D_SHARED_DATA)")
        synth = args.synth
        if synth is None:
            from geo3d.synth.kitti import generate_kitti

            synth = generate_kitti(args.out / "synth_kitti", frames=args.frames, val_frames=0, seed=args.seed,
                                   workers=1)
        result = compare_kitti_folders(args.real, synth, synth_frames=args.frames, seed=args.seed, progress=True)
        md, js = write_report(result, args.out)
        png = write_charts_png(args.out / "realism.png", realism_charts(result))
    except (InputError, FileNotFoundError, ValueError) as err:
        message = f"{err.filename}: file not found" if isinstance(err, FileNotFoundError) and err.filename else err
        print(f"synth_vs_real: error: {str(message).splitlines()[0]}", file=sys.stderr)
        return 2
    print(result["markdown"])
    print(f"wrote {md}, {js} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
