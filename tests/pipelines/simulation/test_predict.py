"""``geo3d predict`` for simulation: the RolloutWriter writes one readable rollout file per test trajectory, holding
the input frames, the model's rollout, the ground truth and the baseline. (The demo stage is tested in
``test_demo.py``.)"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from geo3d.io.rollout import read_rollout
from pipelines.simulation.data import SimulationDataModule, write_analytic_dataset
from pipelines.simulation.features import HISTORY
from pipelines.simulation.giorom import QuerySettings, SamplingSettings
from pipelines.simulation.gns import NetworkSettings
from pipelines.simulation.module import EvaluationSettings, GIOROMModule
from pipelines.simulation.predict import RolloutWriter


def test_predict_writes_rollout_files(tmp_path):
    data = write_analytic_dataset(tmp_path / "springs", "springs", {"train": 2, "valid": 1, "test": 2}, steps=20,
                                  side=5)
    dm = SimulationDataModule(str(data), batch_size=2, max_train_windows=4)
    module = GIOROMModule(dm.dim, NetworkSettings(latent=16, steps=1), SamplingSettings(num_samples=10),
                          QuerySettings(latent=8), evaluation=EvaluationSettings(val_rollout_steps=5),
                          radius=dm.radius, statistics=dm.statistics)
    writer = RolloutWriter(str(tmp_path / "rollouts"))
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu", callbacks=[writer],
                         limit_val_batches=0)
    trainer.fit(module, dm)
    outputs = trainer.predict(module, dm)
    dm.setup("test")
    for i, out in enumerate(outputs):
        r = read_rollout(tmp_path / "rollouts" / f"rollout_{i:05d}.h5")
        truth = dm.test_set[i]["positions"]
        assert r.predicted.shape == r.ground_truth.shape == r.baseline.shape == truth.shape
        assert r.history == HISTORY and r.model == "GIOROM" and r.dt == dm.test_set.trajectories[i].dt
        assert torch.equal(r.predicted[:HISTORY], truth[:HISTORY]) and torch.equal(r.ground_truth, truth)
        assert torch.equal(r.predicted[HISTORY:], out["pred"]) and torch.equal(r.baseline[HISTORY:], out["baseline"])
        assert torch.equal(r.bounds, dm.test_set[i]["bounds"].float())

