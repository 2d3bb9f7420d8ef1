"""Sparse conv/pool parity with dense torch ops on the densified grid (forward and gradients)."""

from __future__ import annotations

import math

import pytest
import spconv.pytorch as spconv
import torch
from spconv.pytorch import ConvAlgo

import ops.sparse_conv as sc
from ops.reference.sparse_conv import (
    conv_output_sites,
    dense_conv,
    dense_inverse_conv,
    dense_max_pool,
    densify,
    gather_sites,
)

TOL = dict(rtol=1e-10, atol=1e-10)  # float64: spconv's CPU path supports it
SHAPES = {2: [9, 8], 3: [7, 6, 5]}
CLASSES = {
    2: (sc.SubMConv2d, sc.SparseConv2d, sc.SparseInverseConv2d, sc.SparseMaxPool2d),
    3: (sc.SubMConv3d, sc.SparseConv3d, sc.SparseInverseConv3d, sc.SparseMaxPool3d),
}


def _random_input(ndim: int, batch_size: int = 3, channels: int = 3, fraction: float = 0.3,
                  dtype=torch.float64, seed: int = 0):
    """Random unique active sites over ``batch_size`` items and their features, as (features, coords)."""
    g = torch.Generator().manual_seed(seed)
    shape = SHAPES[ndim]
    total = batch_size * math.prod(shape)
    flat = torch.randperm(total, generator=g)[: int(total * fraction)]
    coords = torch.stack(torch.unravel_index(flat, (batch_size, *shape)), 1).int()
    features = torch.randn(coords.shape[0], channels, generator=g, dtype=dtype)
    return features, coords, shape, batch_size


