"""Benchmark rows for ``ops.integrate_gradients`` (multi-resolution gradient integration, depth completion's solver).

Problems: a smooth field with a step (log-depth-like, values 1.5-3.5) whose forward differences at 3 scales (full,
1/2, 1/4) carry 5 % noise, confidences in [0.5, 1.5], a share of the pixels observed with weight 10, a constant prior
with ``lam`` 1e-2 (seed 0).

- small: 16 x 32, 5 % observed, float64, solved to 1e-12, against the dense direct solve of the explicitly assembled
  normal equations (:mod:`ops.reference.gradient_integration`, assembly included): the reference is only for tests.
- KITTI size: 352 x 1216, 0.5 % observed (sparse random points), float32, the depth network's settings: forward to
  1e-4, against the same op with the Jacobi preconditioner instead of the multigrid one (target: multigrid faster;
  at 5 % observed the two are even, at 0.5 % and 0.05 % Jacobi takes about 9 and 10 times the iterations); and
  forward to 1e-4 plus the implicit backward to 1e-2 (a training step), reported.

Times are medians of 5 runs (3 at KITTI size) after a warm-up, ours and the reference alternating so that load from
other processes hits both alike.
"""

from __future__ import annotations

import statistics

import torch

from bench._timing import seconds
from ops import integrate_gradients
from ops.reference.gradient_integration import integrate_gradients_reference

LAM, SCALES = 1e-2, 3


def _problem(h: int, w: int, density: float, dtype: torch.dtype, device: str) -> tuple:
    """(gradients, confidences, observations, observation_weight, prior) on ``device``."""
    gen = torch.Generator().manual_seed(0)
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    truth = (2.0 + 0.5 * torch.sin(u / 37) * torch.cos(v / 23) + 1.0 * (u > w / 2)).expand(1, 1, h, w)
    grads, confs = [], []
    for s in range(SCALES):
        pooled = torch.nn.functional.avg_pool2d(truth, 2**s) if s else truth
        dx = torch.nn.functional.pad(pooled[..., 1:] - pooled[..., :-1], (0, 1))
        dy = torch.nn.functional.pad(pooled[..., 1:, :] - pooled[..., :-1, :], (0, 0, 0, 1))
        g = torch.cat([dx, dy], 1)
        grads.append(g + 0.05 * g.abs().mean() * torch.randn(g.shape, generator=gen, dtype=torch.float64))
        confs.append(0.5 + torch.rand(g.shape, generator=gen, dtype=torch.float64))
    mask = torch.rand(1, 1, h, w, generator=gen, dtype=torch.float64) < density
    z, a = torch.where(mask, truth, 0.0), 10.0 * mask.double()
    prior = torch.full((1, 1, 1, 1), float(truth.median()), dtype=torch.float64)
    move = [t.to(device=device, dtype=dtype) for t in (*grads, *confs, z, a, prior)]
    return move[:SCALES], move[SCALES:2 * SCALES], *move[2 * SCALES:]


def _median_pair(ours, ref, device: str, repeats: int = 5) -> tuple[float, float]:
    """Median seconds of ``ours`` and ``ref``, run alternately after one warm-up each."""
    ours(), ref()
    times = [(seconds(ours, device), seconds(ref, device)) for _ in range(repeats)]
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def rows(device: str) -> list[dict]:
    """Benchmark rows (see scripts/bench_ops.py) on ``device``: "cpu" or "cuda"."""
    grads, confs, z, a, prior = _problem(16, 32, 0.05, torch.float64, device)
    cpu = [[t.cpu() for t in grads], [t.cpu() for t in confs], z.cpu(), a.cpu(), prior.cpu()]
    ours, ref = _median_pair(lambda: integrate_gradients(grads, confs, z, a, prior, lam=LAM, iters=1000, tol=1e-12),
                             lambda: integrate_gradients_reference(*cpu, LAM), device)
    out = [dict(op="integrate_gradients", case="16 x 32, 5 % observed, 3 scales, float64, to 1e-12", ours_s=ours,
                ref_s=ref, ref="dense direct solve (assembled, float64, CPU)", target="report", ok=None)]

    grads, confs, z, a, prior = _problem(352, 1216, 0.005, torch.float32, device)
    stats: dict = {}

    def solve(kind: str, tol: float, backward: bool, stats: dict) -> None:
        g = [t.clone().requires_grad_(backward) for t in grads]
        x = integrate_gradients(g, confs, z, a, prior, lam=LAM, iters=500, tol=tol, preconditioner=kind, stats=stats,
                                backward_tol=1e-2)
        if backward:
            x.sum().backward()

    jacobi: dict = {}
    ours, ref = _median_pair(lambda: solve("multigrid", 1e-4, False, stats),
                             lambda: solve("jacobi", 1e-4, False, jacobi), device, repeats=3)
    out.append(dict(op="integrate_gradients", case=f"352 x 1216, 0.5 % observed, 3 scales, float32, forward to 1e-4; "
                    f"{stats['total_iterations']} multigrid-PCG iterations ({jacobi['total_iterations']} Jacobi)",
                    ours_s=ours, ref_s=ref, ref="the same op, Jacobi-PCG", target="faster than Jacobi",
                    ok=ours < ref))
    solve("multigrid", 1e-4, True, stats)
    train = statistics.median(seconds(lambda: solve("multigrid", 1e-4, True, stats), device) for _ in range(3))
    out.append(dict(op="integrate_gradients", case=f"352 x 1216, 0.5 % observed, forward to 1e-4 + implicit "
                    f"backward to 1e-2 (training); {stats['total_iterations']} + "
                    f"{stats['backward']['total_iterations']} iterations", ours_s=train, ref_s=None, ref="-",
                    target="report", ok=None))
    return out


if __name__ == "__main__":
    for row in rows("cuda" if torch.cuda.is_available() else "cpu"):
        print(row)
