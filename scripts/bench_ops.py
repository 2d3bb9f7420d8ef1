#!/usr/bin/env python
"""Benchmark every op against its reference and print one table.

Each module in ``scripts/bench/`` defines ``rows(device: str) -> list[dict]``; a row has
``op``, ``case``, ``ours_s`` (seconds), ``ref_s`` (seconds or None), ``ref`` (what the reference is),
``target`` (the goal in words) and ``ok`` (True/False, or None when there is no target).

Usage:
    python scripts/bench_ops.py                 # CPU, all ops
    python scripts/bench_ops.py --device cuda   # on a GPU machine
    python scripts/bench_ops.py --only rasterize sparse_conv
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--only", nargs="*", default=None, help="bench module names to run (default: all)")
    args = parser.parse_args(argv)
    import torch

    if args.device not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to torch on this machine")
    load_before = os.getloadavg()
    names = sorted(m.name for m in pkgutil.iter_modules([str(HERE / "bench")]) if not m.name.startswith("_"))
    if args.only:
        names = [n for n in names if n in args.only]
    rows = []
    for name in names:
        t0 = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        rows.extend(module.rows(args.device))
        print(f"# {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    header = ["op", "case", "ours", "reference", "ref time", "ratio", "target", "met"]
    table = []
    for r in rows:
        ratio = f"{r['ref_s'] / r['ours_s']:.1f}x" if r.get("ref_s") and r["ours_s"] else "-"
        met = {True: "yes", False: "NO", None: "-"}[r.get("ok")]
        table.append([r["op"], r["case"], _fmt(r["ours_s"]), r.get("ref", "-"), _fmt(r.get("ref_s")), ratio,
                      r.get("target", "-"), met])
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    machine = torch.cuda.get_device_name() if args.device == "cuda" else cpu
    print(f"device: {args.device} ({machine}); torch {torch.__version__}, {torch.get_num_threads()} torch threads; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; "
          f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    return 0 if all(r.get("ok") is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
