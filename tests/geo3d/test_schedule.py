"""The budgeted one-cycle schedule: torch's OneCycleLR curve by steps, and annealed inside max_time."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer

from geo3d.schedule import (
    ANNEAL_SHARE,
    DEFAULT_STEPS,
    BudgetOneCycleLR,
    budget_one_cycle,
    one_cycle_factor,
    trainer_progress,
)


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


def _adamw() -> torch.optim.AdamW:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3, betas=(0.95, 0.99))


ONE_CYCLE = {"max_lr": 3e-3, "total_steps": 300, "pct_start": 0.4, "div_factor": 10.0, "base_momentum": 0.85,
             "max_momentum": 0.95}


def test_budget_one_cycle_lr_is_torchs_while_the_steps_lead():
    """With no time used it is OneCycleLR exactly, learning rate and Adam's beta1, step for step."""
    opt, ref_opt = _adamw(), _adamw()
    ours = BudgetOneCycleLR(opt, lambda: 0.0, **ONE_CYCLE)
    reference = torch.optim.lr_scheduler.OneCycleLR(ref_opt, **ONE_CYCLE)
    for _ in range(ONE_CYCLE["total_steps"] - 1):
        assert opt.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]
        assert opt.param_groups[0]["betas"] == ref_opt.param_groups[0]["betas"]
        opt.step(), ref_opt.step()
        ours.step(), reference.step()


def test_budget_one_cycle_lr_jumps_to_the_time_used():
    """At 60 % of the time after 10 steps it is where OneCycleLR is at 60 % of its steps (step 179 of 0..299)."""
    used = {"share": 0.0}
    opt, ref_opt = _adamw(), _adamw()
    ours = BudgetOneCycleLR(opt, lambda: used["share"], **ONE_CYCLE)
    reference = torch.optim.lr_scheduler.OneCycleLR(ref_opt, **ONE_CYCLE)
    for _ in range(10):
        opt.step()
        ours.step()
    used["share"] = 0.6
    opt.step()
    ours.step()
    for _ in range(round(0.6 * 299)):
        ref_opt.step()
        reference.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-12)
    assert opt.param_groups[0]["betas"] == pytest.approx(ref_opt.param_groups[0]["betas"], rel=1e-12)
    used["share"] = 1.0
    opt.step()
    ours.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-3 / 10 / 1e4, rel=1e-9)  # the end of the cycle


def test_budget_one_cycle_lr_state_saves_and_restores(tmp_path):
    """Its state goes into a checkpoint (the time closure is left out) and a restored scheduler goes on alike."""
    opt = _adamw()
    ours = BudgetOneCycleLR(opt, lambda: 0.0, **ONE_CYCLE)
    for _ in range(20):
        opt.step()
        ours.step()
    torch.save({"scheduler": ours.state_dict()}, tmp_path / "state.pt")
    restored_opt = _adamw()
    restored_opt.load_state_dict(opt.state_dict())
    restored = BudgetOneCycleLR(restored_opt, lambda: 0.0, **ONE_CYCLE)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False)["scheduler"])
    opt.step(), restored_opt.step()
    ours.step(), restored.step()
    assert restored_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert restored.time_progress() == 0.0
