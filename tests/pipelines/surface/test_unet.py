"""Tests for the sparse 3D U-Net and its input packing (pipelines/surface/unet.py)."""

from __future__ import annotations

import time

import pytest
import torch

from ops.sparse_conv import sparse_tensor
from pipelines.surface.unet import SparseUNet3d, make_input


def shell(radius: float, centre=(0, 0, 0), width: float = 1.5) -> torch.Tensor:
    """(M, 3) int64 voxel indices within ``width`` voxels of a sphere: a surface-like sparse set."""
    r = int(radius + width) + 1
    g = torch.stack(torch.meshgrid(*[torch.arange(-r, r + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    keep = (g.double().norm(dim=1) - radius).abs() < width
    return g[keep] + torch.tensor(centre)


def random_features(m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(m, generator=gen) * 2 - 1, torch.rand(m, generator=gen) * 20,
            torch.rand(m, 3, generator=gen))


def two_items() -> tuple[torch.Tensor, torch.Tensor]:
    """Two batch items that overlap in space: (M, 3) coords and (M,) batch."""
    a = shell(5.0, (100, -40, 7))
    b = shell(3.5, (103, -38, 9))
    return torch.cat([a, b]), torch.cat([torch.zeros(len(a), dtype=torch.int64), torch.ones(len(b), dtype=torch.int64)])


def calibrated(net: SparseUNet3d, x) -> SparseUNet3d:
    """``net`` in eval mode with a random TSDF head and BatchNorm running statistics taken from ``x``.

    An untrained network in eval mode (running stats 0/1, zero TSDF head) returns nearly constant outputs,
    which would let comparisons pass vacuously; after this its outputs are O(1) and depend on the input.
    """
    with torch.no_grad():
        net.head.weight.normal_(0.0, 0.5)
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.reset_running_stats()
                module.momentum = None  # cumulative average: one batch sets the statistics
        net.train()(x)
    return net.eval()


def test_make_input_packs_coords_features_and_origin():
    coords, batch = two_items()
    tsdf, weight, color = random_features(len(coords), 0)
    weight[0] = 0.0
    x, origin = make_input(coords, tsdf, weight, color, batch, levels=3)
    assert origin.shape == (2, 3) and origin.dtype == torch.int64
    for item in range(2):
        lo = coords[batch == item].amin(0)
        assert torch.equal(origin[item], torch.div(lo, 8, rounding_mode="floor") * 8)
    assert (origin % 8 == 0).all()
    # [batch, z, y, x] = coords - origin, reordered, rows in input order
    expected = torch.cat([batch[:, None], (coords - origin[batch]).flip(1)], dim=1)
    assert x.indices.dtype == torch.int32 and torch.equal(x.indices.long(), expected)
    assert all(s % 8 == 0 for s in x.spatial_shape)
    assert (x.indices[:, 1:].amax(0) < torch.tensor(x.spatial_shape, dtype=torch.int32)).all()
    assert x.batch_size == 2
    f = x.features
    assert f.shape == (len(coords), 5) and f.dtype == torch.float32
    torch.testing.assert_close(f[:, 0], tsdf)
    torch.testing.assert_close(f[:, 2:], color)
    for item in range(2):
        sel = batch == item
        torch.testing.assert_close(f[sel, 1], torch.log1p(weight[sel]) / torch.log1p(weight[sel]).max())
    assert f[0, 1] == 0.0


def test_make_input_rejects_bad_input():
    coords = shell(3.0)
    tsdf, weight, color = random_features(len(coords), 1)
    with pytest.raises(ValueError, match="coords"):
        make_input(coords.float(), tsdf, weight, color)
    with pytest.raises(ValueError, match="weight"):
        make_input(coords, tsdf, -weight - 1, color)
    with pytest.raises(ValueError, match="color"):
        make_input(coords, tsdf, weight, color[:, :2])
    with pytest.raises(ValueError, match="duplicate"):
        make_input(torch.cat([coords, coords[:1]]), *random_features(len(coords) + 1, 1))


def test_output_shape_order_and_bounds_for_two_items():
    torch.manual_seed(0)
    coords, batch = two_items()
    tsdf, weight, color = random_features(len(coords), 2)
    x, _ = make_input(coords, tsdf, weight, color, batch)
    net = calibrated(SparseUNet3d(), x)
    with torch.no_grad():
        out = net(x)
        assert out.shape == (len(coords), 2) and out.dtype == torch.float32
        assert torch.isfinite(out).all() and (out[:, 0].abs() < 1).all()
        assert out.std(0).min() > 0.05  # not a vacuous (constant) output
        # rows follow the input rows: permuting the input permutes the output the same way
        perm = torch.randperm(len(coords), generator=torch.Generator().manual_seed(3))
        xp, _ = make_input(coords[perm], tsdf[perm], weight[perm], color[perm], batch[perm])
        torch.testing.assert_close(net(xp), out[perm], atol=1e-5, rtol=1e-5)


def test_untrained_network_returns_the_input_tsdf():
    coords = shell(4.0)
    tsdf, weight, color = random_features(len(coords), 4)
    x, _ = make_input(coords, tsdf, weight, color)
    out = SparseUNet3d()(x)
    torch.testing.assert_close(out[:, 0], tsdf.clamp(-0.99, 0.99), atol=1e-6, rtol=1e-6)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    coords, batch = two_items()
    x, _ = make_input(coords, *random_features(len(coords), 5), batch)
    net = SparseUNet3d(base_channels=8)
    out = net(x)
    (out * torch.randn_like(out)).sum().backward()
    params = dict(net.named_parameters())
    missing = [name for name, p in params.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"
    # 3 levels: per level 4 encoder/decoder SubM convs + down + up (each with BN weight and bias),
    # 2 bottleneck SubM convs with BN, and the head's weight and bias
    assert len(params) == 3 * 6 * 3 + 2 * 3 + 2


def _volume(shift: tuple[int, int, int], spatial_shape=(48, 48, 48)):
    coords = shell(5.0, (8, 9, 10))  # inside [2, 17) per axis
    m = len(coords)
    feats = torch.cat([torch.rand(m, 1, generator=torch.Generator().manual_seed(6)) * 2 - 1,
                       torch.rand(m, 4, generator=torch.Generator().manual_seed(7))], dim=1)
    zyx = (coords + torch.tensor(shift)).flip(1)
    idx = torch.cat([torch.zeros(m, 1, dtype=torch.int64), zyx], dim=1)
    return sparse_tensor(feats, idx, spatial_shape, 1)


@pytest.mark.parametrize("train", [False, True])
def test_translation_equivariance_by_multiples_of_the_coarsest_stride(train):
    torch.manual_seed(0)
    net = calibrated(SparseUNet3d(base_channels=8), _volume((0, 0, 0))).train(train)
    with torch.no_grad():
        ref = net(_volume((0, 0, 0)))
        torch.testing.assert_close(net(_volume((8, 16, 24))), ref, atol=1e-5, rtol=1e-5)
        # negative control: a shift by one voxel moves the stride-2 grid: the outputs change
        assert (net(_volume((1, 0, 0))) - ref).abs().max() > 1e-3


def test_no_leakage_between_batch_items():
    torch.manual_seed(0)
    coords, batch = two_items()
    tsdf, weight, color = random_features(len(coords), 8)
    x, _ = make_input(coords, tsdf, weight, color, batch)
    net = calibrated(SparseUNet3d(base_channels=8), x)
    item0 = batch == 0
    with torch.no_grad():
        out = net(x)
        # new features for item 1 (which overlaps item 0 in space)
        tsdf2, weight2, color2 = random_features(len(coords), 9)
        tsdf2[item0], weight2[item0], color2[item0] = tsdf[item0], weight[item0], color[item0]
        out2 = net(make_input(coords, tsdf2, weight2, color2, batch)[0])
        torch.testing.assert_close(out2[item0], out[item0], atol=1e-6, rtol=1e-6)
        assert (out2[~item0] - out[~item0]).abs().max() > 1e-3
        # item 0 alone gives the same result as within the batch (up to summation order: another rulebook)
        alone = net(make_input(coords[item0], tsdf[item0], weight[item0], color[item0])[0])
        torch.testing.assert_close(alone, out[item0], atol=1e-5, rtol=1e-5)
        # positive control: changing one voxel of item 0 does change other voxels of item 0
        tsdf3 = tsdf.clone()
        tsdf3[0] = -tsdf3[0] + 0.5
        out3 = net(make_input(coords, tsdf3, weight, color, batch)[0])
        assert (out3[1:][item0[1:]] - out[1:][item0[1:]]).abs().max() > 1e-4


def test_forward_rejects_unaligned_spatial_shape_and_wrong_channels():
    net = SparseUNet3d(levels=2)
    x = _volume((0, 0, 0), spatial_shape=(18, 24, 24))  # 18 is not a multiple of 4
    with pytest.raises(ValueError, match="multiples of 2\\*\\*levels"):
        net(x)
    with pytest.raises(ValueError, match="features"):
        SparseUNet3d(in_channels=4)(_volume((0, 0, 0)))


def test_overfits_one_small_volume():
    torch.manual_seed(0)
    coords = shell(3.0)
    m = len(coords)
    gen = torch.Generator().manual_seed(10)
    tsdf_in = torch.rand(m, generator=gen) * 2 - 1
    target_tsdf = (tsdf_in + 0.5 * torch.randn(m, generator=gen)).clamp(-0.95, 0.95)
    target_keep = (torch.rand(m, generator=gen) < 0.5).float()
    x, _ = make_input(coords, tsdf_in, torch.rand(m, generator=gen) * 5, torch.rand(m, 3, generator=gen))
    # levels=1 and 60 steps keep this near 1 s: on CPU each sparse conv costs ~30 us per kernel offset
    # (a Python GEMM callback in spconv's Native path) whatever the voxel count, ~15 ms per training step
    net = SparseUNet3d(base_channels=8, levels=1)
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)

    def loss_fn(out):
        return (torch.nn.functional.l1_loss(out[:, 0], target_tsdf)
                + torch.nn.functional.binary_cross_entropy_with_logits(out[:, 1], target_keep))

    start = time.perf_counter()
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(net(x))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    elapsed = time.perf_counter() - start
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
    # a loose guard against pathological slowdowns (e.g. thread oversubscription), not a benchmark
    assert elapsed < 10.0, f"{m} voxels, 60 steps took {elapsed:.2f} s"
