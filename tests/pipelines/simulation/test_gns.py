"""GNS layers and model: message passing against a dense loop (float64), translation invariance, batching, the
kinematic mask, a short training run that lowers the one-step loss, and the tiny config through `geo3d fit`."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from geo3d.errors import InputError
from ops.neighbors import radius_graph
from pipelines.simulation.data import SimulationDataModule, collate_windows, write_analytic_dataset
from pipelines.simulation.features import HISTORY, Normalizer
from pipelines.simulation.gns import GNS, NetworkSettings
from pipelines.simulation.layers import MLP, EncodeProcessDecode, InteractionNetwork, Processor
from pipelines.simulation.module import EvaluationSettings, GNSModule, OptimSettings

REPO = Path(__file__).resolve().parents[3]


def test_mlp_shapes():
    mlp = MLP(5, 16, 3, layers=2)
    assert sum(isinstance(m, torch.nn.Linear) for m in mlp) == 3 and isinstance(mlp[-1], torch.nn.LayerNorm)
    assert not isinstance(MLP(5, 16, 3, layer_norm=False)[-1], torch.nn.LayerNorm)
    assert mlp(torch.zeros(7, 5)).shape == (7, 3)


def test_interaction_network_against_dense_loop():
    torch.manual_seed(0)
    net = InteractionNetwork(node_dim=4, edge_dim=3, hidden=8).double()
    nodes = torch.randn(6, 4, dtype=torch.float64)
    edge_index = torch.tensor([[0, 1, 2, 5, 5, 3, 0], [1, 0, 1, 1, 2, 3, 4]])
    edges = torch.randn(7, 3, dtype=torch.float64)
    new_nodes, new_edges = net(nodes, edge_index, edges)

    ref_nodes, ref_edges = torch.empty_like(nodes), torch.empty_like(edges)
    messages = []
    for e in range(edge_index.shape[1]):
        s, r = int(edge_index[0, e]), int(edge_index[1, e])
        m = net.edge_mlp(torch.cat([edges[e], nodes[s], nodes[r]]))
        messages.append(m)
        ref_edges[e] = edges[e] + m
    for i in range(nodes.shape[0]):
        total = torch.zeros(3, dtype=torch.float64)
        for e in range(edge_index.shape[1]):
            if int(edge_index[1, e]) == i:
                total = total + messages[e]
        ref_nodes[i] = nodes[i] + net.node_mlp(torch.cat([nodes[i], total]))
    assert torch.allclose(new_nodes, ref_nodes, atol=1e-6) and torch.allclose(new_edges, ref_edges, atol=1e-6)
    assert torch.allclose(new_nodes, ref_nodes, atol=1e-12)


def test_processor_and_encode_process_decode():
    proc = Processor(latent=8, steps=3)
    assert len(proc.blocks) == 3 and proc.blocks[0].edge_mlp[0].weight is not proc.blocks[1].edge_mlp[0].weight
    epd = EncodeProcessDecode(node_in=5, edge_in=3, latent=8, steps=2, out=2)
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])
    out = epd(torch.randn(4, 5), edge_index, torch.randn(3, 3))
    assert out.shape == (4, 2)
    nodes, edges = epd.process(torch.randn(4, 8), edge_index, torch.randn(3, 8))
    assert nodes.shape == (4, 8) and edges.shape == (3, 8)
    # no edges: nodes still update (with a zero aggregate)
    assert epd(torch.randn(4, 5), torch.zeros(2, 0, dtype=torch.int64), torch.zeros(0, 3)).shape == (4, 2)


def _model(dim: int = 2) -> GNS:
    torch.manual_seed(0)
    model = GNS(dim, NetworkSettings(latent=16, steps=2), radius=0.3).double()
    stats = Normalizer([0.0] * dim, [0.01] * dim, [0.0] * dim, [0.001] * dim)
    model.set_statistics(stats, 0.3)
    return model


@pytest.mark.parametrize("dim", [2, 3])
def test_gns_is_translation_invariant(dim, random_history):
    model = _model(dim)
    history = random_history(30, dim)
    types = torch.arange(30) % 3
    bounds = torch.tensor([[-0.1, 1.1]] * dim, dtype=torch.float64)
    acc = model.predict_acceleration(history, types, bounds)
    assert acc.shape == (30, dim) and acc.dtype == torch.float64
    shift = torch.tensor([3.7, -12.25, 0.5][:dim], dtype=torch.float64)
    moved = model.predict_acceleration(history + shift, types, bounds + shift[:, None])
    assert torch.allclose(acc, moved, atol=1e-8)
    assert model.graph(history, types, bounds)[1].shape[1] > 30  # neighbours beyond the self loops
    nxt = model.step(history, types, bounds)
    assert torch.allclose(nxt, 2 * history[-1] - history[-2] + acc)


def test_batched_graphs_equal_separate_ones(random_history):
    model = _model()
    a, b = random_history(10, 2, seed=1), random_history(7, 2, seed=2) + 5.0  # far apart: no cross edges anyway
    ta, tb = torch.zeros(10, dtype=torch.int64), torch.ones(7, dtype=torch.int64)
    ba = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    bb = ba + 5.0
    batch = torch.tensor([0] * 10 + [1] * 7)
    joint = model.predict_acceleration(torch.cat([a, b], 1), torch.cat([ta, tb]), torch.stack([ba, bb]), batch)
    assert torch.allclose(joint[:10], model.predict_acceleration(a, ta, ba), atol=1e-12)
    assert torch.allclose(joint[10:], model.predict_acceleration(b, tb, bb), atol=1e-12)
    # items in the same place do not see each other
    same = model.predict_acceleration(torch.cat([a, a], 1), torch.cat([ta, ta]), torch.stack([ba, ba]),
                                      torch.tensor([0] * 10 + [1] * 10))
    assert torch.allclose(same[10:], same[:10], atol=1e-12)
    edges = radius_graph(torch.cat([a, a], 1)[-1], 0.3, batch=torch.tensor([0] * 10 + [1] * 10))
    assert ((edges < 10).sum(0) != 1).all()  # never one end in each item


def _dataset(tmp_path):
    return write_analytic_dataset(tmp_path / "springs", "springs", {"train": 3, "valid": 1, "test": 1}, steps=30)


def test_kinematic_particles_are_masked_from_the_loss(tmp_path):
    module = GNSModule(network=NetworkSettings(latent=16, steps=1))
    dm = SimulationDataModule(str(_dataset(tmp_path)), noise_std=0.0)
    dm.setup("fit")
    batch = collate_windows([dm.train_set[0], dm.train_set[5]])
    batch["particle_types"][:4] = 3
    loss = module.one_step_loss(batch)
    batch["target_acceleration"][:4] += 100.0
    assert module.one_step_loss(batch) == loss


def test_short_training_lowers_the_one_step_loss(tmp_path):
    torch.manual_seed(0)
    # noise well below the accelerations (~2e-4 m/step^2 here), so that 150 steps show learning
    dm = SimulationDataModule(str(_dataset(tmp_path)), batch_size=4, noise_std=1e-5)
    dm.setup("fit")
    module = GNSModule(dm.dim, NetworkSettings(latent=32, steps=2), OptimSettings(lr=3e-3, lr_final=3e-3),
                       radius=dm.radius, statistics=dm.statistics)
    clean = SimulationDataModule(str(dm.path), noise_std=0.0)
    clean.setup("fit")
    fixed = collate_windows([clean.train_set[i] for i in range(0, len(clean.train_set), 3)])
    with torch.no_grad():
        before = module.one_step_loss(fixed).item()
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    loader = dm.train_dataloader()
    for _, batch in zip(range(150), _cycle(loader)):
        loss = module.one_step_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = module.one_step_loss(fixed).item()
    assert after < 0.5 * before, (before, after)


def _cycle(loader):
    while True:
        yield from loader


def test_fit_validates_with_rollout_metrics(tmp_path):
    dm = SimulationDataModule(str(_dataset(tmp_path)), batch_size=2, max_train_windows=8)
    module = GNSModule(dm.dim, NetworkSettings(latent=16, steps=1), OptimSettings(lr=1e-3),
                       EvaluationSettings(val_rollout_steps=10), radius=dm.radius, statistics=dm.statistics)
    trainer = pl.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(module, dm)
    metrics = trainer.callback_metrics
    for key in ("val/loss", "val/mse_1", "val/mse_5", "val/mse_full", "val/chamfer", "val/ekin_error",
                "val/baseline_mse_5", "val/rollout_failed"):
        assert key in metrics, key
    assert "val/mse_20" not in metrics  # 10 rollout steps only
    # the data's radius and statistics (noise included) are the model's buffers and hyper-parameters
    assert module.model.radius.item() == 0.15 and module.hparams.radius == 0.15
    assert torch.equal(module.model.normalizer.vel_std, dm.normalizer().vel_std)
    assert module.hparams.statistics.vel_std == tuple(dm.normalizer().vel_std.tolist())
    trainer.test(module, dm)
    assert "test/mse_full" in trainer.callback_metrics
    (out,) = trainer.predict(module, dm)
    assert out["pred"].shape == out["true"].shape == (30 - HISTORY, 16, 2)


def test_tiny_config_parses():
    config = REPO / "configs" / "simulation" / "gns_elastic_tiny_cpu.yaml"
    from geo3d.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0


def test_failed_rollouts_log_inf_and_bad_inputs_raise(tmp_path, random_history):
    dm = SimulationDataModule(str(_dataset(tmp_path)))
    module = GNSModule(network=NetworkSettings(latent=8, steps=1), evaluation=EvaluationSettings(val_rollout_steps=7))
    module.model.step = lambda history, *args: torch.full_like(history[-1], float("nan"))
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.validate(module, dm)
    metrics = trainer.callback_metrics
    assert metrics["val/rollout_failed"] == 1.0 and metrics["val/mse_full"] == float("inf")
    assert metrics["val/mse_5"] == float("inf") and "val/mse_20" not in metrics
    with pytest.raises(ValueError, match="GNSModule: statistics have 2 axes but dim is 3"):
        GNSModule(dim=3, network=NetworkSettings(latent=8, steps=1), statistics=dm.statistics)
    model = _model()
    with pytest.raises(InputError, match=r"particle types must lie in \[0, 9\)"):
        model.predict_acceleration(random_history(4, 2), torch.tensor([0, 1, 9, 2]), torch.tensor([[0.0, 1.0]] * 2))
