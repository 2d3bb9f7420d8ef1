"""Time one rollout step of GNS (full radius graph) and of the GIOROM reduced-order model as the cloud grows.

Usage::

    python scripts/bench_simulation.py [--sizes 1000 10000 100000] [--dim 2] [--out bench.md]

For each size N a synthetic particle cloud at constant density is built on the fly: a jittered lattice of spacing
``h`` (default 0.0077 m, the spacing of ``geo3d synth particles`` 2D data with 2000 particles) filling a square /
cube that grows with N, and a plausible velocity history (a rigid rotation plus a translation, about 1e-3 m/step,
with a small random walk per particle and step). Both models are *untrained* (random weights: the cost of a step
does not depend on the weights) with the same processor size (``--latent``, ``--steps``) and the data's
connectivity radius ``2 h``; every particle is evaluated:

* GNS (:class:`pipelines.simulation.gns.GNS`): radius graph of all N particles, message passing on it.
* GIOROM (:class:`pipelines.simulation.giorom.GIOROM`): ``--num-samples`` farthest-point samples (FPS over
  ``--fps-candidates`` x n random candidates), message passing on their sparse graph, then the kernel-integral query
  stage at all N particles (k = ``--query-neighbors``, per-pair width ``--kernel-width``, per-query width
  ``--query-latent``, queries in chunks of 16384, the model's default). The defaults are the sizes of
  ``configs/simulation/giorom_elastic_tiny_cpu.yaml`` and ``gns_elastic_tiny_cpu.yaml`` (latent 64, 4 steps).

A step is the model's ``step`` (sampling and neighbour search included) under ``torch.no_grad``; the time is the
median of ``--repeats`` steps after one warm-up step, with the torch threads the machine gives (or ``--threads``;
on a 2-core machine shared with other jobs, torch's second thread can stall and one thread is faster). A last
line repeats the two ratios from the fastest step of each model, which other jobs on the machine disturb less.
GNS sizes above ``--gns-max-points``, or after a GNS step took longer than ``--gns-time-limit`` seconds, are not run:
their time is extrapolated linearly in the number of edges from the largest size run and marked as such.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops.neighbors import radius_graph  # noqa: E402
from pipelines.simulation.features import HISTORY, Normalizer  # noqa: E402
from pipelines.simulation.giorom import GIOROM, QuerySettings, SamplingSettings  # noqa: E402
from pipelines.simulation.gns import GNS, NetworkSettings  # noqa: E402


def synthetic_cloud(n: int, dim: int, spacing: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A jittered lattice of ``n`` particles at spacing ``spacing`` with a smooth velocity history.

    Returns:
        ``(history (HISTORY, n, dim) float32 metres, bounds (dim, 2) float32 metres)``.
    """
    g = torch.Generator().manual_seed(seed)
    side = math.ceil(n ** (1.0 / dim))
    axes = [torch.arange(side, dtype=torch.float64)] * dim
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, dim)[:n]
    x = (grid + (torch.rand(n, dim, generator=g, dtype=torch.float64) - 0.5) * 0.2) * spacing
    centre = x.mean(0)
    rel = x - centre
    omega = 0.2 / max(float(rel.norm(dim=1).max()), 1e-9) * 1e-2  # rim speed ~2e-3 m/step
    v = torch.zeros_like(x)
    v[:, 0], v[:, 1] = -omega * rel[:, 1], omega * rel[:, 0]
    v = v + torch.tensor([5e-4, -1e-3, 2e-4][:dim], dtype=torch.float64)
    frames = [x]
    for _ in range(HISTORY - 1):
        v = v + torch.randn(n, dim, generator=g, dtype=torch.float64) * 2e-5
        frames.insert(0, frames[0] - v)
    history = torch.stack(frames).float()
    low, high = history.reshape(-1, dim).min(0).values, history.reshape(-1, dim).max(0).values
    bounds = torch.stack([low - 5 * spacing, high + 5 * spacing], dim=1).float()
    return history, bounds