def _randomize(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.data = torch.randn(p.shape, generator=g, dtype=torch.float64)
    return module


def _sparse_and_dense_grads(out: spconv.SparseConvTensor, dense_out: torch.Tensor, out_shape, seed=2):
    """Backpropagate the same random linear loss through the sparse output and the dense reference."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.randn(dense_out.shape, generator=g, dtype=dense_out.dtype)
    (out.features * gather_sites(weights, out.indices)).sum().backward()
    out_mask = densify(torch.ones(out.indices.shape[0], 1, dtype=dense_out.dtype), out.indices, out_shape,
                       dense_out.shape[0])
    (dense_out * weights * out_mask).sum().backward()


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the failure only exists without CUDA")
def test_stream_shim_fixes_spconv_cpu_stream_query(monkeypatch):
    """spconv 2.3.6's CPU paths that still ask for a CUDA stream work only with the shim.

    With the default ``SPCONV_CPP_GEMM=True`` the conv/pool forward and backward skip the query on CPU;
    ``maximum_value_int_`` (voxel-count recording) and the Python GEMM fallback do not.
    """
    from spconv.pytorch import ops

    count = torch.zeros(1, dtype=torch.int32)
    ops.maximum_value_int_(count, 7)
    assert count.item() == 7
    monkeypatch.setattr(ops, "get_current_stream", ops.get_current_stream.__wrapped__)
    with pytest.raises(AssertionError, match="CUDA"):
        ops.maximum_value_int_(count, 9)


def test_stream_shim_installed_and_idempotent():
    from spconv.pytorch import cppcore, ops

    assert hasattr(ops.get_current_stream, "__wrapped__")
    assert cppcore.get_current_stream is ops.get_current_stream
    before = ops.get_current_stream
    sc._install_cpu_stream_shim()
    assert ops.get_current_stream is before
    if not torch.cuda.is_available():
        assert ops.get_current_stream() == 0
        assert cppcore.get_current_stream() == 0


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_subm_matches_dense_conv_at_input_sites(ndim, kernel_size):
    features, coords, shape, batch_size = _random_input(ndim)
    conv = _randomize(CLASSES[ndim][0](3, 4, kernel_size, bias=True))
    x = _leaf(features)
    out = conv(sc.sparse_tensor(x, coords, shape, batch_size))
    assert torch.equal(out.indices, coords)  # SubM: output sites are the input sites, same order

    xr, wr, br = _leaf(features), _leaf(conv.weight), _leaf(conv.bias)
    dense_out = dense_conv(densify(xr, coords, shape, batch_size), wr, br, padding=kernel_size // 2)
    torch.testing.assert_close(out.features, gather_sites(dense_out, coords), **TOL)
    _sparse_and_dense_grads(out, dense_out, shape)
    torch.testing.assert_close(x.grad, xr.grad, **TOL)
    torch.testing.assert_close(conv.weight.grad, wr.grad, **TOL)
    torch.testing.assert_close(conv.bias.grad, br.grad, **TOL)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize(
    "kernel_size, stride, padding", [(3, 1, 0), (3, 2, 1), (2, 2, 0), (3, 2, 0), (1, 1, 0)]
)
def test_strided_conv_matches_dense_conv(ndim, kernel_size, stride, padding):
    features, coords, shape, batch_size = _random_input(ndim, fraction=0.1)
    conv = _randomize(CLASSES[ndim][1](3, 4, kernel_size, stride=stride, padding=padding, bias=True))
    x = _leaf(features)
    out = conv(sc.sparse_tensor(x, coords, shape, batch_size))

    xr, wr, br = _leaf(features), _leaf(conv.weight), _leaf(conv.bias)
    dense_out = dense_conv(densify(xr, coords, shape, batch_size), wr, br, stride, padding)
    out_shape = list(dense_out.shape[2:])
    assert out.spatial_shape == out_shape
    # output sites: exactly those whose receptive field touches an active input
    expected = conv_output_sites(coords, shape, batch_size, kernel_size, stride, padding)
    assert sorted(map(tuple, out.indices.tolist())) == sorted(map(tuple, expected.tolist()))
    torch.testing.assert_close(out.features, gather_sites(dense_out, out.indices), **TOL)
    _sparse_and_dense_grads(out, dense_out, out_shape)
    torch.testing.assert_close(x.grad, xr.grad, **TOL)
    torch.testing.assert_close(conv.weight.grad, wr.grad, **TOL)
    torch.testing.assert_close(conv.bias.grad, br.grad, **TOL)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("down", ["conv", "pool"])
def test_inverse_conv_returns_to_input_sites(ndim, down):
    _, conv_cls, inverse_cls, pool_cls = CLASSES[ndim]
    features, coords, shape, batch_size = _random_input(ndim, fraction=0.15)
    if down == "conv":  # k3 s2 p1, 3 -> 5 channels
        kernel, padding, mid_channels = 3, 1, 5
        layer = _randomize(conv_cls(3, 5, 3, stride=2, padding=1, indice_key="down"), seed=3)
    else:  # k2 s2 max pool
        kernel, padding, mid_channels = 2, 0, 3
        layer = pool_cls(2, 2, indice_key="down")
    up = _randomize(inverse_cls(mid_channels, 2, kernel, indice_key="down", bias=True), seed=4)
    x = _leaf(features)
    mid = layer(sc.sparse_tensor(x, coords, shape, batch_size))
    out = up(mid)
    assert torch.equal(out.indices, coords) and out.spatial_shape == shape

    xr, wu, bu = _leaf(features), _leaf(up.weight), _leaf(up.bias)
    if down == "conv":
        wd = _leaf(layer.weight)
        dense_mid = dense_conv(densify(xr, coords, shape, batch_size), wd, stride=2, padding=1)
    else:
        dense_mid = dense_max_pool(densify(xr, coords, shape, batch_size, fill=-math.inf), 2, 2)
    mid_mask = densify(torch.ones(mid.indices.shape[0], 1, dtype=torch.float64), mid.indices,
                       mid.spatial_shape, batch_size)
    dense_out = dense_inverse_conv(dense_mid * mid_mask, wu, shape, stride=2, padding=padding)
    dense_out = dense_out + bu.view(1, -1, *[1] * ndim)
    torch.testing.assert_close(out.features, gather_sites(dense_out, coords), **TOL)
    _sparse_and_dense_grads(out, dense_out, shape)
    torch.testing.assert_close(x.grad, xr.grad, **TOL)
    torch.testing.assert_close(up.weight.grad, wu.grad, **TOL)
    torch.testing.assert_close(up.bias.grad, bu.grad, **TOL)
    if down == "conv":
        torch.testing.assert_close(layer.weight.grad, wd.grad, **TOL)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("kernel_size, stride", [(2, 2), (3, 2), (3, 1)])
def test_max_pool_matches_dense_pool_over_active_sites(ndim, kernel_size, stride):
    features, coords, shape, batch_size = _random_input(ndim, fraction=0.2)
    pool = CLASSES[ndim][3](kernel_size, stride)
    x = _leaf(features)
    out = pool(sc.sparse_tensor(x, coords, shape, batch_size))

    xr = _leaf(features)
    # inactive sites are never read as values: fill them with -inf
    dense_out = dense_max_pool(densify(xr, coords, shape, batch_size, fill=-math.inf), kernel_size, stride)
    out_shape = list(dense_out.shape[2:])
    assert out.spatial_shape == out_shape
    expected = conv_output_sites(coords, shape, batch_size, kernel_size, stride)
    assert sorted(map(tuple, out.indices.tolist())) == sorted(map(tuple, expected.tolist()))
    torch.testing.assert_close(out.features, gather_sites(dense_out, out.indices), **TOL)
    _sparse_and_dense_grads(out, dense_out, out_shape)
    torch.testing.assert_close(x.grad, xr.grad, **TOL)


def test_max_pool_hand_computed_starts_from_zero():
    coords = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 3, 3]], dtype=torch.int32)
    features = torch.tensor([[-1.0, 2.0], [-3.0, 1.0], [-5.0, -6.0]])
    out = sc.SparseMaxPool2d(2, 2)(sc.sparse_tensor(features, coords, [4, 4], 1))
    assert out.indices.tolist() == [[0, 0, 0], [0, 1, 1]]
    assert out.features.tolist() == [[0.0, 2.0], [0.0, 0.0]]  # max(0, active values), as spconv


def test_float32_forward_within_1e_5():
    features, coords, shape, batch_size = _random_input(3, dtype=torch.float32)
    conv = sc.SparseConv3d(3, 8, 3, stride=2, padding=1, bias=True)
    out = conv(sc.sparse_tensor(features, coords, shape, batch_size))
    with torch.no_grad():
        dense_out = dense_conv(densify(features, coords, shape, batch_size), conv.weight, conv.bias, 2, 1)
    torch.testing.assert_close(out.features, gather_sites(dense_out, out.indices), rtol=1e-5, atol=1e-5)


def _small_model() -> spconv.SparseSequential:
    return spconv.SparseSequential(
        sc.SubMConv3d(3, 8, 3, indice_key="subm1", bias=True),
        torch.nn.ReLU(),
        sc.SubMConv3d(8, 8, 3, indice_key="subm1", bias=True),  # reuses the rulebook
        torch.nn.ReLU(),
        sc.SparseConv3d(8, 16, 3, stride=2, padding=1, indice_key="down1", bias=True),
        torch.nn.ReLU(),
        sc.SparseMaxPool3d(2, 2),
        sc.SubMConv3d(16, 4, 1, bias=True),  # 1x1 conv path
    )


def test_small_model_identical_in_train_and_eval_with_bias_on_cpu():
    torch.manual_seed(0)
    model = _small_model()
    for m in model.modules():
        if getattr(m, "bias", None) is not None:
            torch.nn.init.uniform_(m.bias, -1, 1)
    features, coords, shape, batch_size = _random_input(3, dtype=torch.float32, channels=3)
    x = sc.sparse_tensor(features, coords, shape, batch_size)
    train_out = model.train()(x)
    eval_out = model.eval()(x)  # spconv alone raises "cpu don't support act and bias" here
    assert torch.equal(train_out.indices, eval_out.indices)
    assert torch.equal(train_out.features, eval_out.features)
    train_out.features.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_algorithm_follows_device_and_weights_stay_krsc():
    conv = sc.SubMConv3d(3, 4, 3, bias=True)
    assert conv.weight.shape == (4, 3, 3, 3, 3)  # (out, kD, kH, kW, in)
    assert conv.cuda_algo == ConvAlgo.MaskImplicitGemm  # spconv's default for CUDA tensors
    features, coords, shape, batch_size = _random_input(3, dtype=torch.float32)
    conv(sc.sparse_tensor(features, coords, shape, batch_size))
    assert conv.algo == ConvAlgo.Native and conv.cuda_algo == ConvAlgo.MaskImplicitGemm


def test_state_dict_interchangeable_with_spconv():
    ours = sc.SparseConv3d(3, 4, 3, stride=2, padding=1, bias=True)
    theirs = spconv.SparseConv3d(3, 4, 3, stride=2, padding=1, bias=True, algo=ConvAlgo.Native)
    theirs.load_state_dict(ours.state_dict())
    ours.load_state_dict(theirs.state_dict())
    features, coords, shape, batch_size = _random_input(3, dtype=torch.float32)
    x = sc.sparse_tensor(features, coords, shape, batch_size)
    torch.testing.assert_close(ours.train()(x).features, theirs.train()(x).features, rtol=0, atol=0)


def test_sparse_tensor_dense_layout():
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    coords = torch.tensor([[0, 1, 2, 3], [1, 0, 0, 0]], dtype=torch.int64)
    x = sc.sparse_tensor(features, coords, [2, 3, 4], batch_size=2)
    assert x.indices.dtype == torch.int32
    dense = x.dense()
    assert dense.shape == (2, 2, 2, 3, 4)
    assert dense[0, :, 1, 2, 3].tolist() == [1.0, 2.0] and dense[1, :, 0, 0, 0].tolist() == [3.0, 4.0]
    assert dense.abs().sum() == 10.0


@pytest.mark.parametrize(
    "coords, match",
    [
        ([[0, 1, 2, 4]], "outside"),
        ([[2, 0, 0, 0]], "outside"),
        ([[0, -1, 0, 0]], "outside"),
        ([[0, 1, 1, 1], [0, 1, 1, 1]], "duplicate"),
        ([[0, 1, 1]], r"coords must be \(V, 4\)"),
    ],
)
def test_sparse_tensor_rejects_bad_coords(coords, match):
    coords = torch.tensor(coords)
    with pytest.raises(ValueError, match=match):
        sc.sparse_tensor(torch.zeros(coords.shape[0], 2), coords, [2, 3, 4], batch_size=2)


def test_sparse_tensor_rejects_bad_features():
    with pytest.raises(ValueError, match="features must be"):
        sc.sparse_tensor(torch.zeros(1, 2, dtype=torch.int64), torch.zeros(1, 4, dtype=torch.int32),
                         [2, 2, 2], 1)


@pytest.mark.cuda
def test_cpu_built_model_on_cuda_uses_spconv_default_and_matches_cpu():
    torch.manual_seed(0)
    model = _small_model().eval()
    features, coords, shape, batch_size = _random_input(3, dtype=torch.float32, channels=3)
    cpu_out = model(sc.sparse_tensor(features, coords, shape, batch_size))
    model = model.cuda()
    gpu_out = model(sc.sparse_tensor(features.cuda(), coords.cuda(), shape, batch_size))
    assert model[0].algo == ConvAlgo.MaskImplicitGemm
    cpu_dense, gpu_dense = cpu_out.dense(), gpu_out.dense().cpu()
    torch.testing.assert_close(gpu_dense, cpu_dense, rtol=1e-3, atol=1e-3)  # TF32/fp16-accum kernels on GPU
