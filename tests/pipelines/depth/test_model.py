"""The depth-completion network and module: scale equivariance, the fill, the loss, a short training run that
lowers the error, the input loaders' one-line errors, `geo3d complete` and the config through `geo3d fit`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from geo3d.cli import main
from geo3d.errors import InputError
from geo3d.io.depth_png import read_depth_png, write_depth_png
from geo3d.types import DepthMap
from pipelines.depth.data import DepthFrames, read_sparse
from pipelines.depth.model import (
    BlendSettings,
    DepthCompletionNet,
    IntegrationSettings,
    NetworkSettings,
    cat_channels,
    median_scale,
    nearest_fill,
)
from pipelines.depth.module import DepthCompletion, LossWeights, forward_differences, masked_pool

SMALL = NetworkSettings(base_channels=4, sparse_channels=4)
NO_BLEND = BlendSettings(enabled=False)


def _solver(**kwargs) -> IntegrationSettings:
    """Integration settings that solve to ``tol`` in eval mode too (``eval_tol`` None unless given)."""
    return IntegrationSettings(**{"eval_tol": None, **kwargs})


@pytest.mark.parametrize("density", [0.3, 0.01, 0.0005])
def test_nearest_fill_against_the_exact_distance_transform(density):
    from scipy import ndimage

    g = torch.Generator().manual_seed(1)
    mask = torch.rand(2, 1, 90, 130, generator=g) < density
    mask[:, :, 45, 65] = True
    ys, xs = torch.meshgrid(torch.arange(90.0), torch.arange(130.0), indexing="ij")
    values = torch.stack([ys, xs]).expand(2, 2, 90, 130)  # each seed carries its own coordinates
    filled, distance = nearest_fill(values, mask)
    for b in range(2):
        exact = ndimage.distance_transform_edt(~mask[b, 0].numpy())
        ours = distance[b, 0].numpy()
        assert (ours >= exact - 1e-4).all()  # never closer than the truth
        wrong = ours > exact + 1e-4
        assert wrong.mean() < 0.002 and (ours - exact).max() < 3.0  # jump flooding's rare misses are near-ties
        seed_y, seed_x = filled[b, 0], filled[b, 1]
        assert mask[b, 0][seed_y.long(), seed_x.long()].all()  # every pixel took a sample's value...
        assert torch.allclose(torch.hypot(seed_y - ys, seed_x - xs), distance[b, 0])  # ...the one it measured
        assert torch.equal(filled[b][:, mask[b, 0]], values[b][:, mask[b, 0]])  # samples keep their values


def test_median_scale_and_the_network_is_scale_equivariant():
    torch.manual_seed(0)
    net = DepthCompletionNet(SMALL, _solver(iters=200, tol=1e-8)).eval()
    with torch.no_grad():  # non-trivial heads
        for head in (net.head0, net.head1, net.head2):
            head.weight.normal_(0, 0.1)
    image = torch.rand(1, 3, 32, 48)
    sparse = torch.zeros(1, 1, 32, 48)
    sparse[0, 0, ::5, ::7] = torch.rand(7, 7) * 10 + 1
    assert median_scale(sparse)[0] == sparse[sparse > 0].median()
    with torch.no_grad():
        a = net(image, sparse)
        b = net(image, sparse * 1000)  # metres -> millimetres
    assert torch.allclose(b["depth"], a["depth"] * 1000, rtol=1e-4)
    assert torch.allclose(b["laplace_b"], a["laplace_b"])
    with pytest.raises(ValueError, match="no valid"):
        net(image, torch.zeros_like(sparse))


def test_an_untrained_network_follows_the_observations_and_pads_odd_sizes():
    image, sparse = torch.rand(1, 3, 37, 53), torch.zeros(1, 1, 37, 53)
    sparse[0, 0, 5, 7], sparse[0, 0, 30, 40] = 2.0, 8.0
    results = {}
    for weight in (10.0, 1e4):
        torch.manual_seed(0)
        net = DepthCompletionNet(NetworkSettings(base_channels=4, sparse_channels=4, obs_weight=weight),
                                 _solver(iters=500, tol=1e-9)).eval()
        with torch.no_grad():
            results[weight] = net(image, sparse)
    out = results[10.0]
    assert out["depth"].shape == (1, 1, 37, 53) and out["laplace_b"].shape == (1, 1, 37, 53)
    # zero gradients: an interpolation, inside the observations' range (2.11-7.76 m here)
    assert 2.0 < float(out["depth"].min()) and float(out["depth"].max()) < 8.0
    # zero gradients at init: an observation is a weighted pull against the smoothness of its neighbourhood (two
    # isolated points at weight ~9 are honoured within 15 %), exactly when its weight dominates
    for weight, rel in ((10.0, 0.15), (1e4, 0.005)):
        depth = results[weight]["depth"][0, 0]
        assert depth[5, 7] == pytest.approx(2.0, rel=rel) and depth[30, 40] == pytest.approx(8.0, rel=rel)


def test_the_linear_blend_spans_linear_interpolation_and_the_integration():
    """alpha -> 0 gives the linear baseline exactly; alpha -> 1 the same network without the blend."""
    from pipelines.depth.baselines import complete_baseline

    image, sparse = torch.rand(1, 3, 37, 53), torch.zeros(1, 1, 37, 53)
    g = torch.Generator().manual_seed(3)
    sparse[0, 0, ::4, ::6] = torch.rand(10, 9, generator=g) * 20 + 2
    torch.manual_seed(0)
    blended = DepthCompletionNet(SMALL, _solver(iters=300, tol=1e-9)).eval()
    plain = DepthCompletionNet(SMALL, _solver(iters=300, tol=1e-9), NO_BLEND).eval()
    plain.load_state_dict({k: v for k, v in blended.state_dict().items() if not k.startswith("blend.")})
    linear = complete_baseline("linear", sparse[0, 0])
    with torch.no_grad():
        half = blended(image, sparse)
        assert half["blend_weight"].eq(0.5).all()  # the zero-initialised head starts halfway
        assert torch.allclose(half["depth"], (half["scale"] * torch.exp(half["log_depth_integrated"]) * linear).sqrt(),
                              rtol=1e-5)
        blended.blend[2].bias.fill_(-40.0)
        assert torch.allclose(blended(image, sparse)["depth"][0, 0], linear, rtol=1e-5)
        blended.blend[2].bias.fill_(40.0)
        assert torch.allclose(blended(image, sparse)["depth"], plain(image, sparse)["depth"], rtol=1e-5)


def test_the_integration_falls_back_to_linear_interpolation_with_the_linear_prior():
    """Where the prior dominates (a huge ``lam``) the integration returns its prior: linear interpolation of the
    sparse depth (the independent SciPy baseline) with ``linear_prior``, the nearest fill without."""
    from pipelines.depth.baselines import complete_baseline

    image, sparse = torch.rand(1, 3, 37, 53), torch.zeros(1, 1, 37, 53)
    g = torch.Generator().manual_seed(4)
    sparse[0, 0, ::4, ::6] = torch.rand(10, 9, generator=g) * 20 + 2
    linear = complete_baseline("linear", sparse[0, 0])
    results = {}
    for prior in (True, False):
        torch.manual_seed(0)
        net = DepthCompletionNet(NetworkSettings(base_channels=4, sparse_channels=4, linear_prior=prior),
                                 _solver(lam=1e6, iters=300, tol=1e-10), NO_BLEND).eval()
        assert not net.linear_input
        with torch.no_grad():
            results[prior] = net(image, sparse)["depth"][0, 0]
    assert torch.allclose(results[True], linear, rtol=1e-4)
    assert (results[False] - linear).abs().max() > 1.0  # the nearest fill is piecewise constant


def _net_with_running_statistics(channels_last: bool = True, eval_tol: float | None = None) -> DepthCompletionNet:
    """A small eval-mode network whose heads and batch norms are not at their initial values."""
    torch.manual_seed(0)
    net = DepthCompletionNet(NetworkSettings(base_channels=4, sparse_channels=4, channels_last=channels_last),
                             _solver(iters=400, tol=1e-10, eval_tol=eval_tol))
    with torch.no_grad():
        for head in (net.head0, net.head1, net.head2):
            head.weight.normal_(0, 0.1)
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return net.eval()


def test_channels_last_and_folded_batch_norms_give_the_plain_network_to_rounding():
    """The inference-speed options change the memory layout and fold the batch norms, not the function: outputs
    against the plain contiguous network with separate batch norms (same weights), float32 rounding only."""
    image, sparse = torch.rand(1, 3, 48, 80), torch.zeros(1, 1, 48, 80)
    g = torch.Generator().manual_seed(5)
    sparse[0, 0, ::3, ::5] = torch.rand(16, 16, generator=g) * 20 + 2
    plain = _net_with_running_statistics(channels_last=False)
    fast = _net_with_running_statistics(channels_last=True)
    fast.load_state_dict(plain.state_dict())
    assert fast.enc0[0].weight.is_contiguous(memory_format=torch.channels_last)  # loading kept the layout
    with torch.no_grad():
        reference = plain(image, sparse)
        layout = fast(image, sparse)
        folded = fast.fuse_batch_norm()(image, sparse)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last)
               for m in fast.modules() if isinstance(m, torch.nn.Conv2d))  # folding kept the layout
    assert (reference["blend_weight"] - 0.5).abs().max() == 0  # the blend is in, at its initial weight
    for out in (layout, folded):
        assert torch.allclose(out["depth"], reference["depth"], rtol=1e-4)
        assert torch.allclose(out["laplace_b"], reference["laplace_b"], rtol=1e-4)
    with pytest.raises(RuntimeError, match="eval"):
        _net_with_running_statistics().train().fuse_batch_norm()


def test_cat_channels_is_torch_cat_written_channels_last():
    """The channels-last concatenation holds exactly ``torch.cat(ts, 1)``'s values for inputs of mixed layouts
    (NCHW, channels-last, a broadcast view), laid out channels-last; gradients reach every input unchanged."""
    g = torch.Generator().manual_seed(7)
    a = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    b.requires_grad_()
    c = torch.randn(2, 1, 1, 1, generator=g, dtype=torch.float64).expand(2, 1, 6, 7)
    reference = torch.cat([a, b, c], 1)
    out = cat_channels([a, b, c], channels_last=True)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert torch.equal(out, reference)
    weights = torch.randn(reference.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((out * weights).sum(), [a, b])
    assert torch.equal(grads[0], weights[:, :5]) and torch.equal(grads[1], weights[:, 5:8])
    assert cat_channels([a, b, c], channels_last=False).is_contiguous()


def test_eval_mode_solves_to_eval_tol_and_training_to_tol():
    """``eval_tol`` stops the integration's CG earlier in eval mode only; training keeps ``tol``."""
    image, sparse = torch.rand(1, 3, 48, 80), torch.zeros(1, 1, 48, 80)
    sparse[0, 0, ::3, ::5] = torch.rand(16, 16, generator=torch.Generator().manual_seed(6)) * 20 + 2
    net = _net_with_running_statistics(eval_tol=1e-2)
    with torch.no_grad():
        net(image, sparse)
        loose = dict(net.integration.last_stats)
        net.train()
        net(image, sparse)
        tight = dict(net.integration.last_stats)
    assert loose["converged"].all() and 1e-3 < loose["relative_residual"].max() < 1e-2
    assert tight["relative_residual"].max() < 1e-10
    assert tight["total_iterations"] > 2 * loose["total_iterations"]
    assert DepthCompletion(SMALL).net.integration.eval_tol == 1e-3


