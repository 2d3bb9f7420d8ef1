"""The simulation stage of ``geo3d demo`` (:func:`run_stage`): the model zoo's GIOROM models rolled out on their
benchmark's held-out trajectories, beside the constant-velocity baseline and the model cards.

1. Data: the test trajectories of each card's benchmark set (``geo3d synth particles DIR --material M --dim 2
   --trajectories 20 --particles 2000 --steps 200 --seed 0``: trajectories 18 and 19), simulated again on their
   own (:func:`benchmark_test_trajectories`: every trajectory has a seed of its own, spawned from the set's seed,
   so they are the very trajectories of the set's ``test.h5``; about 1.5 s each instead of the set's 20).
2. Models: ``zoo:giorom_elastic`` and ``zoo:giorom_sand`` (:func:`geo3d.zoo.load`), no training.
3. Each test trajectory rolled out to its end (194 steps, every one of its 2000 particles) by the model and by
   the constant-velocity baseline (:meth:`~pipelines.simulation.module.SimulatorModule.rollout_trajectory`, as
   ``geo3d test`` runs it): position MSE at 1, 5 and 20 steps and over the rollout, Chamfer distance and
   kinetic-energy error (:func:`geo3d.metrics.simulation.rollout_metrics`), averaged over the trajectories as
   ``geo3d test`` averages them: the cards' numbers.
4. The elastic model's first test rollout written as a rollout file and rendered as a GIF (ground truth beside
   prediction) into the report folder; the shared LagrangeBench format sample (``../shared/data/particles``)
   loaded into the datamodule when present.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geo3d.io.shared_data import shared_data_dir
from geo3d.report import StageResult, card_checks

ZOO_MODELS = {"giorom_elastic": "elastic", "giorom_sand": "sand"}
"""Zoo entry -> the material of its benchmark set."""
BENCHMARK = {"dim": 2, "trajectories": 20, "particles": 2000, "steps": 200, "seed": 0}
"""The cards' ``geo3d synth particles`` settings (besides the material)."""
METRICS = ("mse_1", "mse_5", "mse_20", "mse_full", "chamfer", "ekin_error")
CARD_NAMES = {"mse_1": "test 1-step MSE", "mse_5": "test 5-step MSE", "mse_20": "test 20-step MSE",
              "mse_full": "test full-rollout MSE", "chamfer": "test full-rollout Chamfer",
              "ekin_error": "test kinetic-energy error"}
"""Rollout metric -> its name on the cards (followed by ``, model`` or ``, constant velocity``)."""
SHOWS = ("the model zoo's GIOROM models (`zoo:giorom_elastic`, `zoo:giorom_sand`) rolled out to the end of their "
         "benchmark's held-out test trajectories (regenerated exactly) against the constant-velocity baseline, "
         "with a rollout GIF, beside their model cards")


