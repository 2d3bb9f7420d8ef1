"""GIOROM reduced-order model: seeded sampling, the query stage's discretization independence, translation
invariance, shapes for arbitrary query sets, batching, a short training run that lowers the loss and beats constant
velocity on the first rollout steps, a fit whose rollouts equal a step-by-step recomputation, and the tiny configs
through `geo3d fit` (farthest-point sampling itself: tests/ops/test_sampling.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from geo3d.metrics.simulation import rollout_metrics
from pipelines.simulation.data import SimulationDataModule, collate_windows, write_analytic_dataset
from pipelines.simulation.features import HISTORY, Normalizer
from pipelines.simulation.giorom import GIOROM, QuerySettings, SamplingSettings, resolve_count, sample_indices
from pipelines.simulation.gns import NetworkSettings
from pipelines.simulation.module import EvaluationSettings, GIOROMModule, OptimSettings

REPO = Path(__file__).resolve().parents[3]


def _min_pairwise(points: torch.Tensor) -> float:
    d = torch.cdist(points, points)
    d.fill_diagonal_(math.inf)
    return float(d.min())


def test_sample_indices_are_deterministic_with_a_seed():
    points = torch.rand(400, 2, generator=torch.Generator().manual_seed(0))
    for method, candidates in (("fps", None), ("fps", 2), ("random", None)):
        a = sample_indices(points, 40, method, torch.Generator().manual_seed(3), candidates)
        b = sample_indices(points, 40, method, torch.Generator().manual_seed(3), candidates)
        c = sample_indices(points, 40, method, torch.Generator().manual_seed(4), candidates)
        assert torch.equal(a, b) and not torch.equal(a, c), method
        assert len(set(a.tolist())) == 40 and int(a.min()) >= 0 and int(a.max()) < 400
    # FPS over 2 x 40 random candidates is still spread: better than a random subset
    fps = sample_indices(points, 40, "fps", torch.Generator().manual_seed(3), 2)
    rnd = sample_indices(points, 40, "random", torch.Generator().manual_seed(3))
    assert _min_pairwise(points[fps]) > _min_pairwise(points[rnd])
    assert resolve_count(0.125, 2000) == 250 and resolve_count(1000, 300) == 300 and resolve_count(0.001, 10) == 1
    with pytest.raises(ValueError):
        resolve_count(1.5, 10)
    with pytest.raises(ValueError, match="sample must be one of"):
        SamplingSettings(method="grid")
    with pytest.raises(ValueError, match="query_neighbors must be >= 1"):
        QuerySettings(neighbors=0)


def _model(dim: int = 2, num_samples: int | float = 0.125) -> GIOROM:
    torch.manual_seed(0)
    model = GIOROM(dim, NetworkSettings(latent=16, steps=2), SamplingSettings(num_samples=num_samples),
                   QuerySettings(latent=8), radius=0.1).double().eval()
    stats = Normalizer([0.0] * dim, [0.01] * dim, [0.0] * dim, [0.001] * dim)
    model.set_statistics(stats, 0.1)
    return model


def test_query_stage_is_discretization_agnostic(random_history):
    model = _model(num_samples=30)
    history, types = random_history(200, 2), torch.arange(200) % 3
    bounds = torch.tensor([[-0.1, 1.1]] * 2, dtype=torch.float64)
    samples = model.sample(history[-1])
    assert samples.shape == (30,)
    s = int(samples[4])  # a query point that coincides with a sample
    others = random_history(50, 2, seed=9)  # unrelated query points
    with torch.no_grad():
        full = model.predict_acceleration(history, types, bounds, sample_index=samples)
        alone = model.predict_acceleration(history, types, bounds, history[:, [s]], query_types=types[[s]],
                                           sample_index=samples)
        mixed_history = torch.cat([others[:, :20], history[:, [s]], others[:, 20:]], dim=1)
        mixed_types = torch.cat([torch.zeros(20, dtype=torch.int64), types[[s]], torch.ones(30, dtype=torch.int64)])
        mixed = model.predict_acceleration(history, types, bounds, mixed_history, query_types=mixed_types,
                                           sample_index=samples)
        fewer = model.predict_acceleration(history, types, bounds, others[:, 40:], query_types=mixed_types[41:],
                                           sample_index=samples)
    assert full.shape == (200, 2) and alone.shape == (1, 2) and mixed.shape == (51, 2)
    assert torch.allclose(alone[0], full[s], atol=1e-12) and torch.allclose(mixed[20], full[s], atol=1e-12)
    # each query's output depends on itself and the samples only, not on the other queries
    assert torch.allclose(mixed[41:], fewer, atol=1e-12)
    # the samples are the same without sample_index (eval mode: seeded sampling); without query_types each query
    # takes its nearest sample's type
    with torch.no_grad():
        ones = torch.ones(50, dtype=torch.int64)
        again = model.predict_acceleration(history, types, bounds, others, query_types=ones)
        untyped = model.predict_acceleration(history, types, bounds, others)
    assert torch.allclose(again[40:], fewer, atol=1e-12) and untyped.shape == (50, 2)
    # evaluating the queries in chunks changes nothing
    model.query_chunk = 7
    with torch.no_grad():
        chunked = model.predict_acceleration(history, types, bounds, sample_index=samples)
    assert torch.allclose(chunked, full, atol=1e-12)


@pytest.mark.parametrize("dim", [2, 3])
def test_translation_invariance_and_shapes(dim, random_history):
    model = _model(dim, num_samples=0.25)
    history, types = random_history(120, dim), torch.arange(120) % 3
    bounds = torch.tensor([[-0.1, 1.1]] * dim, dtype=torch.float64)
    shift = torch.tensor([3.7, -12.25, 0.5][:dim], dtype=torch.float64)
    queries = random_history(17, dim, seed=5)
    with torch.no_grad():
        acc = model.predict_acceleration(history, types, bounds, queries)
        moved = model.predict_acceleration(history + shift, types, bounds + shift[:, None], queries + shift)
        everyone = model.predict_acceleration(history, types, bounds)
        nxt = model.step(history, types, bounds)
    assert acc.shape == (17, dim) and acc.dtype == torch.float64 and everyone.shape == (120, dim)
    assert torch.allclose(acc, moved, atol=1e-8)
    assert torch.allclose(nxt, 2 * history[-1] - history[-2] + everyone)
    # the sparse graph's radius grows as the D-th root of the thinning
    assert model.sparse_radius(2000, 250) == pytest.approx(0.1 * 8 ** (1 / dim))
    assert GIOROM(dim, sampling=SamplingSettings(sparse_radius=0.3)).sparse_radius(2000, 10) == 0.3


def test_batched_items_equal_separate_ones(random_history):
    model = _model(num_samples=0.3)
    a, b = random_history(40, 2, seed=1), random_history(30, 2, seed=2) + 5.0
    ta, tb = torch.zeros(40, dtype=torch.int64), torch.ones(30, dtype=torch.int64)
    ba = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    sa, sb = model.sample(a[-1]), model.sample(b[-1])
    batch = torch.tensor([0] * 40 + [1] * 30)
    with torch.no_grad():
        joint = model.predict_acceleration(torch.cat([a, b], 1), torch.cat([ta, tb]), torch.stack([ba, ba + 5.0]),
                                           batch=batch, sample_index=torch.cat([sa, sb + 40]))
        sep_a = model.predict_acceleration(a, ta, ba, sample_index=sa)
        sep_b = model.predict_acceleration(b, tb, ba + 5.0, sample_index=sb)
        # queries of one item only see that item's samples, even where the items overlap in space
        overlap = model.predict_acceleration(torch.cat([a, a], 1), torch.cat([ta, ta]), torch.stack([ba, ba]),
                                             batch=torch.tensor([0] * 40 + [1] * 40),
                                             sample_index=torch.cat([sa, sa + 40]))
    # one sparse radius for the batch (from the total counts): equal here since both items keep 30%
    assert torch.allclose(joint[:40], sep_a, atol=1e-10) and torch.allclose(joint[40:], sep_b, atol=1e-10)
    assert torch.allclose(overlap[:40], overlap[40:], atol=1e-12)
    assert model.sample(torch.cat([a, b], 1)[-1], batch).shape == (12 + 9,)


def _dataset(tmp_path, side: int = 6):
    return write_analytic_dataset(tmp_path / "springs", "springs", {"train": 3, "valid": 1, "test": 1}, steps=30,
                                  side=side)


def _cycle(loader):
    while True:
        yield from loader


def test_short_training_lowers_the_loss_and_beats_constant_velocity(tmp_path):
    torch.manual_seed(0)
    dm = SimulationDataModule(str(_dataset(tmp_path)), batch_size=4, noise_std=1e-5)
    dm.setup("fit")
    module = GIOROMModule(dm.dim, NetworkSettings(latent=32, steps=2), SamplingSettings(num_samples=0.5),
                          QuerySettings(neighbors=4, latent=32), train_queries=0.5,
                          optim=OptimSettings(lr=3e-3, lr_final=3e-3), radius=dm.radius, statistics=dm.statistics)
    clean = SimulationDataModule(str(dm.path), noise_std=0.0)
    clean.setup("fit")
    fixed = collate_windows([clean.train_set[i] for i in range(0, len(clean.train_set), 3)])
    module.eval()
    with torch.no_grad():
        before = module.one_step_loss(fixed).item()
    module.train()
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    for _, batch in zip(range(150), _cycle(dm.train_dataloader())):
        loss = module.one_step_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    with torch.no_grad():
        after = module.one_step_loss(fixed).item()
        dm.setup("test")
        pred, baseline, true = module.rollout_trajectory(dm.test_set[0], 5)
    assert after < 0.5 * before, (before, after)
    # on a held-out trajectory the trained model's first steps are closer to the truth than constant velocity's
    ours, theirs = rollout_metrics(pred, true), rollout_metrics(baseline, true)
    # (untrained, the model is within 10% of constant velocity here; after 150 steps about 30x and 10x better)
    assert ours["mse_1"] < 0.5 * theirs["mse_1"] and ours["mse_5"] < 0.5 * theirs["mse_5"], (ours, theirs)


def test_fit_rolls_out_what_the_model_steps_give(tmp_path):
    dm = SimulationDataModule(str(_dataset(tmp_path)), batch_size=2, max_train_windows=8)
    module = GIOROMModule(dm.dim, NetworkSettings(latent=16, steps=1), SamplingSettings(num_samples=12),
                          QuerySettings(latent=8), evaluation=EvaluationSettings(val_rollout_steps=10),
                          radius=dm.radius, statistics=dm.statistics)
    trainer = pl.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(module, dm)
    metrics = trainer.callback_metrics
    for key in ("val/loss", "val/mse_1", "val/mse_5", "val/mse_full", "val/chamfer", "val/ekin_error",
                "val/baseline_mse_5", "val/rollout_failed"):
        assert key in metrics, key
    assert metrics["val/rollout_failed"] == 0.0
    (out,) = trainer.predict(module, dm)
    pred = out["pred"]
    assert pred.shape == out["true"].shape == (30 - HISTORY, 36, 2)
    # the rollout is the model's own steps fed back, each clamped into the box: recompute it step by step
    traj = dm.test_set[0]
    window, types, bounds = traj["positions"][:HISTORY], traj["particle_types"], traj["bounds"]
    module.eval()
    with torch.no_grad():
        for t in range(pred.shape[0]):
            nxt = module.model.step(window, types, bounds).clamp(bounds[:, 0], bounds[:, 1])
            assert torch.equal(pred[t], nxt), t
            window = torch.cat([window[1:], nxt[None]])
    assert torch.equal(out["true"], traj["positions"][HISTORY:])
    # deterministic sampling in eval mode: the same rollout twice
    with torch.no_grad():
        again, _, _ = module.rollout_trajectory(traj, None)
    assert torch.equal(again, pred)
    state = module.state_dict()
    assert state["model.radius"].item() == dm.radius
    assert torch.equal(state["model.normalizer.acc_std"], dm.normalizer().acc_std)


@pytest.mark.parametrize("name", ["giorom_elastic_tiny_cpu", "giorom_sand_tiny_cpu"])
def test_tiny_configs_parse(name):
    from geo3d.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(REPO / "configs" / "simulation" / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code == 0
