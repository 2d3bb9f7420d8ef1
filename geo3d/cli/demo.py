"""``geo3d demo``: the main job end to end on generated data, written up as a report.

Stages, in order (each timed; each returns a :class:`geo3d.report.StageResult` whose text, metrics and pictures
go into ``OUT/report.md`` and ``OUT/metrics.json``):

1. ``shapes``: synthesize a mesh scene and a point cloud (PLY), read them back, check them, render both headless.
2. ``formats``: round-trip the data through the other writers (OBJ mesh, 3DGS PLY) and measure the error.
3. ``kitti``: a synthetic LiDAR frame as a KITTI dataset, read back and rendered with its label boxes (and the
   real KITTI sample when ``../shared/data`` is present).
4. ``detection`` .. 8. ``simulation``: each pipeline's own stage, ``pipelines.<name>.demo.run_stage``.

This module only runs stages: what a stage does lives with it (:mod:`geo3d.cli.demo_stages` for the first three,
each pipeline's ``demo.py`` for the rest). ``--stages NAME...`` runs a chosen few (in this order).
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

from geo3d.report import Report, StageResult

STAGE_RUNNERS: dict[str, str] = {
    "shapes": "geo3d.cli.demo_stages:run_shapes",
    "formats": "geo3d.cli.demo_stages:run_formats",
    "kitti": "geo3d.cli.demo_stages:run_kitti",
    "detection": "pipelines.detection.demo:run_stage",
    "splatting": "pipelines.splatting.demo:run_stage",
    "surface": "pipelines.surface.demo:run_stage",
    "depth": "pipelines.depth.demo:run_stage",
    "simulation": "pipelines.simulation.demo:run_stage",
}
"""Stage name -> ``module:function`` taking the stage's folder (``OUT/<name>``) and returning a StageResult."""

STAGES = tuple(STAGE_RUNNERS)


def run_stage(name: str, out: Path, **options: Any) -> StageResult:
    """Run one stage into ``out / name``; ``options`` go to its function (e.g. detection's ``max_minutes``)."""
    module, _, function = STAGE_RUNNERS[name].partition(":")
    result = getattr(importlib.import_module(module), function)(Path(out) / name, **options)
    if not isinstance(result, StageResult):
        raise TypeError(f"demo stage {name!r} ({STAGE_RUNNERS[name]}) returned {type(result).__name__}, "
                        "expected a geo3d.report.StageResult")
    return result


def run_demo(out: str | Path = "out/demo", stages: list[str] | None = None,
             options: dict[str, dict[str, Any]] | None = None) -> Path:
    """Run the chosen stages (default all, in :data:`STAGES` order) into ``out``; returns the report path.

    Args:
        out: the report folder.
        stages: stage names (any order; they run in :data:`STAGES` order). None: all.
        options: stage name -> keyword arguments for that stage's function.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = set(STAGES if stages is None else stages)
    unknown = chosen - set(STAGES)
    if unknown:
        raise ValueError(f"demo: unknown stage(s) {', '.join(sorted(unknown))}; expected {', '.join(STAGES)}")
    report = Report(out)
    for name in STAGES:
        if name not in chosen:
            print(f"[demo] {name}: skipped")
            continue
        t0 = time.perf_counter()
        print(f"[demo] {name} ...", flush=True)
        report.add(run_stage(name, out, **(options or {}).get(name, {})))
        print(f"[demo] {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    return report.write()
