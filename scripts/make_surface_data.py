#!/usr/bin/env python
"""Write the synthetic scan sets of the surface pipeline (``geo3d synth rgbd`` over objects and seeds).

Training objects and held-out objects never overlap, and neither do their seeds (the blob's shape changes with
its seed, so held-out blobs are new shapes):

* train: blob (seeds 0-19), torus_knot, toy, chair, robot (seeds 0-4 each): 40 scans (``--train-scale K``: K times
  as many seeds per object, for the GPU config);
* val (held out): bunny (seeds 100, 101), mug (seed 100), blob (seeds 100, 101): 5 scans.

Every scan: ``--frames`` depth views (default 8) from random poses on a sphere, Kinect-like noise, the object's
bounding-box diagonal 1 m, ``--width`` x ``--height`` images. Existing complete scans are kept (resumable).

Usage:
    python scripts/make_surface_data.py data/surface            # -> data/surface/{train,val}/<object>_<seed>
    python scripts/make_surface_data.py data/surface --frames 30 --only val
    python scripts/make_surface_data.py data/surface_large --train-scale 5    # 200 training scans (GPU config)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRAIN_OBJECTS = {"blob": 20, "torus_knot": 5, "toy": 5, "chair": 5, "robot": 5}  # seeds per object
VAL = [("bunny", 100), ("bunny", 101), ("mug", 100), ("blob", 100), ("blob", 101)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--frames", type=int, default=8, help="depth views per scan (default 8)")
    parser.add_argument("--width", type=int, default=320, help="image width (default 320)")
    parser.add_argument("--height", type=int, default=240, help="image height (default 240)")
    parser.add_argument("--noise", choices=["kinect", "none"], default="kinect")
    parser.add_argument("--only", choices=["train", "val"], help="write one split only")
    parser.add_argument("--train-scale", type=int, default=1, metavar="K",
                        help="K times the training seeds per object (default 1: 40 scans; held-out seeds start at "
                             "100, so K <= 5 for the blob)")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    from geo3d.synth.rgbd import generate_rgbd

    if not 1 <= args.train_scale <= 5:
        parser.error(f"--train-scale: expected 1 to 5 (training seeds must stay below the held-out seed 100), "
                     f"got {args.train_scale}")
    train = [(o, s) for o, n in TRAIN_OBJECTS.items() for s in range(n * args.train_scale)]
    jobs = [("train", o, s) for o, s in train] + [("val", o, s) for o, s in VAL]
    jobs = [j for j in jobs if args.only in (None, j[0])]
    for split, obj, seed in tqdm(jobs, desc="scans", unit="scan"):
        out = args.out / split / f"{obj}_{seed}"
        if (out / "scene.json").is_file() and len(list(out.glob("frame-*.pose.txt"))) == args.frames:
            continue
        generate_rgbd(out, object=obj, frames=args.frames, noise=args.noise, seed=seed, width=args.width,
                      height=args.height, progress=False)
    print(f"wrote {len(jobs)} scans under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
