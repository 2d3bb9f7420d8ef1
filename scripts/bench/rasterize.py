"""Benchmark rows for ``ops.rasterize.rasterize_gaussians``: 10k Gaussians, 128x128, 1 camera, fwd + bwd.

Scene: 10,000 random Gaussians in a 4 m cube 3-7 m in front of the camera (fx = 96 px, so the cube fills
the 128x128 image), opacities 0.05-0.95. ``realistic``: per-axis standard deviations log-uniform in
0.5-2.5 % of the scene size (a 4-sigma footprint of 2-10 %), about 360 Gaussians per 16x16 tile on
average, 1,100 at most. ``dense``: standard deviations 2-10 % of the scene size, about 1,100 per tile on
average and 3,000 at most, a stress case. Loss: a fixed random weighting of render and alpha.

On CPU, ours is the tile rasterizer (best of 7 runs after a warm-up that loads the compiled numba kernels:
the 2-core development machine is shared, and the best run is the one least disturbed by other jobs) and the
reference is the dense torch compositor (``ops/reference/rasterize.py``, pixels in checkpointed chunks of
2,048), timed once (a minute or more). On CUDA, ours is gsplat and the reference is our CPU path.

Wall times on a small machine shared with other jobs depend on OpenMP's wait policy: torch and numba each
run a libgomp thread pool whose idle threads spin-wait by default, and on 2 busy cores the spinning steals
the time slices the working threads need (measured 0.23-1.5 s per step instead of 0.10-0.20 s). Run the
benchmark with ``OMP_WAIT_POLICY=PASSIVE`` there for stable numbers; it must be set before torch is imported.
"""

from __future__ import annotations

import math
import time

import torch

from ops.rasterize import rasterize_gaussians
from ops.reference.rasterize import rasterize_reference

N_GAUSSIANS, SIZE, SCENE = 10_000, 128, 4.0
CASES = {"realistic": (0.005, 0.025), "dense": (0.02, 0.1)}


def make_scene(std_range: tuple[float, float], device: str, seed: int = 0) -> dict:
    """Random Gaussians (leaf tensors requiring grad) and one camera, float32 on ``device``."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(N_GAUSSIANS, 3, generator=g) - 0.5) * SCENE
    means[:, 2] += 5.0
    lo, hi = (math.log(s * SCENE) for s in std_range)
    scene = {
        "means": means,
        "quats": torch.randn(N_GAUSSIANS, 4, generator=g),
        "scales": torch.exp(torch.empty(N_GAUSSIANS, 3).uniform_(lo, hi, generator=g)),
        "opacities": torch.rand(N_GAUSSIANS, generator=g) * 0.9 + 0.05,
        "colors": torch.rand(N_GAUSSIANS, 3, generator=g),
    }
    scene = {k: v.to(device).requires_grad_(True) for k, v in scene.items()}
    K = torch.tensor([[[96.0, 0.0, SIZE / 2], [0.0, 96.0, SIZE / 2], [0.0, 0.0, 1.0]]], device=device)
    cameras = (torch.eye(4, device=device)[None], K, SIZE, SIZE)
    return scene, cameras


def forward_backward(render_fn, scene: dict, cameras: tuple, weights: tuple) -> float:
    """Seconds for one render + backward of the weighted-sum loss."""
    for v in scene.values():
        v.grad = None
    if scene["means"].is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = render_fn(*scene.values(), *cameras)
    loss = (out[0] * weights[0]).sum() + (out[1] * weights[1]).sum()
    loss.backward()
    if scene["means"].is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def best_time(render_fn, scene, cameras, weights, repeats: int = 7) -> float:
    """Best of ``repeats`` forward + backward runs after a warm-up (numba compile or cache load), seconds."""
    forward_backward(render_fn, scene, cameras, weights)
    return min(forward_backward(render_fn, scene, cameras, weights) for _ in range(repeats))


def reference(*args):
    return rasterize_reference(*args, pixel_chunk=2048)


def rows(device: str) -> list[dict]:
    """Benchmark rows (see scripts/bench_ops.py) on ``device``: "cpu" or "cuda"."""
    out = []
    for case, std_range in CASES.items():
        scene, cameras = make_scene(std_range, device)
        g = torch.Generator().manual_seed(1)
        weights = tuple(torch.rand(SIZE, SIZE, c, generator=g).to(device) for c in (3, 1))
        ours = best_time(rasterize_gaussians, scene, cameras, weights)
        row = {"op": "rasterize", "case": f"10k Gaussians 128x128 fwd+bwd, {case}", "ours_s": ours}
        if device == "cpu":
            if case == "realistic":
                ref_s = forward_backward(reference, scene, cameras, weights)
                row.update(ref_s=ref_s, ref="dense torch reference", target="< 0.5 s and >= 50x reference",
                           ok=ours < 0.5 and ref_s / ours >= 50)
            else:
                row.update(ref_s=None, ref="-", target="stress case, no target", ok=None)
        else:
            cpu_scene, cpu_cameras = make_scene(std_range, "cpu")
            cpu_weights = tuple(w.cpu() for w in weights)
            ref_s = best_time(rasterize_gaussians, cpu_scene, cpu_cameras, cpu_weights)
            row.update(ref_s=ref_s, ref="our CPU tile rasterizer", target="-", ok=None)
        out.append(row)
    return out


if __name__ == "__main__":
    for r in rows("cuda" if torch.cuda.is_available() else "cpu"):
        print(r)
