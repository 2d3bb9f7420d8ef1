#!/usr/bin/env python
"""Where a detector's Car 3D AP is lost, from its KITTI result files and the labels.

RESULTS is a folder of ``<frame_id>.txt`` detections (``geo3d predict ... --model.result_dir RESULTS``); DATA a
KITTI ``training`` folder with ``label_2/`` (or its parent). Prints, and with --out writes as Markdown:

1. the Car 3D and BEV AP (R40, moderate) with some parameters of every detection that matches a label (the
   nearest Car within 1 m on the ground plane) replaced by the label's: what errors in those parameters cost;
2. how the matched detections' height, width, length, bottom and top agree with their labels (score >= 0.3);
3. the bootstrap spread of the 3D AP over resampled frame sets (--draws; 0 skips it).

The rules are in ``pipelines/detection/error_analysis.py``. Bad input: one line on stderr, exit code 2.

Usage:
    geo3d predict --config configs/detection/second_tiny_cpu.yaml --ckpt_path CKPT \\
        --data.data_dir data/synth_kitti_seed1 --data.splits.predict val --model.result_dir out/heldout_results
    python scripts/detection_error_analysis.py out/heldout_results data/synth_kitti_seed1 --out out/errors.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = [
    ("the detections as they are", ()),
    ("bottom", ("bottom",)),
    ("height", ("height",)),
    ("bottom and height", ("bottom", "height")),
    ("position on the ground", ("ground_position",)),
    ("width and length", ("width_length",)),
    ("heading", ("heading",)),
    ("position, width, length and heading", ("ground_position", "width_length", "heading")),
]


def read_results(results: Path, data: Path) -> tuple[list[str], list, list]:
    """Frame ids, labels and detections of every result file in ``results`` (labels from ``data``)."""
    from geo3d.errors import InputError
    from geo3d.io.kitti import read_label

    if not results.is_dir():
        raise InputError(results, "not a folder of <frame_id>.txt result files")
    ids = sorted(p.stem for p in results.glob("*.txt"))
    if not ids:
        raise InputError(results, "no <frame_id>.txt result files")
    labels = data / "label_2" if (data / "label_2").is_dir() else data / "training" / "label_2"
    if not labels.is_dir():
        raise InputError(data, "no label_2/ folder (expected a KITTI training folder or its parent)")
    missing = [i for i in ids if not (labels / f"{i}.txt").is_file()]
    if missing:
        raise InputError(labels, f"no label file for {len(missing)} result frame(s), e.g. {missing[0]}.txt")
    gts = [read_label(labels / f"{i}.txt") for i in ids]
    dts = [read_label(results / f"{i}.txt") for i in ids]
    for i, frame in zip(ids, dts):
        if any(d.score is None for d in frame):
            raise InputError(results / f"{i}.txt", "a detection without a score (16th column)")
    return ids, gts, dts


def report(gts: list, dts: list, draws: int) -> str:
    """The three analyses as Markdown."""
    from pipelines.detection.error_analysis import bootstrap_ap, box_agreement, oracle_aps

    lines = ["| replaced by the matched label's | Car 3D R40 moderate | BEV R40 moderate |", "|---|---|---|"]
    for (name, _), ap in zip(VARIANTS, oracle_aps(gts, dts, [fields for _, fields in VARIANTS])):
        lines.append(f"| {name} | {ap['3d']:.2f} | {ap['bev']:.2f} |")
    agreement = box_agreement(gts, dts)
    lines += ["", f"Matched detections (score >= 0.3): {int(agreement['height']['count']) if agreement else 0}", ""]
    if agreement:
        lines += ["| metres | label spread (std) | prediction spread | correlation | error mean | error std | "
                  "median abs error |", "|---|---|---|---|---|---|---|"]
        for name, a in agreement.items():
            lines.append(f"| {name} | {a['label_std']:.3f} | {a['pred_std']:.3f} | {a['correlation']:.2f} | "
                         f"{a['error_mean']:+.3f} | {a['error_std']:.3f} | {a['error_median_abs']:.3f} |")
    if draws > 0:
        b = bootstrap_ap(gts, dts, draws=draws)
        lines += ["", f"Bootstrap over frames ({draws} draws): Car 3D R40 moderate {b['ap']:.2f}, standard deviation "
                      f"{b['std']:.2f}, 90 % of draws in {b['p05']:.2f}-{b['p95']:.2f}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="folder of <frame_id>.txt KITTI result files")
    parser.add_argument("data", type=Path, help="KITTI training folder with label_2/ (or its parent)")
    parser.add_argument("--draws", type=int, default=200, help="bootstrap draws (default 200; 0 skips)")
    parser.add_argument("--out", type=Path, help="also write the report to this Markdown file")
    args = parser.parse_args(argv)
    from geo3d.errors import InputError
    from geo3d.io.atomic import atomic_write_text

    try:
        if args.draws < 0:
            raise InputError(None, f"--draws: expected a count >= 0, got {args.draws}")
        ids, gts, dts = read_results(args.results, args.data)
        text = f"Error analysis of {args.results} ({len(ids)} frames, labels from {args.data})\n\n" + report(
            gts, dts, args.draws)
        if args.out:
            atomic_write_text(args.out, text)
    except (InputError, ValueError) as err:
        print(f"detection_error_analysis: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