def step_times(fn, repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn()`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    return statistics.median(step_times(fn, repeats, warmup))


@torch.no_grad()
def bench_size(n: int, args: argparse.Namespace, gns: GNS, rom: GIOROM, radius: float, run_gns: bool) -> dict:
    """Times (seconds per step) of both models on a synthetic cloud of ``n`` particles, and GIOROM's stages."""
    history, bounds = synthetic_cloud(n, args.dim, args.spacing)
    types = torch.full((n,), 8, dtype=torch.int64)
    row: dict = {"edges": radius_graph(history[-1], radius, loop=True).shape[1]}
    # GIOROM: the whole step, then its stages (sampling / sparse graph + processor / query at all N particles)
    times = step_times(lambda: rom.step(history, types, bounds), args.repeats)
    row["rom"], row["rom_min"] = statistics.median(times), min(times)
    idx = rom.sample(history[-1])
    sparse_r = rom.sparse_radius(n, len(idx))
    sh, st = history[:, idx], types[idx]
    latent = rom.encode_samples(sh, st, bounds, None, sparse_r)
    row["rom_sample"] = median_time(lambda: rom.sample(history[-1]), args.repeats)
    row["rom_process"] = median_time(lambda: rom.encode_samples(sh, st, bounds, None, sparse_r), args.repeats)
    row["rom_query"] = median_time(lambda: rom.query(latent, sh, st, history, bounds, sparse_r, types), args.repeats)
    row["samples"], row["sparse_edges"] = len(idx), radius_graph(sh[-1], sparse_r, loop=True).shape[1]
    row["gns_measured"] = run_gns
    if run_gns:
        t0 = time.perf_counter()
        gns.step(history, types, bounds)  # warm-up, and a guard against sizes that take too long
        row["gns_first"] = time.perf_counter() - t0
        reps = args.repeats if row["gns_first"] * args.repeats < 4 * args.gns_time_limit else 1
        times = step_times(lambda: gns.step(history, types, bounds), reps, warmup=0)
        row["gns"], row["gns_min"] = statistics.median(times), min(times)
    return row


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--dim", type=int, default=2)
    p.add_argument("--spacing", type=float, default=0.0077, help="particle spacing h, metres (radius = 2 h)")
    p.add_argument("--latent", type=int, default=64)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--sample", default="fps", choices=["fps", "random"])
    p.add_argument("--fps-candidates", type=int, default=4)
    p.add_argument("--query-neighbors", type=int, default=4)
    p.add_argument("--kernel-width", type=int, default=16)
    p.add_argument("--query-latent", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--gns-max-points", type=int, default=100000)
    p.add_argument("--gns-time-limit", type=float, default=60.0, help="seconds per GNS step before giving up")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    radius = 2.0 * args.spacing
    stats = Normalizer([0.0] * args.dim, [2e-3] * args.dim, [0.0] * args.dim, [2e-4] * args.dim)
    network = NetworkSettings(latent=args.latent, steps=args.steps)
    gns = GNS(args.dim, network, radius=radius).eval()
    rom = GIOROM(args.dim, network, SamplingSettings(num_samples=args.num_samples, method=args.sample,
                                                     fps_candidates=args.fps_candidates),
                 QuerySettings(neighbors=args.query_neighbors, kernel_width=args.kernel_width,
                               latent=args.query_latent), radius=radius).eval()
    for model in (gns, rom):
        model.set_statistics(stats, radius)

    rows: dict[int, dict] = {}
    gns_ok = True
    for n in args.sizes:
        row = bench_size(n, args, gns, rom, radius, run_gns=gns_ok and n <= args.gns_max_points)
        if row["gns_measured"]:
            gns_ok = row["gns_first"] <= args.gns_time_limit
        else:
            measured = [r for r in rows.values() if r["gns_measured"]]
            if not measured:
                raise SystemExit("no GNS size could be measured: lower --sizes")
            row["gns"] = measured[-1]["gns"] * row["edges"] / measured[-1]["edges"]
            row["gns_min"] = measured[-1]["gns_min"] * row["edges"] / measured[-1]["edges"]
        rows[n] = row
        print(f"N={n}: GNS {row['gns']:.4f} s{'' if row['gns_measured'] else ' (extrapolated)'}, "
              f"GIOROM {row['rom']:.4f} s (sample {row['rom_sample']:.4f}, process {row['rom_process']:.4f}, "
              f"query {row['rom_query']:.4f})", flush=True)

    lines = [
        f"Rollout-step time, {args.dim}D jittered lattice at spacing {args.spacing} m (radius {radius:.4f} m), "
        f"untrained models, latent {args.latent}, {args.steps} message-passing steps (MLPs with 2 hidden layers), "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, median of {args.repeats} steps after "
        "a warm-up, torch.no_grad. GIOROM: "
        f"{args.num_samples} {args.sample} samples (FPS over {args.fps_candidates} x n random candidates), "
        f"query stage k = {args.query_neighbors}, kernel width {args.kernel_width}, query width {args.query_latent}.",
        "",
        "| points N | GNS edges | GNS s/step | GIOROM samples n (sparse edges) | GIOROM s/step | "
        "sample / process / query s | GNS / GIOROM |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in rows.items():
        gns_time = f"{r['gns']:.4f}" + ("" if r["gns_measured"] else " (extrapolated)")
        lines.append(f"| {n} | {r['edges']} | {gns_time} | {r['samples']} ({r['sparse_edges']}) | {r['rom']:.4f} | "
                     f"{r['rom_sample']:.4f} / {r['rom_process']:.4f} / {r['rom_query']:.4f} | "
                     f"{r['gns'] / r['rom']:.1f} |")
    small, large = min(rows), max(rows)
    lines += [
        "",
        f"- GIOROM({large})/GIOROM({small}) = {rows[large]['rom'] / rows[small]['rom']:.2f} (target <= 3)",
        f"- GNS({large})/GIOROM({large}) = {rows[large]['gns'] / rows[large]['rom']:.1f} (target >= 10)"
        + ("" if rows[large]["gns_measured"] else " (GNS extrapolated)"),
        f"- the same from the fastest of the {args.repeats} steps (less sensitive to other jobs on the machine): "
        f"{rows[large]['rom_min'] / rows[small]['rom_min']:.2f} and "
        f"{rows[large]['gns_min'] / rows[large]['rom_min']:.1f}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