def _linear_in_a_forked_child(sparse: torch.Tensor) -> torch.Tensor:
    from pipelines.depth.model import _linear_in_background

    return _linear_in_background(sparse).result(timeout=60)


def test_the_background_linear_interpolation_also_runs_in_a_forked_child():
    """The worker thread that computes the linear interpolation beside the U-Net: its result is complete_linear's,
    and a process forked after it started (a data-loader worker, a pool) gets a working thread of its own."""
    import multiprocessing

    from pipelines.depth.baselines import complete_linear
    from pipelines.depth.model import _linear_in_background

    sparse = torch.zeros(1, 1, 30, 40)
    sparse[0, 0, ::4, ::5] = torch.rand(8, 8, generator=torch.Generator().manual_seed(7)) * 10 + 1
    expected = complete_linear(sparse)
    assert torch.equal(_linear_in_background(sparse).result(timeout=60), expected)  # the parent's thread exists now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert torch.equal(pool.apply_async(_linear_in_a_forked_child, (sparse,)).get(timeout=120), expected)


@pytest.mark.parametrize("bias", [-30.0, 30.0, 0.7])
def test_the_prior_mix_is_the_head_weighted_mix_of_the_nearest_fill_and_linear_interpolation(bias):
    """With ``prior_mix`` and a dominant prior (huge ``lam``) the integration returns ``fill + beta (linear - fill)``:
    linear interpolation (the SciPy baseline) where the head says 1, the nearest fill where it says 0, the mix at
    ``sigmoid(bias)`` in between; the head's last layer set to a constant logit."""
    from pipelines.depth.baselines import complete_baseline

    image, sparse = torch.rand(1, 3, 37, 53), torch.zeros(1, 1, 37, 53)
    g = torch.Generator().manual_seed(4)
    sparse[0, 0, ::4, ::6] = torch.rand(10, 9, generator=g) * 20 + 2
    linear = torch.log(complete_baseline("linear", sparse[0, 0]).double())
    torch.manual_seed(0)
    net = DepthCompletionNet(NetworkSettings(base_channels=4, sparse_channels=4, prior_mix=True),
                             _solver(lam=1e6, iters=300, tol=1e-10), NO_BLEND).eval()
    with torch.no_grad():
        net.prior_head[2].bias.fill_(bias)
        out = net(image, sparse)
    scale = out["scale"][0].double()
    fill = out["fill"][0, 0].double() + torch.log(scale)
    beta = torch.sigmoid(torch.tensor(bias, dtype=torch.float64))
    assert torch.allclose(out["prior_weight"][0, 0].double(), beta.expand(37, 53), atol=1e-7)
    expected = torch.exp(fill + beta * (linear - fill))
    assert torch.allclose(out["depth"][0, 0].double(), expected, rtol=1e-4)
    assert (linear.exp() - fill.exp()).abs().max() > 1.0  # the two priors differ, so the mix is tested


