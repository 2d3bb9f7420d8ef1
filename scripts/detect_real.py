#!/usr/bin/env python
"""Run a trained SECOND on real, labelled KITTI frames and count cars found and false positives.

For every frame of DIR (a KITTI ``training`` folder with velodyne/, calib/ and label_2/, or its parent), per frame
and in total: the labelled cars (Car, Van) in the model's range, how many a prediction of score >= --score finds at
rotated BEV IoU >= --iou, the false positives at score >= --score, and apart from them the predictions outside the
camera's view (KITTI labels only what the left camera sees, so they are not false positives) and inside DontCare
regions. The rules are in ``pipelines/detection/predict.py``.

Writes OUT/real_scans.md (table), OUT/real_scans.json and OUT/bev/<frame>.png (labels green, predictions with
their scores: matches cyan, false positives red, out-of-view and DontCare ones grey). Bad input: one line on
stderr, exit code 2.

Usage:
    python scripts/detect_real.py out/detection/second_tiny_cpu/.../last.ckpt ../shared/data/kitti/training
    python scripts/detect_real.py model.ckpt data/kitti/training --out out/real_scans --score 0.3 --iou 0.5
    python scripts/detect_real.py zoo:second_car ../shared/data/kitti/training --out out/zoo/second_car/real_scans
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", help="a SecondDetector checkpoint (.ckpt), or zoo:NAME (e.g. zoo:second_car)")
    parser.add_argument("dir", type=Path, help="a KITTI training folder (velodyne/, calib/, label_2/) or its parent")
    parser.add_argument("--out", type=Path, default=Path("out/real_scans"),
                        help="output folder (default out/real_scans)")
    parser.add_argument("--score", type=float, default=0.3, help="score threshold of the counts (default 0.3)")
    parser.add_argument("--iou", type=float, default=0.5, help="BEV IoU of a match (default 0.5)")
    parser.add_argument("--full-scan", action="store_true",
                        help="feed the model the whole scan in range, not the camera's view (as in training)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    import torch

    from geo3d.errors import InputError
    from pipelines.detection.predict import evaluate_real_frames, load_detector

    torch.set_num_threads(max(1, args.threads))
    try:
        if not 0 < args.score < 1:
            raise InputError(None, f"--score: expected a score in (0, 1), got {args.score:g}")
        if not 0 < args.iou <= 1:
            raise InputError(None, f"--iou: expected an IoU in (0, 1], got {args.iou:g}")
        if args.out.exists() and not args.out.is_dir():
            raise InputError(args.out, "exists and is not a folder (--out expects an output folder)")
        model = load_detector(args.ckpt)
        report = evaluate_real_frames(model, args.dir, args.out, score_thresh=args.score, iou_thresh=args.iou,
                                      fov_only=not args.full_scan)
    except (InputError, FileNotFoundError, ValueError) as err:
        message = f"{err.filename}: file not found" if isinstance(err, FileNotFoundError) and err.filename else err
        print(f"detect_real: error: {str(message).splitlines()[0]}", file=sys.stderr)
        return 2
    print(report["markdown"])
    t = report["total"]
    print(f"{t['cars_found']} of {t['cars_in_range']} cars in range found, {t['false_positives']} false positives at "
          f"score >= {args.score:g} over {t['frames']} frames ({t['out_of_view']} out of camera view, "
          f"{t['in_dontcare']} in DontCare: not counted). Wrote {args.out / 'real_scans.md'}, "
          f"{args.out / 'real_scans.json'} and {args.out / 'bev'}/*.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
