"""The simulation stage of ``geo3d demo``: generate, train briefly, roll out, render ground truth beside prediction.

:func:`run_stage` (what ``geo3d demo`` calls):

1. ``geo3d synth particles``: 2D elastic bodies, 8 trajectories (6 train, 1 valid, 1 test) of 600 particles x 100
   frames (MLS-MPM on warp).
2. The GIOROM reduced-order model at ``configs/simulation/giorom_elastic_tiny_cpu.yaml``'s sizes (processor on
   1/8 of the particles, farthest-point sampled; kernel-integral query stage at every particle), trained for
   ``seconds`` (default 50). A smoke-sized run, not the benchmark model (that one trains 15 minutes on 20
   trajectories of 2000 particles); the report says so.
3. The test trajectory rolled out to its end by the model and by the constant-velocity baseline: MSE at 1, 5, 20
   steps and over the rollout, Chamfer distance, kinetic-energy error.
4. The rollout written as a rollout file and rendered as a GIF (ground truth beside prediction) into the report
   folder, and the shared LagrangeBench format sample (``../shared/data/particles``) loaded into the datamodule
   when present.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

from geo3d.io.shared_data import shared_data_dir
from geo3d.report import StageResult
from geo3d.synth.particles import generate_particles
from geo3d.timed_fit import timed_fit


def _shared_sample_check() -> str:
    """Load the shared LagrangeBench sample's test split through the datamodule; a sentence saying what happened."""
    from pipelines.simulation.data import SimulationDataModule

    folder = shared_data_dir() / "particles"
    if not folder.is_dir():
        return "The shared LagrangeBench format sample (`../shared/data/particles`) is absent: not checked."
    candidates = sorted({p.parent for p in folder.rglob("metadata.json")})
    if not candidates:
        return f"No `metadata.json` under {folder}: the format sample was not checked."
    data = SimulationDataModule(str(candidates[0]), batch_size=1)
    with warnings.catch_warnings(record=True) as caught:  # its periodic box: said in the sentence instead
        warnings.simplefilter("always")
        data.setup("test")
    periodic = any("periodic" in str(w.message) for w in caught)
    trajectory = data.test_set.trajectories[0]
    return (f"The shared LagrangeBench format sample `{candidates[0].name}` loads into the datamodule: "
            f"{len(data.test_set)} test trajectory of {trajectory.num_particles} particles x "
            f"{trajectory.num_steps} frames in {trajectory.dim}D"
            + (" (its periodic box is read as walls: the models do not wrap positions)." if periodic else "."))


def run_stage(out: Path, seconds: float = 50.0) -> StageResult:
    """Run the stage into ``out`` (data, rollout file); the GIF goes to the report folder ``out.parent``.

    Args:
        out: the stage's folder (``geo3d demo`` passes ``<report folder>/simulation``).
        seconds: training budget, wall-clock seconds (at most 1500 steps).

    Returns:
        The stage's report section: metrics ``giorom_*`` and ``constant_velocity_*`` (``mse_1``, ``mse_5``,
        ``mse_20``, ``mse_full``, ``chamfer`` in m^2; ``ekin_error``), timings, and the rollout GIF.
    """
    from geo3d.io.rollout import write_rollout
    from geo3d.metrics.simulation import rollout_metrics
    from pipelines.simulation.data import SimulationDataModule
    from pipelines.simulation.module import GIOROMModule, OptimSettings
    from pipelines.simulation.predict import rollout_from_prediction
    from viewers.particles import load_animation, render_gif

    out = Path(out)
    start = time.perf_counter()
    data_dir = generate_particles(out / "elastic_2d", material="elastic", dim=2, trajectories=8, particles=600,
                                  steps=100, seed=0, splits=(6, 1, 1), progress=False)
    generate_seconds = time.perf_counter() - start
    pl.seed_everything(0, verbose=False)
    data = SimulationDataModule(str(data_dir), batch_size=2, noise_std=1e-4, num_workers=0)
    model = GIOROMModule(dim=data.dim, optim=OptimSettings(lr=1e-3, lr_final=1e-4), radius=data.radius,
                         statistics=data.statistics)
    max_steps = 1500
    train_steps, train_seconds = timed_fit(model, data, seconds, max_steps=max_steps, accelerator="cpu")
    model.eval()
    data.setup("test")
    trajectory = data.test_set[0]
    start = time.perf_counter()
    with torch.no_grad():
        prediction = model.predict_step(trajectory, 0)
    rollout_seconds = time.perf_counter() - start
    steps = prediction["pred"].shape[0]
    ours = rollout_metrics(prediction["pred"], prediction["true"])
    baseline = rollout_metrics(prediction["baseline"], prediction["true"])
    rollout_file = write_rollout(out / "rollout_test.h5", rollout_from_prediction(prediction, trajectory["dt"]))
    gif = render_gif(load_animation(rollout_file), out.parent / "simulation_rollout.gif", width=720,
                     max_frames=50, fps=12, progress=False)

    metrics: dict = {"generate_seconds": round(generate_seconds, 1), "train_steps": train_steps,
                     "train_seconds": round(train_seconds, 1), "rollout_steps": steps,
                     "rollout_seconds": round(rollout_seconds, 2)}
    for key in ("mse_1", "mse_5", "mse_20", "mse_full", "chamfer", "ekin_error"):
        metrics[f"giorom_{key}"] = ours[key]
        metrics[f"constant_velocity_{key}"] = baseline[key]
    n = prediction["pred"].shape[1]
    samples = model.model.sample(prediction["history"][-1]).numel()
    text = (
        f"`geo3d synth particles`: 8 trajectories of {n} elastic particles x 100 frames (2D MLS-MPM) in "
        f"{generate_seconds:.1f} s. GIOROM (processor on {samples} farthest-point samples, query stage at all {n} "
        f"particles) trained {train_steps} steps in {train_seconds:.0f} s: a smoke-sized run; the README's "
        f"numbers come from `configs/simulation/giorom_elastic_tiny_cpu.yaml` (15 minutes, 20 x 2000 particles). "
        f"The held-out trajectory rolled out {steps} steps in {rollout_seconds:.1f} s: 20-step position MSE "
        f"{ours['mse_20']:.3g} m^2 against the constant-velocity baseline's {baseline['mse_20']:.3g} "
        f"(the model's is {baseline['mse_20'] / max(ours['mse_20'], 1e-30):.1f}x lower) and full-rollout MSE "
        f"{ours['mse_full']:.3g} against {baseline['mse_full']:.3g}. The GIF shows the ground "
        f"truth beside the prediction, coloured by speed (`geo3d view {rollout_file.name} --out rollout.gif`).\n\n"
        + _shared_sample_check()
    )
    return StageResult("simulation", text, metrics, [gif])
