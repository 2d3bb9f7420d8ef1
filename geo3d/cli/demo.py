"""``geo3d demo``: every pipeline on fresh synthetic data and the shared real samples, written up as a report.

Stages, in order (each timed; each returns a :class:`geo3d.report.StageResult` whose text, metrics, pictures and
zoo card comparisons go into ``OUT/report.md`` and ``OUT/metrics.json``):

1. ``shapes``: synthesize a mesh scene and a point cloud (PLY), read them back, check them, render both headless.
2. ``formats``: round-trip the data through the other writers (OBJ mesh, 3DGS PLY) and measure the error.
3. ``kitti``: a synthetic LiDAR frame as a KITTI dataset, read back and rendered with its label boxes (and the
   real KITTI sample when ``../shared/data`` is present).
4. ``detection``, 5. ``splatting``, 7. ``surface``, 8. ``depth`` and 9. ``simulation``: each pipeline's own
   stage, ``pipelines.<name>.demo.run_stage``. Every stage with a learned model runs the model zoo's weights
   (:mod:`geo3d.zoo`) and puts its numbers beside the model card's; ``splatting`` is the one short training run
   from scratch.
6. ``chain``: the splatting stage's Gaussians rendered to an RGB-D folder (``geo3d render --depth``) and meshed by
   ``geo3d reconstruct`` without any flag (:func:`geo3d.cli.demo_stages.run_chain`: it crosses two pipelines, so
   it lives with the command line).

This module only runs stages: what a stage does lives with it (:mod:`geo3d.cli.demo_stages` for the core stages
and the chain, each pipeline's ``demo.py`` for the rest), and so does the one line saying what it shows (the
runner module's ``SHOWS``: a string, or stage name -> string for a module with several stages), which the report
lists first. ``--stages NAME...`` runs a chosen few (in this order).
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
    "chain": "geo3d.cli.demo_stages:run_chain",
    "surface": "pipelines.surface.demo:run_stage",
    "depth": "pipelines.depth.demo:run_stage",
    "simulation": "pipelines.simulation.demo:run_stage",
}
"""Stage name -> ``module:function`` taking the stage's folder (``OUT/<name>``) and returning a StageResult."""

STAGES = tuple(STAGE_RUNNERS)


def stage_shows(name: str) -> str:
    """The one line saying what stage ``name`` shows: its runner module's ``SHOWS`` (a string, or a dict by stage)."""
    module = importlib.import_module(STAGE_RUNNERS[name].partition(":")[0])
    shows = getattr(module, "SHOWS", None)
    line = shows.get(name) if isinstance(shows, dict) else shows
    if not isinstance(line, str) or not line.strip():
        raise TypeError(f"demo stage {name!r}: {module.__name__}.SHOWS has no line for it")
    return line.strip()


def run_stage(name: str, out: Path, **options: Any) -> StageResult:
    """Run one stage into ``out / name``; ``options`` go to its function."""
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
    names = [name for name in STAGES if name in chosen]
    report = Report(out, shows={name: stage_shows(name) for name in names})
    start = time.perf_counter()
    for name in STAGES:
        if name not in chosen:
            print(f"[demo] {name}: skipped")
            continue
        t0 = time.perf_counter()
        print(f"[demo] {name} ...", flush=True)
        result = run_stage(name, out, **(options or {}).get(name, {}))
        seconds = time.perf_counter() - t0
        report.add(result, seconds=seconds)
        print(f"[demo] {name}: {seconds:.1f} s", flush=True)
    print(f"[demo] {len(names)} stage(s) in {time.perf_counter() - start:.1f} s", flush=True)
    return report.write()
