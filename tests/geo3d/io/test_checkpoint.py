"""geo3d.io.checkpoint: loading any module with one-line errors, and old flat hyper-parameters upgraded."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import pytorch_lightning as pl
import torch

from geo3d.errors import InputError
from geo3d.io.checkpoint import load_module, regroup_hparams


@dataclass(frozen=True)
class Widths:
    """Attributes: hidden: hidden width; out: output width."""

    hidden: int = 4
    out: int = 1


@dataclass(frozen=True)
class Optim:
    """Attributes: lr: learning rate."""

    lr: float = 1e-3


torch.serialization.add_safe_globals([Widths, Optim])


class TinyModule(pl.LightningModule):
    """The grouped signature (what a module looks like after the change)."""

    def __init__(self, in_features: int = 3, widths: Widths = Widths(), optim: Optim = Optim()):
        super().__init__()
        self.save_hyperparameters()
        self.widths, self.optim = widths, optim
        self.net = torch.nn.Sequential(torch.nn.Linear(in_features, widths.hidden), torch.nn.Linear(widths.hidden,
                                                                                                     widths.out))

    @staticmethod
    def upgrade_hparams(hparams: dict) -> dict:
        return regroup_hparams(hparams, {"widths": Widths, "optim": Optim}, renames={"hidden_width": ("widths",
                                                                                                       "hidden")})


def _old_flat_checkpoint(path, *, cli: bool) -> dict:
    """A checkpoint as the flat signature wrote it: ``in_features, hidden_width, out, lr`` (hidden renamed)."""
    model = TinyModule(3, Widths(hidden=7, out=2), Optim(lr=0.5))
    hparams = {"in_features": 3, "hidden_width": 7, "out": 2, "lr": 0.5}
    if cli:  # what LightningCLI's save_hyperparameters adds
        hparams = {"_class_path": f"{TinyModule.__module__}.{TinyModule.__qualname__}", **hparams,
                   "_instantiator": "pytorch_lightning.cli.instantiate_module"}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": pl.__version__}, path)
    return model.state_dict()


@pytest.mark.parametrize("cli", [False, True], ids=["python", "lightning-cli"])
def test_old_flat_checkpoints_load_into_the_groups(tmp_path, cli):
    state = _old_flat_checkpoint(tmp_path / "old.ckpt", cli=cli)
    model = load_module(tmp_path / "old.ckpt", TinyModule)
    assert model.widths == Widths(hidden=7, out=2) and model.optim == Optim(lr=0.5)
    assert not model.training
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_new_checkpoints_are_left_as_they_are(tmp_path):
    model = TinyModule(3, Widths(hidden=5), Optim(lr=0.25))
    trainer = pl.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "new.ckpt")
    loaded = load_module(tmp_path / "new.ckpt", TinyModule)
    assert loaded.widths == Widths(hidden=5) and loaded.optim == Optim(lr=0.25)
    assert regroup_hparams(dict(model.hparams), {"widths": Widths, "optim": Optim}) == dict(model.hparams)


def test_one_line_errors(tmp_path):
    with pytest.raises(InputError, match=r"missing\.ckpt: checkpoint not found"):
        load_module(tmp_path / "missing.ckpt", TinyModule)
    other = TinyModule(3, Widths(hidden=9))
    torch.save({"state_dict": other.state_dict(), "hyper_parameters": {"in_features": 4},
                "pytorch-lightning_version": pl.__version__}, tmp_path / "other.ckpt")
    with pytest.raises(InputError, match=r"other\.ckpt: not a TinyModule checkpoint \(RuntimeError: Error"):
        load_module(tmp_path / "other.ckpt", TinyModule)


def test_regroup_refuses_an_ambiguous_field():
    @dataclass(frozen=True)
    class Other:
        lr: float = 0.1

    with pytest.raises(ValueError, match="'lr' is in groups 'optim' and 'other'"):
        regroup_hparams({"lr": 1.0}, {"optim": Optim, "other": Other})
    assert regroup_hparams({"lr": 1.0}, {"optim": Optim, "other": Other}, renames={"lr": ("other", "lr")}) == {
        "other": Other(lr=1.0)}
