"""Segment reductions against a per-segment Python loop (values and gradients)."""

from __future__ import annotations

import pytest
import torch

from ops.scatter import scatter_max, scatter_mean, scatter_sum


def _loop(src: torch.Tensor, index: torch.Tensor, dim_size: int, how: str):
    """Reference: reduce each segment with a plain loop; empty segments give 0 / -1."""
    values, argmax = [], []
    for j in range(dim_size):
        rows = [i for i in range(src.shape[0]) if int(index[i]) == j]
        if not rows:
            values.append(src.new_zeros(src.shape[1:]))
            argmax.append(torch.full(src.shape[1:], -1, dtype=torch.int64))
            continue
        seg = torch.stack([src[i] for i in rows])
        if how == "sum":
            values.append(seg.sum(0))
        elif how == "mean":
            values.append(seg.sum(0) / len(rows))
        else:
            # torch.max over dim 0 returns the first maximum on ties
            v, a = seg.max(0)
            values.append(v)
            argmax.append(torch.tensor(rows)[a])
    return torch.stack(values), (torch.stack(argmax) if argmax else None)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(40, 3, 2, generator=g, dtype=torch.float64)
    index = torch.randint(0, 9, (40,), generator=g)
    index[index == 4] = 5  # segment 4 is empty
    return src, index, 10  # segment 9 is empty too


@pytest.mark.parametrize("how", ["sum", "mean", "max"])
def test_matches_loop_values_and_gradients(data, how):
    src, index, dim_size = data
    ours_src = src.clone().requires_grad_(True)
    ref_src = src.clone().requires_grad_(True)
    fn = {"sum": scatter_sum, "mean": scatter_mean, "max": scatter_max}[how]
    out = fn(ours_src, index, dim_size)
    ours, argmax = out if how == "max" else (out, None)
    ref, ref_argmax = _loop(ref_src, index, dim_size, how)
    assert ours.shape == (dim_size, 3, 2)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    if how == "max":
        assert torch.equal(argmax, ref_argmax)
        assert (argmax[4] == -1).all() and (argmax[9] == -1).all()
    weight = torch.randn(ours.shape, dtype=torch.float64)
    (ours * weight).sum().backward()
    (ref * weight).sum().backward()
    torch.testing.assert_close(ours_src.grad, ref_src.grad, rtol=0, atol=1e-12)


def test_hand_computed():
    src = torch.tensor([1.0, 2.0, 4.0, -3.0])
    index = torch.tensor([0, 2, 0, 2])
    assert scatter_sum(src, index, 3).tolist() == [5.0, 0.0, -1.0]
    assert scatter_mean(src, index, 3).tolist() == [2.5, 0.0, -0.5]
    values, argmax = scatter_max(src, index, 3)
    assert values.tolist() == [4.0, 0.0, 2.0]
    assert argmax.tolist() == [2, -1, 1]


def test_max_ties_pick_first_row_and_route_gradient_there():
    src = torch.tensor([5.0, 5.0, 1.0], requires_grad=True)
    values, argmax = scatter_max(src, torch.tensor([0, 0, 0]), 1)
    assert argmax.tolist() == [0]
    values.sum().backward()
    assert src.grad.tolist() == [1.0, 0.0, 0.0]


def test_empty_input():
    src = torch.zeros(0, 4)
    index = torch.zeros(0, dtype=torch.int64)
    assert scatter_sum(src, index, 2).shape == (2, 4)
    values, argmax = scatter_max(src, index, 2)
    assert (values == 0).all() and (argmax == -1).all()


@pytest.mark.parametrize(
    "index, match",
    [
        (torch.tensor([0, 3]), r"in \[0, 3\)"),
        (torch.tensor([0, -1]), r"in \[0, 3\)"),
        (torch.tensor([0, 1], dtype=torch.int32), "int64"),
        (torch.tensor([0, 1, 2]), r"\(N,\)"),
    ],
)
def test_bad_index_raises_value_error(index, match):
    with pytest.raises(ValueError, match=match):
        scatter_sum(torch.ones(2, 3), index, 3)
