"""The budgeted one-cycle schedule: torch's OneCycleLR curve by steps, and annealed inside max_time."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer

from geo3d.schedule import ANNEAL_SHARE, DEFAULT_STEPS, budget_one_cycle, one_cycle_factor, trainer_progress


def test_one_cycle_factor_is_torchs_one_cycle():
    """By steps, the factor times the peak is torch's OneCycleLR, step for step: with 1001 steps torch warms up
    until step pct_start * 1001 - 1 = 50, i.e. progress 50 / 1000 = 0.05 of steps 0..1000."""
    peak, total = 2e-3, 1001
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=peak)
    reference = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peak, total_steps=total, pct_start=51 / 1001,
                                                    anneal_strategy="cos", cycle_momentum=False)
    for step in range(total):
        expected = reference.get_last_lr()[0]
        assert peak * one_cycle_factor(step / (total - 1), pct_start=0.05) == pytest.approx(expected, rel=1e-12)
        opt.step()
        reference.step()


def test_one_cycle_factor_ends_and_clamps():
    assert one_cycle_factor(0.0) == pytest.approx(1 / 25)
    assert one_cycle_factor(0.05) == pytest.approx(1.0)
    assert one_cycle_factor(1.0) == pytest.approx(1 / 25e4)
    assert one_cycle_factor(1.7) == one_cycle_factor(1.0) and one_cycle_factor(-1.0) == one_cycle_factor(0.0)


class _FakeTimer(Timer):
    def __init__(self, elapsed: float, remaining: float):
        super().__init__(duration={"seconds": elapsed + remaining})
        self.elapsed, self.remaining = elapsed, remaining

    def time_elapsed(self, stage="train") -> float:
        return self.elapsed

    def time_remaining(self, stage="train") -> float:
        return self.remaining


class _FakeTrainer:
    def __init__(self, max_steps: int, callbacks: list):
        self.max_steps, self.callbacks = max_steps, callbacks


def test_trainer_progress_takes_what_runs_out_first():
    assert trainer_progress(_FakeTrainer(400, []), 100) == pytest.approx(0.25)
    assert trainer_progress(_FakeTrainer(-1, []), 100) == pytest.approx(100 / DEFAULT_STEPS)
    timer = _FakeTimer(elapsed=600.0, remaining=600.0)  # half the time gone
    assert trainer_progress(_FakeTrainer(400, [timer]), 100) == pytest.approx(0.5 / ANNEAL_SHARE)
    assert trainer_progress(_FakeTrainer(400, [timer]), 300) == pytest.approx(0.75)
    assert trainer_progress(_FakeTrainer(-1, [timer]), 10) == pytest.approx(0.5 / ANNEAL_SHARE)
    assert trainer_progress(_FakeTrainer(400, [_FakeTimer(1190.0, 10.0)]), 10) == 1.0


class _Slow(pl.LightningModule):
    """One parameter, 40 ms per step, the budgeted schedule; records the learning rate of every step."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        import time
        time.sleep(0.04)
        self.lrs.append(self.optimizers().param_groups[0]["lr"])
        return (self.w * batch[0]).sum() ** 2

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(10_000, 1)), batch_size=1)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        sched = budget_one_cycle(opt, lambda step: trainer_progress(self.trainer, step))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_a_run_cut_by_max_time_still_anneals(tmp_path):
    """max_steps far beyond what 3 s allow: the learning rate peaks early and is near its floor at the cut."""
    module = _Slow()
    trainer = pl.Trainer(max_steps=100_000, max_time={"seconds": 3}, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module)
    lrs = module.lrs
    assert 10 < len(lrs) < 100_000
    assert max(lrs) > 0.09  # the peak, 0.1, reached early
    assert lrs.index(max(lrs)) < len(lrs) // 4
    assert lrs[-1] < 0.1 * one_cycle_factor(0.85)  # well into the annealed end when the time ran out
