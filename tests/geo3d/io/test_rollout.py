"""Rollout files: a round trip keeps every array bit for bit; malformed files give one-line errors naming the field."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from geo3d.errors import InputError
from geo3d.io.rollout import Rollout, is_rollout_file, read_rollout, write_rollout


def _rollout(t: int = 12, n: int = 50, d: int = 2, seed: int = 0) -> Rollout:
    g = torch.Generator().manual_seed(seed)
    truth = torch.rand(t, n, d, generator=g)
    return Rollout(truth + 0.01 * torch.randn(t, n, d, generator=g), torch.randint(0, 9, (n,), generator=g),
                   torch.tensor([[0.0, 1.0]] * d), 0.0025, 6, truth, truth * 0.5, "GIOROM")


def test_round_trip_keeps_everything(tmp_path):
    original = _rollout(d=3)
    path = write_rollout(tmp_path / "sub" / "r.h5", original)
    assert is_rollout_file(path)
    back = read_rollout(path)
    for name in ("predicted", "ground_truth", "baseline", "bounds"):
        assert torch.equal(getattr(back, name), getattr(original, name).float()), name
    assert torch.equal(back.particle_types, original.particle_types)
    assert (back.dt, back.history, back.model) == (0.0025, 6, "GIOROM")
    only = Rollout(original.predicted, original.particle_types, original.bounds, 0.01, 0)
    back = read_rollout(write_rollout(tmp_path / "p.h5", only))
    assert back.ground_truth is None and back.baseline is None and back.model == ""


def test_writer_rejects_inconsistent_rollouts(tmp_path):
    r = _rollout()
    for bad in (Rollout(r.predicted, r.particle_types, r.bounds, 0.01, 0, r.ground_truth[:-1]),
                Rollout(r.predicted, r.particle_types[:-1], r.bounds, 0.01, 0),
                Rollout(r.predicted, r.particle_types, r.bounds, 0.0, 0),
                Rollout(r.predicted, r.particle_types, r.bounds, 0.01, 13)):
        with pytest.raises(ValueError):
            write_rollout(tmp_path / "bad.h5", bad)
    assert not (tmp_path / "bad.h5").exists()


def _corrupt(path, edit) -> None:
    with h5py.File(path, "r+") as f:
        edit(f)


@pytest.mark.parametrize("edit, words", [
    (lambda f: f.attrs.__setitem__("format", "other"), "not a rollout file"),
    (lambda f: f.__delitem__("predicted"), "'predicted'"),
    (lambda f: (f.__delitem__("ground_truth"), f.create_dataset("ground_truth", data=np.zeros((3, 50, 2)))),
     "'ground_truth' has shape (3, 50, 2), expected (12, 50, 2)"),
    (lambda f: f["predicted"].__setitem__((5, 3, 0), np.nan), "'predicted' holds NaN"),
    (lambda f: (f.__delitem__("bounds"), f.create_dataset("bounds", data=np.zeros((3, 2)))), "'bounds' has shape"),
    (lambda f: f.attrs.__setitem__("dt", -1.0), "'dt' must be positive"),
    (lambda f: f.attrs.__delitem__("history"), "missing attribute 'history'"),
    (lambda f: f.attrs.__setitem__("history", 40), "'history' must be in [0, 12]"),
])
def test_malformed_files_name_the_file_and_field(tmp_path, edit, words):
    path = write_rollout(tmp_path / "r.h5", _rollout())
    _corrupt(path, edit)
    with pytest.raises(InputError) as info:
        read_rollout(path)
    message = str(info.value)
    assert str(path) in message and words in message and "\n" not in message


def test_not_hdf5_or_missing(tmp_path):
    text = tmp_path / "x.h5"
    text.write_text("not hdf5")
    assert not is_rollout_file(text)
    for path in (text, tmp_path / "missing.h5"):
        with pytest.raises(InputError, match=str(path)):
            read_rollout(path)
