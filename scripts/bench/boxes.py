"""Benchmark rows for ``ops.boxes``: rotated NMS of 2,000 detections and a 500 x 500 BEV IoU matrix.

Scene (seed 0): 100 car-sized objects (3.5-4.5 x 1.6-2.0 x 1.4-1.7 m, any yaw) in a 70 x 80 m area,
each detected 15 times with jitter (centre sigma 0.3 m, sizes 5 %, yaw 0.1 rad, scores 0.3-1.0), plus
500 scattered boxes of any size from 0.5 to 4.5 m (scores 0-0.5): 2,000 boxes, as a detector's
pre-NMS output. NMS threshold 0.1 (BEV IoU). The IoU matrix takes the first 500 boxes of that set
against the next 500; its reference is shapely (``ops/reference/boxes.py``).
Times are medians of 5 runs after a warm-up.

NMS runs some 1,600 small torch ops. When the machine's cores are busy with other jobs, torch's
intra-op threads wait for each other at every parallel op and the wall time grows many-fold (measured
here at load 4-7 on 2 cores: 0.2-1.5 s); ``OMP_NUM_THREADS=1 python scripts/bench_ops.py --only boxes``
then gives the single-core time.
"""

from __future__ import annotations

import math
import statistics

import torch

from bench._timing import timings
from ops.boxes import boxes_iou_bev, nms_rotated
from ops.reference.boxes import iou_bev_reference

N_OBJECTS, PER_OBJECT, N_SCATTERED = 100, 15, 500


def make_detections(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (2000, 7) float32 and scores (2000,) float32, as described in the module docstring."""
    g = torch.Generator().manual_seed(seed)

    def uniform(n: int, lo: list[float], hi: list[float]) -> torch.Tensor:
        lo_t, hi_t = torch.tensor(lo), torch.tensor(hi)
        return lo_t + (hi_t - lo_t) * torch.rand(n, len(lo), generator=g)

    objects = uniform(N_OBJECTS, [0, -40, -1.5, 3.5, 1.6, 1.4, -math.pi], [70, 40, -0.5, 4.5, 2.0, 1.7, math.pi])
    dets = objects.repeat_interleave(PER_OBJECT, 0)
    sigma = torch.tensor([0.3, 0.3, 0.1, 0, 0, 0, 0.1])
    dets = dets + torch.randn(dets.shape, generator=g) * sigma
    dets[:, 3:6] *= 1 + 0.05 * torch.randn(len(dets), 3, generator=g)
    scattered = uniform(N_SCATTERED, [0, -40, -2, 0.5, 0.5, 0.5, -math.pi], [70, 40, 0, 4.5, 4.5, 2.0, math.pi])
    boxes = torch.cat([dets, scattered])
    scores = torch.cat([0.3 + 0.7 * torch.rand(len(dets), generator=g), 0.5 * torch.rand(N_SCATTERED, generator=g)])
    return boxes, scores


def _median_seconds(fn, device: str, repeats: int = 5) -> float:
    return statistics.median(timings(fn, device, repeats))


def rows(device: str) -> list[dict]:
    """Benchmark rows (see scripts/bench_ops.py) on ``device``: "cpu" or "cuda"."""
    boxes, scores = make_detections()
    b, s = boxes.to(device), scores.to(device)
    kept = len(nms_rotated(b, s, 0.1))
    nms = _median_seconds(lambda: nms_rotated(b, s, 0.1), device)
    a_np, b_np = boxes[:500].double().numpy(), boxes[500:1000].double().numpy()
    ours = _median_seconds(lambda: boxes_iou_bev(b[:500], b[500:1000]), device)
    ref = _median_seconds(lambda: iou_bev_reference(a_np, b_np), "cpu", repeats=3)
    return [
        {"op": "nms_rotated", "case": f"2000 clustered boxes, IoU 0.1 ({kept} kept)", "ours_s": nms, "ref_s": None,
         "ref": "-", "target": "< 50 ms", "ok": nms < 0.05},
        {"op": "boxes_iou_bev", "case": "500 x 500", "ours_s": ours, "ref_s": ref, "ref": "shapely",
         "target": "faster than ref", "ok": ours < ref},
    ]


if __name__ == "__main__":
    for row in rows("cuda" if torch.cuda.is_available() else "cpu"):
        print(row)