def benchmark_test_trajectories(material: str, dim: int = 2, trajectories: int = 20, particles: int = 2000,
                                steps: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """The test trajectories of ``geo3d synth particles`` with these settings, simulated on their own.

    :func:`geo3d.synth.particles.generate_particles` draws trajectory ``i`` from the ``i``-th seed spawned from
    ``seed`` and puts the last ones in the test split (:func:`~geo3d.synth.particles.default_splits`), with the
    material's default walls and frame interval; this simulates only those.

    Returns:
        One item per test trajectory, as the test data loader gives it: ``positions`` (T, N, D) float32 metres,
        ``particle_types`` (N,) int64, ``bounds`` (D, 2) float32 metres, ``dt`` seconds, ``trajectory`` its index
        in the test split.
    """
    from geo3d.synth.particles import FRAME_DT, PARTICLE_TYPES, default_splits, simulate_trajectory

    seeds = np.random.SeedSequence(seed).spawn(trajectories)
    test = default_splits(trajectories)[2]
    items = []
    for index, i in enumerate(range(trajectories - test, trajectories)):
        positions, _ = simulate_trajectory(seeds[i], material, dim, particles, steps, FRAME_DT)
        items.append({"positions": torch.from_numpy(positions),
                      "particle_types": torch.full((particles,), PARTICLE_TYPES[material], dtype=torch.int64),
                      "bounds": torch.tensor([[0.0, 1.0]] * dim), "dt": FRAME_DT, "trajectory": index})
    return items


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


def run_stage(out: Path, benchmark: dict[str, int] | None = None) -> StageResult:
    """Run the stage into ``out`` (the rollout file); the GIF goes to the report folder ``out.parent``.

    Args:
        out: the stage's folder (``geo3d demo`` passes ``<report folder>/simulation``).
        benchmark: the benchmark sets' settings (:func:`benchmark_test_trajectories`' keywords; None: the cards',
            :data:`BENCHMARK`).

    Returns:
        The stage's report section: metrics ``<material>_giorom_<metric>`` and
        ``<material>_constant_velocity_<metric>`` for the metrics of :data:`METRICS` (MSE and Chamfer in m^2,
        kinetic-energy error relative), timings, the rollout GIF, and the numbers beside both cards.
    """
    from geo3d import zoo
    from geo3d.io.rollout import write_rollout
    from geo3d.metrics.simulation import rollout_metrics
    from pipelines.simulation.predict import rollout_from_prediction
    from viewers.particles import load_animation, render_gif

    out = Path(out)
    benchmark = dict(BENCHMARK if benchmark is None else benchmark)
    metrics: dict[str, Any] = {}
    checks = []
    sentences = []
    gif = None
    for name, material in ZOO_MODELS.items():
        model = zoo.load(name)
        start = time.perf_counter()
        trajectories = benchmark_test_trajectories(material, **benchmark)
        metrics[f"{material}_generate_seconds"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        ours, baseline = [], []
        for trajectory in trajectories:
            with torch.no_grad():
                pred, constant, true = model.rollout_trajectory(trajectory, None)
            ours.append(rollout_metrics(pred, true, model.evaluation.particle_mass))
            baseline.append(rollout_metrics(constant, true, model.evaluation.particle_mass))
            if gif is None:
                history = trajectory["positions"][: model.model.history]
                rollout = rollout_from_prediction({"history": history, "pred": pred, "true": true,
                                                   "baseline": constant, "particle_types": trajectory["particle_types"],
                                                   "bounds": trajectory["bounds"], "dt": trajectory["dt"],
                                                   "model": type(model.model).__name__}, trajectory["dt"])
                rollout_file = write_rollout(out / f"rollout_{material}_test0.h5", rollout)
                gif = render_gif(load_animation(rollout_file), out.parent / "simulation_rollout.gif", width=720,
                                 max_frames=50, fps=12, progress=False)
        metrics[f"{material}_rollout_seconds"] = round(time.perf_counter() - start, 1)
        metrics[f"{material}_rollout_steps"] = int(pred.shape[0])
        measured = {}
        for key in METRICS:
            mean_ours = float(np.mean([m[key] for m in ours]))
            mean_base = float(np.mean([m[key] for m in baseline]))
            metrics[f"{material}_giorom_{key}"] = mean_ours
            metrics[f"{material}_constant_velocity_{key}"] = mean_base
            measured[f"{CARD_NAMES[key]}, model"] = mean_ours
            measured[f"{CARD_NAMES[key]}, constant velocity"] = mean_base
        checks += card_checks(name, measured)
        m20, b20 = metrics[f"{material}_giorom_mse_20"], metrics[f"{material}_constant_velocity_mse_20"]
        sentences.append(
            f"{material}: 20-step position MSE {m20:.3g} m^2 against the baseline's {b20:.3g} "
            f"({b20 / max(m20, 1e-30):.1f}x lower), full-rollout MSE {metrics[f'{material}_giorom_mse_full']:.3g} "
            f"against {metrics[f'{material}_constant_velocity_mse_full']:.3g}")
    settings = " ".join(f"--{k} {v}" for k, v in benchmark.items())
    text = (f"The GIOROM models of the model zoo (`zoo:giorom_elastic`, `zoo:giorom_sand`; no training here), each "
            f"rolled out over the {len(trajectories)} held-out test trajectories of its benchmark set (`geo3d synth "
            f"particles DIR --material M {settings}`; the test trajectories simulated again on their own, identical "
            f"to the set's `test.h5`) to their end ({metrics['elastic_rollout_steps']} steps, all "
            f"{benchmark['particles']} particles), against the constant-velocity "
            f"baseline, as `geo3d test` does: " + "; ".join(sentences) + ". The GIF shows the elastic model's first "
            f"test rollout, ground truth beside prediction, coloured by speed (`geo3d view {rollout_file.name} "
            "--out rollout.gif`).\n\n" + _shared_sample_check())
    return StageResult("simulation", text, metrics, [gif], tuple(checks))