@pytest.mark.parametrize("every, expected", [(10, 0.0), (1, 1.0)])  # 1 % of the pixels -> 0, all -> 1
def test_the_blend_head_sees_the_sparse_density(every, expected):
    """Version 2's last input channel is (log10(share of valid sparse pixels) + 2) / 2, constant over the image
    (padding excluded: 40 x 50 pads to 48 x 64)."""
    net = DepthCompletionNet(SMALL).eval()
    seen = {}
    net.blend[0].register_forward_hook(lambda module, inputs, output: seen.update(x=inputs[0]))
    sparse = torch.zeros(1, 1, 40, 50)
    sparse[0, 0, ::every, ::every] = 5.0
    with torch.no_grad():
        net(torch.rand(1, 3, 40, 50), sparse)
    assert seen["x"].shape[1] == 4 + 7
    assert torch.allclose(seen["x"][0, -1], torch.full((48, 64), expected), atol=1e-6)


def test_blend_loss_minimum_is_the_rmse_optimal_weight():
    """Over a constant weight, the blend loss (metric) is lowest where the blend's squared error in metres is: found
    by brute force on the exact depths ``exp(alpha i + (1 - alpha) l)`` over pixels whose depths span 1-50 x the
    scale. Without the depth weighting the minimum moves towards what the near pixels want."""
    from pipelines.depth.module import blend_loss

    g = torch.Generator().manual_seed(0)
    gt_log = torch.linspace(0.0, 3.9, 400).view(1, 1, 20, 20)  # 1 to 50 x the scale
    gap = 0.02 * (1 + torch.rand(1, 1, 20, 20, generator=g))  # small: the linearisation of exp holds
    far = gt_log > 2.0
    t = torch.where(far, 0.9, 0.2) + 0.05 * torch.rand(1, 1, 20, 20, generator=g)  # far pixels want integration
    lin = gt_log - t * gap
    out = {"log_depth_integrated": lin + gap, "linear": lin}
    valid = torch.ones_like(gt_log, dtype=torch.bool)
    alphas = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    metric_sse = [((torch.exp(a * (lin + gap) + (1 - a) * lin) - torch.exp(gt_log)).double() ** 2).sum()
                  for a in alphas]
    best = float(alphas[int(torch.stack(metric_sse).argmin())])

    def loss_minimum(metric: bool) -> float:
        losses = [blend_loss(out | {"blend_logit": torch.full_like(gt_log, float(torch.logit(a)))}, gt_log, valid,
                             metric=metric) for a in alphas]
        return float(alphas[int(torch.stack(losses).argmin())])

    assert loss_minimum(True) == pytest.approx(best, abs=0.01)
    assert loss_minimum(False) < best - 0.2


