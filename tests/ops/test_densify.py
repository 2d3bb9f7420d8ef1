"""ops.densify: gsplat's DefaultStrategy on CPU tensors with the CPU rasterizer's meta, and remove_gaussians.

References: the rows a boolean mask keeps (indexing by hand), and the Gaussians a refinement must grow (those
that are visible with a non-zero 2D gradient, counted from the rasterizer's own outputs).
"""

from __future__ import annotations

import pytest
import torch

import ops
from ops.densify import DefaultStrategy, remove_gaussians

NAMES = ("means", "scales", "quats", "opacities", "sh0")


def gaussians_and_optimizers(n: int, seed: int = 0):
    """n Gaussians in front of a camera at the origin (z 2-4 m), one Adam each, and a camera looking at them."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * torch.tensor([1.6, 1.2, 2.0]) + torch.tensor([-0.8, -0.6, 2.0])
    params = torch.nn.ParameterDict({
        "means": torch.nn.Parameter(means),
        "scales": torch.nn.Parameter(torch.full((n, 3), -3.0) + 0.3 * torch.rand(n, 3, generator=g)),
        "quats": torch.nn.Parameter(torch.randn(n, 4, generator=g)),
        "opacities": torch.nn.Parameter(torch.randn(n, generator=g)),
        "sh0": torch.nn.Parameter(torch.rand(n, 1, 3, generator=g)),
    })
    optimizers = {name: torch.optim.Adam([params[name]], lr=1e-3) for name in NAMES}
    K = torch.tensor([[[60.0, 0.0, 32.0], [0.0, 60.0, 24.0], [0.0, 0.0, 1.0]]])
    return params, optimizers, torch.eye(4)[None], K


def render_and_backward(params, world_to_cam, K):
    p = params
    rgb, _, meta = ops.rasterize_gaussians(p["means"], p["quats"], p["scales"].exp(), torch.sigmoid(p["opacities"]),
                                           p["sh0"], world_to_cam, K, 64, 48, sh_degree=0)
    return rgb, meta


def test_remove_gaussians_keeps_parameters_moments_and_state_aligned():
    params, optimizers, w2c, K = gaussians_and_optimizers(40)
    rgb, _ = render_and_backward(params, w2c, K)
    rgb.square().mean().backward()
    for opt in optimizers.values():
        opt.step()
    state = {"grad2d": torch.arange(40.0), "count": torch.arange(40.0) * 2, "radii": torch.rand(40), "scene_scale": 1.0}
    mask = torch.zeros(40, dtype=torch.bool)
    mask[[0, 7, 8, 39]] = True
    before = {name: (params[name].detach().clone(), optimizers[name].state[params[name]]["exp_avg"].clone(),
                     optimizers[name].state[params[name]]["exp_avg_sq"].clone()) for name in NAMES}
    grad2d = state["grad2d"].clone()

    remove_gaussians(params, optimizers, state, mask)
    for name in NAMES:
        value, exp_avg, exp_avg_sq = before[name]
        param = params[name]
        assert torch.equal(param.detach(), value[~mask])
        assert optimizers[name].param_groups[0]["params"][0] is param
        assert torch.equal(optimizers[name].state[param]["exp_avg"], exp_avg[~mask])
        assert torch.equal(optimizers[name].state[param]["exp_avg_sq"], exp_avg_sq[~mask])
    assert torch.equal(state["grad2d"], grad2d[~mask]) and state["count"].shape == (36,)
    assert state["scene_scale"] == 1.0

    with pytest.raises(ValueError, match="36 entries"):
        remove_gaussians(params, optimizers, state, torch.zeros(40, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        remove_gaussians(params, optimizers, state, torch.zeros(36))


def test_default_strategy_grows_every_visible_gaussian_on_cpu():
    n = 30
    params, optimizers, w2c, K = gaussians_and_optimizers(n, seed=1)
    with torch.no_grad():
        params["means"][:6, 2] = -1.0  # behind the camera: not visible, so not grown
    # grow_grad2d = 0 and nothing pruned: each visible Gaussian with a gradient is duplicated or split (+1 each)
    strategy = DefaultStrategy(refine_start_iter=0, refine_every=1, reset_every=10**6, grow_grad2d=0.0,
                               prune_opa=0.0, prune_scale3d=1e9, grow_scale3d=0.01)
    state = strategy.initialize_state(scene_scale=1.0)
    rgb, meta = render_and_backward(params, w2c, K)
    assert set(meta) >= {"means2d", "radii", "width", "height", "n_cameras", "gaussian_ids"}
    strategy.step_pre_backward(params, optimizers, state, 1, meta)
    rgb.square().mean().backward()
    grows = int(((meta["radii"][0] > 0).all(-1) & (meta["means2d"].grad[0].norm(dim=-1) > 0)).sum())
    assert grows == n - 6
    strategy.step_post_backward(params, optimizers, state, 1, meta)
    assert all(len(params[name]) == n + grows for name in NAMES)
    for name in NAMES:
        assert optimizers[name].param_groups[0]["params"][0] is params[name]
