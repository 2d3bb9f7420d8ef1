"""The step-based one-cycle schedule: torch's OneCycleLR curve by steps, the same on any machine."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from geo3d.schedule import DEFAULT_STEPS, one_cycle_factor, step_one_cycle, step_progress


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


def test_step_progress():
    assert step_progress(400, 100) == pytest.approx(0.25)
    assert step_progress(-1, 100) == pytest.approx(100 / DEFAULT_STEPS)
    assert step_progress(None, 100) == pytest.approx(100 / DEFAULT_STEPS)
    assert step_progress(400, 500) == 1.0


class _Recorder(pl.LightningModule):
    """One parameter and the step schedule; records the learning rate of every step (and sleeps ``delay`` s)."""

    def __init__(self, delay: float = 0.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.delay = delay
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        import time
        time.sleep(self.delay)
        self.lrs.append(self.optimizers().param_groups[0]["lr"])
        return (self.w * batch[0]).sum() ** 2

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(1000, 1)), batch_size=1)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        sched = step_one_cycle(opt, self.trainer.max_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _fit(tmp_path, delay: float) -> list[float]:
    module = _Recorder(delay)
    trainer = pl.Trainer(max_steps=40, max_time={"minutes": 10}, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module)
    return module.lrs


def test_the_schedule_does_not_depend_on_the_machines_speed(tmp_path):
    """A slow machine (10 ms more per step) gets exactly the learning rates of a fast one: the schedule follows
    the steps, never the clock; max_time is only a guard. The run anneals to the cycle's end."""
    fast, slow = _fit(tmp_path / "fast", 0.0), _fit(tmp_path / "slow", 0.01)
    assert fast == slow and len(fast) == 40
    assert fast == [0.1 * one_cycle_factor(step / 40) for step in range(40)]
    assert fast[-1] < 0.1 * one_cycle_factor(0.95)