def test_blend_loss_mae_share_mixes_absolute_and_squared_weightings():
    """``mae_share`` s: the loss is (1 - s) x the cross-entropy weighted by ``gap^2 exp(2 g)`` + s x the one weighted
    by ``|gap| exp(g)``, each normalised by its weights' sum; written out here pixel by pixel in float64."""
    from pipelines.depth.module import blend_loss

    g = torch.Generator().manual_seed(1)
    gt_log = torch.randn(1, 1, 6, 7, generator=g, dtype=torch.float64)
    lin = gt_log + 0.3 * torch.randn(1, 1, 6, 7, generator=g, dtype=torch.float64)
    integrated = gt_log + 0.3 * torch.randn(1, 1, 6, 7, generator=g, dtype=torch.float64)
    logit = torch.randn(1, 1, 6, 7, generator=g, dtype=torch.float64)
    valid = torch.rand(1, 1, 6, 7, generator=g) > 0.2
    out = {"log_depth_integrated": integrated, "linear": lin, "blend_logit": logit}

    def by_hand(power: int) -> float:
        num = den = 0.0
        for gi, li, ii, xi, vi in zip(gt_log.flatten().tolist(), lin.flatten().tolist(),
                                      integrated.flatten().tolist(), logit.flatten().tolist(),
                                      valid.flatten().tolist()):
            if not vi:
                continue
            target = min(max((gi - li) / (ii - li), 0.0), 1.0)
            w = 1.0 / (1.0 + np.exp(-xi))
            bce = -(target * np.log(w) + (1 - target) * np.log(1 - w))
            weight = abs(ii - li) ** power * np.exp(power * gi)
            num, den = num + bce * weight, den + weight
        return num / den

    for share in (0.0, 0.3, 1.0):
        expected = (1 - share) * by_hand(2) + share * by_hand(1)
        assert float(blend_loss(out, gt_log, valid, mae_share=share)) == pytest.approx(expected, rel=1e-9, abs=0)
    with pytest.raises(ValueError, match="mae_share"):
        blend_loss(out, gt_log, valid, mae_share=-0.1)


