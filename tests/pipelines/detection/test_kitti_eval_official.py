"""kitti_eval pinned to the official KITTI Python evaluation on a 120-frame fixture.

``../shared/data/kitti_eval_fixture/`` (see its README) holds ground-truth labels, two detection sets
(``perturbed/``: Car, Pedestrian and Cyclist; ``model/``: a trained tiny SECOND's Cars) and the output of
the official ``kitti_object_eval_python`` (``get_official_eval_result``, rotated IoU exact) for each:
per class, R11 (``AP@``) and R40 (``AP_R40@``) blocks at the standard and the loose overlaps, rows bbox /
bev / 3d with 4 decimals and aos with 2, columns easy / moderate / hard: 144 numbers per set.

Every printed number is compared with ours, unrounded, to half a unit of its last printed digit (the
most a correctly rounded print can differ from the value it prints) plus 1e-6 for floating-point noise
in the last bits (both implementations sum float64 precisions; a value exactly on a rounding boundary
may print either way): ``|ours - printed| <= 0.5e-4 + 1e-6`` for bbox / bev / 3d, ``<= 0.5e-2 + 1e-6``
for aos. The test skips when the fixture folder is absent.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from geo3d.io.kitti import read_label
from pipelines.detection.kitti_eval import DIFFICULTIES, MIN_OVERLAPS, kitti_eval

REPO = Path(__file__).resolve().parents[3]
FIXTURE = Path(os.environ.get("GEO3D_SHARED_DATA", REPO.parent / "shared" / "data")) / "kitti_eval_fixture"
CLASSES = ("Car", "Pedestrian", "Cyclist")
NOISE = 1e-6
_BLOCK = re.compile(r"^(?P<cls>\w+) AP(?P<r40>_R40)?@(?P<overlaps>[\d.]+, [\d.]+, [\d.]+):$")
_ROW = re.compile(r"^(?P<metric>bbox|bev|3d|aos)\s+AP:(?P<values>.+)$")


def parse_official(path: Path) -> dict[str, tuple[float, int]]:
    """The official printout as ``{kitti_eval key: (printed value, decimals printed)}``."""
    numbers: dict[str, tuple[float, int]] = {}
    block = None
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        if match := _BLOCK.match(line):
            cls = match["cls"]
            overlaps = tuple(float(v) for v in match["overlaps"].split(", "))
            loose = [tuple(o) for o in MIN_OVERLAPS[cls]].index(overlaps)  # ValueError: an unknown overlap set
            block = (cls, "R40" if match["r40"] else "R11", "_loose" if loose else "")
            continue
        match = _ROW.match(line)
        assert match and block, f"{path}:{lineno}: unexpected line {line!r}"
        cls, points, suffix = block
        values = [v.strip() for v in match["values"].split(",")]
        assert len(values) == 3, f"{path}:{lineno}: expected easy, moderate, hard"
        for difficulty, text in zip(DIFFICULTIES, values):
            key = f"{cls}_{match['metric']}_{points}_{difficulty}{suffix}"
            assert key not in numbers, f"{path}:{lineno}: {key} printed twice"
            numbers[key] = (float(text), len(text.partition(".")[2]))
    return numbers


@pytest.fixture(scope="module")
def fixture_dir() -> Path:
    if not FIXTURE.is_dir():
        pytest.skip(f"the KITTI evaluation fixture is absent ({FIXTURE}; set GEO3D_SHARED_DATA)")
    return FIXTURE


@pytest.mark.parametrize("detections", ["perturbed", "model"])
def test_kitti_eval_matches_the_official_printout(fixture_dir, detections):
    frames = sorted(p.name for p in (fixture_dir / "label_2").glob("*.txt"))
    assert len(frames) == 120
    gt = [read_label(fixture_dir / "label_2" / name) for name in frames]
    dt = [read_label(fixture_dir / detections / name) for name in frames]
    ours = kitti_eval(gt, dt, classes=CLASSES)
    official = parse_official(fixture_dir / f"{detections}_official.txt")
    assert len(official) == 144  # 3 classes x (bbox, bev, 3d, aos) x (R11, R40) x 3 difficulties x 2 overlap sets
    differences = []
    for key, (printed, decimals) in official.items():
        assert key in ours, f"{key}: printed by the official evaluation, missing from kitti_eval"
        tolerance = 0.5 * 10.0 ** -decimals + NOISE
        if abs(ours[key] - printed) > tolerance:
            differences.append(f"{key}: ours {ours[key]:.6f}, official {printed:.{decimals}f} "
                               f"(off by {ours[key] - printed:+.6f}, tolerance {tolerance:.6f})")
    assert not differences, f"{len(differences)} of 144 numbers differ:\n" + "\n".join(differences)