def test_loss_parts_against_hand_computation():
    gt = torch.full((1, 1, 16, 16), 2.0)
    gt[0, 0, :, 8:] = 4.0
    gt[0, 0, 0, 0] = 0.0  # missing
    scale = torch.tensor([2.0])
    log_depth = torch.zeros(1, 1, 16, 16)  # predicts 2 m everywhere
    out = {"log_depth": log_depth, "scale": scale, "laplace_b": torch.ones(1, 1, 16, 16),
           "gradients": [torch.zeros(1, 2, 16 // 2**s, 16 // 2**s) for s in range(3)]}
    module = DepthCompletion(loss=LossWeights(nll_weight=0.0, grad_weight=0.0, head_weight=0.0))
    loss, parts = module.loss(out, gt)
    valid = gt > 0
    expected = (torch.log(torch.tensor(2.0)) * (gt[valid] == 4.0).float()).mean()
    assert parts["l1_log"] == pytest.approx(float(expected), rel=1e-6) and loss == parts["l1_log"]
    # forward differences: the step between columns 7 and 8 is log 2 on every row
    d, dv = forward_differences(torch.log(gt.clamp_min(1e-6) / 2), valid)
    assert dv[0, 0, 0, 0] == 0 and dv[0, 1, 0, 0] == 0  # pairs with the missing pixel are invalid
    assert torch.allclose(d[0, 0, :, 7][dv[0, 0, :, 7]], torch.log(torch.tensor(2.0)).expand(16))
    pooled, pm = masked_pool(gt, valid, 1)
    assert pooled[0, 0, 0, 0] == 2.0 and pm.all()  # the mean over the 3 valid pixels of the cell


def test_metric_l1_term_is_the_error_in_units_of_the_scale():
    """``loss.metric_l1_weight`` adds the mean of ``|depth - gt| / scale`` over the valid pixels: a prediction of 2 m
    against 2 m and 4 m halves (scale 2 m) is off by 1 scale unit on half the pixels."""
    gt = torch.full((1, 1, 16, 16), 2.0)
    gt[0, 0, :, 8:] = 4.0
    gt[0, 0, 0, 0] = 0.0  # missing
    out = {"log_depth": torch.zeros(1, 1, 16, 16), "scale": torch.tensor([2.0]), "laplace_b": torch.ones(1, 1, 16, 16),
           "gradients": [torch.zeros(1, 2, 16 // 2**s, 16 // 2**s) for s in range(3)]}
    weights = LossWeights(nll_weight=0.0, grad_weight=0.0, head_weight=0.0)
    loss_without, parts_without = DepthCompletion(loss=weights).loss(out, gt)
    assert "l1_metric" not in parts_without
    loss, parts = DepthCompletion(loss=LossWeights(**{**vars(weights), "metric_l1_weight": 0.5})).loss(out, gt)
    valid = gt > 0
    expected = float(((gt[valid] - 2.0).abs() / 2.0).mean())  # 128 of the 255 valid pixels are 1 unit off
    assert parts["l1_metric"] == pytest.approx(expected, rel=1e-6) and expected == pytest.approx(128 / 255)
    assert loss == pytest.approx(float(loss_without) + 0.5 * expected, rel=1e-6)
    with pytest.raises(ValueError, match="blend_mae_share"):
        LossWeights(blend_mae_share=1.5)


def test_read_sparse_errors_name_the_file(tmp_path):
    image_shape = (8, 10)
    ok = tmp_path / "ok.png"
    depth = torch.zeros(image_shape)
    depth[2, 3] = 5.0
    write_depth_png(ok, DepthMap(depth), scale=256.0)
    assert read_sparse(ok, shape=image_shape)[2, 3] == pytest.approx(5.0, abs=1 / 256)
    eight_bit = tmp_path / "eight.png"
    Image.fromarray(np.full(image_shape, 7, np.uint8)).save(eight_bit)
    empty = tmp_path / "empty.png"
    write_depth_png(empty, DepthMap(torch.zeros(image_shape)), scale=256.0)
    np.save(tmp_path / "cube.npy", np.ones((2, 8, 10)))
    np.save(tmp_path / "neg.npy", -np.ones(image_shape))
    for path, text in ((eight_bit, "16-bit"), (empty, "every pixel is missing"), (tmp_path / "cube.npy", "(H, W)"),
                       (tmp_path / "neg.npy", "negative"), (tmp_path / "none.png", "not found")):
        with pytest.raises(InputError, match=text) as info:
            read_sparse(path, shape=image_shape)
        assert str(path) in str(info.value)
    with pytest.raises(InputError, match="image is 4 x 10"):
        read_sparse(ok, shape=(4, 10))
    # -inf is a negative depth (was silently "missing"); NaN and +inf are missing; the error says where
    special = np.zeros(image_shape)
    special[1, 2], special[3, 4], special[5, 6] = np.nan, np.inf, 4.0
    np.save(tmp_path / "special.npy", special)
    read = read_sparse(tmp_path / "special.npy", shape=image_shape)
    assert read[5, 6] == 4.0 and int((read > 0).sum()) == 1 and bool(torch.isfinite(read).all())
    special[7, 8] = -np.inf
    np.save(tmp_path / "minus_inf.npy", special)
    with pytest.raises(InputError, match=r"1 negative depth value\(s\), the first -inf at row 7, column 8"):
        read_sparse(tmp_path / "minus_inf.npy", shape=image_shape)



def test_fewer_training_frames_than_a_batch_is_an_error(frames, capsys):
    """Six training frames and batch 8: "No training batches", no checkpoint and exit 0 before; now a one-line
    error naming the folder, from the CLI as from setup()."""
    from pipelines.depth.data import DepthDataModule

    dm = DepthDataModule(str(frames / "train"), str(frames / "val"), batch_size=8)
    with pytest.raises(InputError, match=r"train: 6 training frames: fewer than one batch of 8 \(lower "):
        dm.setup("fit")
    DepthDataModule(str(frames / "train"), str(frames / "val"), batch_size=6).setup("fit")  # one batch: fine
    code = main(["fit", "--config", "configs/depth/omni_tiny_cpu.yaml", "--data.train_dir", str(frames / "train"),
                 "--data.val_dir", str(frames / "val"), "--data.batch_size", "8", "--trainer.max_steps", "1",
                 "--trainer.logger", "false", "--trainer.default_root_dir", str(frames.parent / "no_batch_run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{frames / 'train'}: 6 training frames" in err, err


def test_frames_are_deterministic_for_evaluation(frames):
    data = DepthFrames(frames / "val", ["random:0.01", "lidar:16"], repeat=True)
    assert len(data) == 4
    a, b = data[1], data[1]
    assert torch.equal(a["sparse"], b["sparse"]) and a["pattern"] == "random:0.01"
    assert data[2]["pattern"] == "lidar:16"
    valid = a["sparse"] > 0
    assert torch.allclose(a["sparse"][valid], a["gt"][valid])


def test_gradients_through_the_integration_fit_a_batch(frames):
    """30 Adam steps on four fixed inputs: the log-depth error falls by more than half (the loss reaches the heads
    through the implicit backward of the integration)."""
    data = DepthFrames(frames / "train", ["random:0.01"], repeat=True)
    items = [data[i] for i in range(4)]
    image, sparse, gt = (torch.stack([item[k] for item in items]) for k in ("image", "sparse", "gt"))
    torch.manual_seed(0)
    model = DepthCompletion(NetworkSettings(base_channels=8, sparse_channels=8))
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    errors = []
    for _ in range(30):
        loss, parts = model.loss(model(image, sparse), gt)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        errors.append(float(parts["l1_log"]))
    assert errors[-1] < 0.5 * errors[0]


def test_geo3d_complete_baselines_and_errors(tmp_path, capsys):
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 40, 3), np.uint8)).save(rgb)
    depth = torch.zeros(24, 40)
    depth[::4, ::5] = 7.5
    sparse = tmp_path / "sparse.png"
    write_depth_png(sparse, DepthMap(depth), scale=256.0)
    for method in ("ip_basic", "linear", "nearest"):
        out = tmp_path / f"{method}.png"
        assert main(["complete", str(rgb), str(sparse), "--out", str(out), "--method", method]) == 0
        dense = read_depth_png(out, scale=256.0).depth
        assert dense.shape == (24, 40) and torch.allclose(dense, torch.full_like(dense, 7.5), atol=1 / 256)
    assert main(["complete", str(rgb), str(sparse), "--out", str(tmp_path / "d.npy"), "--method", "linear"]) == 0
    assert np.load(tmp_path / "d.npy").shape == (24, 40)
    capsys.readouterr()
    small = tmp_path / "small.png"
    write_depth_png(small, DepthMap(depth[:12]), scale=256.0)
    cases = [([str(rgb), str(rgb)], str(rgb)), ([str(rgb), str(small)], str(small)),
             ([str(rgb), str(sparse), "--ckpt", str(tmp_path / "no.ckpt")], "no.ckpt")]
    for args, name in cases:
        assert main(["complete", *args, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and name in err[0]


def test_config_trains_through_the_cli_and_complete_uses_the_checkpoint(frames, tmp_path, capsys):
    from pipelines.depth.predict import load_model

    out = tmp_path / "run"
    data = ["--data.train_dir", str(frames / "train"), "--data.val_dir", str(frames / "val"), "--data.crop",
            "[64, 192]", "--data.batch_size", "2", "--data.num_workers", "0", "--data.val_frames", "1",
            "--data.val_patterns", "[random:0.01, lidar:16]"]
    code = main(["fit", "--config", "configs/depth/omni_tiny_cpu.yaml", *data, "--model.network.base_channels", "4",
                 "--model.network.sparse_channels", "4", "--trainer.max_steps", "2", "--trainer.val_check_interval",
                 "2", "--trainer.default_root_dir", str(out), "--trainer.logger.init_args.save_dir", str(out),
                 "--trainer.callbacks.init_args.steps", "5"])  # the config's last callback: the blend head's refit
    assert code == 0
    err = capsys.readouterr().err
    assert "blend head: caching frames" in err and "blend head: fitting" in err and "5/5" in err
    ckpt = next(out.rglob("last.ckpt"))
    predict = tmp_path / "predict"
    assert main(["predict", "--config", "configs/depth/omni_tiny_cpu.yaml", *data, "--ckpt_path", str(ckpt),
                 "--model.network.base_channels", "4", "--model.network.sparse_channels", "4", "--trainer.logger",
                 "false",
                 "--trainer.callbacks", '[{"class_path": "pipelines.depth.module.DepthPredictionWriter", '
                 f'"init_args": {{"output_dir": "{predict}"}}}}]']) == 0
    written = sorted(p.name for p in predict.glob("*.png"))
    assert len(written) == 4 and sum(name.endswith("_uncertainty.png") for name in written) == 2
    assert any("lidar-16" in name for name in written)
    ids = sorted(p.stem for p in (frames / "val" / "image").glob("*.png"))
    rgb = frames / "val" / "image" / f"{ids[0]}.png"
    gt = frames / "val" / "groundtruth" / f"{ids[0]}.png"
    dense, std = tmp_path / "dense.png", tmp_path / "std.png"
    assert main(["complete", str(rgb), str(gt), "--out", str(dense), "--ckpt", str(ckpt), "--uncertainty",
                 str(std)]) == 0
    assert read_depth_png(dense, scale=256.0).valid.all()
    assert "with model" in capsys.readouterr().out

    # the checkpoint holds the settings groups (the CLI's config) and loads through load_module as it is
    hparams = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["network"]["base_channels"] == 4 and hparams["blend"] == {"enabled": True, "version": 3}
    assert hparams["integration"]["backward_tol"] == 0.01 and hparams["optim"]["blend_lr_scale"] == 3.0
    assert DepthCompletion.upgrade_hparams(hparams) == hparams
    model = load_model(ckpt)
    assert model.hparams["network"] == SMALL and model.net.blend_version == 3


# The hyper-parameters of a checkpoint that `geo3d fit --config configs/depth/omni_tiny_cpu.yaml` wrote before the
# settings groups (the 23 flat arguments of commit b019f9c, as Lightning's CLI saved them).
FLAT_HPARAMS = {
    "_class_path": "pipelines.depth.module.DepthCompletion", "base_channels": 16, "sparse_channels": 16, "lam": 0.01,
    "iters": 100, "tol": 0.0001, "obs_weight": 10.0, "lr": 0.002, "weight_decay": 0.0001, "nll_weight": 0.1,
    "grad_weight": 0.5, "head_weight": 0.1, "max_depth": 80.0, "linear_blend": True, "blend_loss_weight": 1.0,
    "blend_lr_scale": 3.0, "blend_version": 3, "blend_metric_weight": True, "linear_prior": False,
    "linear_input": False, "prior_mix": False, "eval_tol": 0.001, "channels_last": True, "backward_tol": 0.01,
    "_instantiator": "pytorch_lightning.cli.instantiate_module",
}


def test_flat_hyper_parameters_upgrade_to_the_groups():
    """Every flat argument lands in its group with its value (two renamed: ``linear_blend``, ``blend_version``), and
    the older checkpoints' migrations hold: no ``linear_blend`` -> no blend; ``linear_blend`` without
    ``blend_version`` -> version 1; ``linear_prior`` without ``linear_input`` -> the encoder saw linear
    interpolation too; neither -> the nearest fill."""
    from pipelines.depth.module import OptimSettings

    up = DepthCompletion.upgrade_hparams(FLAT_HPARAMS)
    assert up == {"_class_path": "pipelines.depth.module.DepthCompletion",
                  "_instantiator": "pytorch_lightning.cli.instantiate_module",
                  "network": NetworkSettings(16, 16, 10.0, False, False, False, True),
                  "integration": IntegrationSettings(0.01, 100, 0.0001, 0.001, 0.01),
                  "blend": BlendSettings(enabled=True, version=3),
                  "loss": LossWeights(0.1, 0.5, 0.1, 1.0, True), "optim": OptimSettings(0.002, 0.0001, 3.0),
                  "max_depth": 80.0}
    assert DepthCompletion.upgrade_hparams(up) == up  # a grouped checkpoint stays as it is

    def upgraded(drop=(), **changes):
        flat = {k: v for k, v in FLAT_HPARAMS.items() if k not in drop} | changes
        return DepthCompletion.upgrade_hparams(flat)

    before_blend = upgraded(("linear_blend", "blend_version", "blend_loss_weight", "blend_lr_scale",
                             "blend_metric_weight", "linear_prior", "linear_input", "prior_mix", "eval_tol",
                             "backward_tol", "channels_last"))
    assert before_blend["blend"] == BlendSettings(enabled=False, version=2)
    assert before_blend["integration"] == IntegrationSettings(0.01, 100, 0.0001)  # the defaults of the day
    assert upgraded(("blend_version",))["blend"] == BlendSettings(enabled=True, version=1)
    first_prior = upgraded(("linear_input",), linear_prior=True)["network"]
    assert first_prior.linear_prior and first_prior.linear_input
    before_prior = upgraded(("linear_prior", "linear_input"))["network"]
    assert not before_prior.linear_prior and not before_prior.linear_input
    with pytest.raises(ValueError, match="blend version"):
        upgraded(blend_version=4)


def _flat_checkpoint(path, net: DepthCompletionNet, drop=(), **changes):
    """A checkpoint as the flat signature wrote it: ``net``'s weights under ``net.``, the flat hyper-parameters."""
    hparams = {k: v for k, v in FLAT_HPARAMS.items() if k not in drop} | {"base_channels": 4, "sparse_channels": 4}
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": hparams | changes, "pytorch-lightning_version": "2.6.6", "epoch": 0,
                "global_step": 2}, path)
    return path


def test_checkpoints_of_the_flat_signature_load(tmp_path, capsys):
    """``load_model`` (through ``geo3d.io.checkpoint.load_module``) builds the network each old checkpoint was
    trained as (its weights load strictly), and ``geo3d complete`` runs on it."""
    from pipelines.depth.predict import load_model

    torch.manual_seed(0)
    small = NetworkSettings(base_channels=4, sparse_channels=4)
    current = _flat_checkpoint(tmp_path / "flat.ckpt", DepthCompletionNet(small, blend=BlendSettings(version=3)))
    before_blend = _flat_checkpoint(tmp_path / "before_blend.ckpt", DepthCompletionNet(small, blend=NO_BLEND),
                                    drop=("linear_blend", "blend_version", "blend_loss_weight", "blend_lr_scale"))
    v1 = _flat_checkpoint(tmp_path / "blend_v1.ckpt", DepthCompletionNet(small, blend=BlendSettings(version=1)),
                          drop=("blend_version",))
    first_prior = _flat_checkpoint(
        tmp_path / "first_prior.ckpt",
        DepthCompletionNet(NetworkSettings(base_channels=4, sparse_channels=4, linear_prior=True, linear_input=True),
                           blend=BlendSettings(version=3)), drop=("linear_input",), linear_prior=True)
    model = load_model(current)
    assert model.net.blend_version == 3 and model.hparams["optim"].blend_lr_scale == 3.0 and not model.training
    assert load_model(before_blend).net.blend is None
    assert load_model(v1).net.blend_version == 1 and isinstance(load_model(v1).net.blend[1], torch.nn.ReLU)
    assert load_model(first_prior).net.linear_input and load_model(first_prior).net.linear_prior
    rgb, sparse = tmp_path / "rgb.png", tmp_path / "sparse.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 40, 3), np.uint8)).save(rgb)
    depth = torch.zeros(24, 40)
    depth[::4, ::5] = 7.5
    write_depth_png(sparse, DepthMap(depth), scale=256.0)
    for ckpt in (current, before_blend, v1, first_prior):
        assert main(["complete", str(rgb), str(sparse), "--out", str(tmp_path / f"{ckpt.stem}.png"), "--ckpt",
                     str(ckpt)]) == 0
    assert capsys.readouterr().out.count("with model") == 4
