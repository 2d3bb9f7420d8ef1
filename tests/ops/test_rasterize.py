"""Parity tests of ops.rasterize (CPU tile rasterizer) against the dense reference, gradcheck and gsplat."""

from __future__ import annotations

import math

import pytest
import torch

from ops.raster.composite import composite
from ops.raster.tiles import bin_gaussians
from ops.rasterize import rasterize_gaussians
from ops.reference.rasterize import composite_reference, project_reference, rasterize_reference

WIDTH, HEIGHT = 40, 32


def make_cameras(n_cams: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, 4, 4) world-to-camera (camera 0 at the origin, the others turned about y) and (C, 3, 3) K."""
    w2c = torch.eye(4, dtype=dtype).repeat(n_cams, 1, 1)
    for c in range(1, n_cams):
        angle = 0.15 * c
        w2c[c, 0, 0], w2c[c, 0, 2], w2c[c, 2, 0], w2c[c, 2, 2] = (
            math.cos(angle), math.sin(angle), -math.sin(angle), math.cos(angle))
        w2c[c, :3, 3] = torch.tensor([-0.3 * c, 0.1, 0.2], dtype=dtype)
    K = torch.tensor([[36.0, 0.0, 20.0], [0.0, 36.0, 16.0], [0.0, 0.0, 1.0]], dtype=dtype)
    return w2c, K.repeat(n_cams, 1, 1)


def make_scene(n: int, dtype=torch.float64, seed: int = 0, sh_degree: int | None = None, n_cams: int = 2):
    """Random Gaussians in a box 2-5 m in front of the cameras: a dict of leaf tensors requiring grad."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) * 2 - 1) * torch.tensor([1.2, 1.0, 1.5], dtype=dtype)
    means[:, 2] += 3.5
    scales = torch.exp(torch.empty(n, 3, dtype=dtype).uniform_(math.log(0.03), math.log(0.3), generator=g))
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=g, dtype=dtype)
    else:
        colors = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=dtype) * 0.4
    scene = {
        "means": means,
        "quats": torch.randn(n, 4, generator=g, dtype=dtype),
        "scales": scales,
        "opacities": torch.rand(n, generator=g, dtype=dtype) * 0.95 + 0.04,
        "colors": colors,
        "backgrounds": torch.rand(n_cams, 3, generator=g, dtype=dtype),
    }
    # five near, large, nearly opaque Gaussians: pixels behind them terminate early, alpha clamps at 0.999
    scene["opacities"][:5] = 0.9999
    scene["means"][:5, 2] = 2.5
    scene["scales"][:5] = 0.15
    return {k: v.requires_grad_(True) for k, v in scene.items()}


def render_both(scene, n_cams=2, **kwargs):
    w2c, K = make_cameras(n_cams, scene["means"].dtype)
    args = [scene[k] for k in ("means", "quats", "scales", "opacities", "colors")] + [w2c, K, WIDTH, HEIGHT]
    ours = rasterize_gaussians(*args, backgrounds=scene["backgrounds"], **kwargs)
    ref = rasterize_reference(*args, backgrounds=scene["backgrounds"], **kwargs)
    return ours, ref


def grads(outputs, inputs: dict, seed: int = 1) -> dict:
    """Gradients of a fixed random linear loss of (render, alpha) w.r.t. every input."""
    render, alpha = outputs[0], outputs[1]
    g = torch.Generator().manual_seed(seed)
    loss = (render * torch.rand(render.shape, generator=g, dtype=render.dtype)).sum()
    loss = loss + (alpha * torch.rand(alpha.shape, generator=g, dtype=alpha.dtype)).sum()
    values = torch.autograd.grad(loss, list(inputs.values()))
    return dict(zip(inputs, values))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-wise relative error of a against the reference b."""
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-30))


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_matches_reference(dtype):
    scene = make_scene(200, dtype=dtype)
    (render, alpha, _), (ref_render, ref_alpha) = render_both(scene, render_mode="RGB+D")
    assert render.shape == (2, HEIGHT, WIDTH, 4) and alpha.shape == (2, HEIGHT, WIDTH, 1)
    assert render.dtype == dtype and alpha.dtype == dtype
    assert float(alpha.detach().max()) > 0.999 and float(alpha.detach().min()) < 0.5  # opaque and clear
    assert max_abs(render[..., :3], ref_render[..., :3]) <= 1e-4
    assert max_abs(alpha, ref_alpha) <= 1e-4
    assert max_abs(render[..., 3], ref_render[..., 3]) <= 1e-4  # accumulated depth, metres


def test_gradients_match_reference():
    scene = make_scene(150)
    ours, ref = render_both(scene, render_mode="RGB+D")
    g_ours, g_ref = grads(ours, scene), grads(ref, scene)
    for name in scene:
        assert float(g_ref[name].abs().max()) > 0, name
        assert rel_err(g_ours[name], g_ref[name]) <= 1e-3, name


@pytest.mark.parametrize("sh_degree", [1, 2, 3])
def test_sh_degrees_match_reference(sh_degree):
    scene = make_scene(100, sh_degree=sh_degree, seed=sh_degree)
    ours, ref = render_both(scene, sh_degree=sh_degree)
    assert max_abs(ours[0], ref[0]) <= 1e-4
    g_ours, g_ref = grads(ours, scene), grads(ref, scene)
    for name in scene:
        assert rel_err(g_ours[name], g_ref[name]) <= 1e-3, name
    # every SH band carries gradient
    assert float(g_ours["colors"][:, -1].abs().max()) > 0


def test_antialiased_matches_reference():
    scene = make_scene(100, seed=7)
    ours, ref = render_both(scene, rasterize_mode="antialiased")
    assert max_abs(ours[0], ref[0]) <= 1e-4
    g_ours, g_ref = grads(ours, scene), grads(ref, scene)
    for name in scene:
        assert rel_err(g_ours[name], g_ref[name]) <= 1e-3, name


def test_culled_gaussians_behind_far_and_outside():
    scene = make_scene(60, seed=3, n_cams=1)
    with torch.no_grad():
        scene["means"][0] = torch.tensor([0.0, 0.0, -2.0])  # behind the camera
        scene["means"][1] = torch.tensor([0.1, 0.0, 0.0])  # in the camera plane (z = 0)
        scene["means"][2] = torch.tensor([0.0, 0.0, 0.005])  # nearer than near_plane = 0.01
        scene["means"][3] = torch.tensor([0.0, 0.0, 60.0])  # beyond far_plane = 50
        scene["means"][4] = torch.tensor([40.0, 0.0, 3.0])  # far right of the image
        scene["means"][5] = torch.tensor([0.0, -30.0, 3.0])  # far above the image
    (render, alpha, meta), ref = render_both(scene, n_cams=1, far_plane=50.0)
    assert (meta["radii"][0, :6] == 0).all()
    assert (meta["radii"][0, 6:] > 0).any()
    assert max_abs(render, ref[0]) <= 1e-4
    g_ours, g_ref = grads((render, alpha), scene), grads(ref, scene)
    for name in scene:
        assert torch.isfinite(g_ours[name]).all(), name
        assert rel_err(g_ours[name], g_ref[name]) <= 1e-3, name
    assert (g_ours["means"][:6] == 0).all() and (g_ours["opacities"][:6] == 0).all()


def test_early_termination_and_alpha_clamp_by_hand():
    """Two opaque Gaussians centred on one pixel: the 2nd would take T to 1e-6 <= 1e-4, so it is not drawn."""
    w2c, K = make_cameras(1, torch.float64)
    z = torch.tensor([2.0, 2.5, 3.0], dtype=torch.float64)  # red in front, then green, then blue
    px, py = 20.5, 16.5  # centre of pixel (row 16, column 20)
    means = torch.stack([(px - 20.0) * z / 36.0, (py - 16.0) * z / 36.0, z], dim=-1)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64).repeat(3, 1)
    scales = torch.full((3, 3), 0.05, dtype=torch.float64)
    opacities = torch.tensor([0.9995, 0.9995, 0.5], dtype=torch.float64)
    colors = torch.eye(3, dtype=torch.float64)
    inputs = {"means": means, "quats": quats, "scales": scales, "opacities": opacities, "colors": colors}
    inputs = {k: v.requires_grad_() for k, v in inputs.items()}
    render, alpha, _ = rasterize_gaussians(*inputs.values(), w2c, K, WIDTH, HEIGHT)
    # alpha = min(0.999, 0.9995 * exp(0)) = 0.999; T after red = 1e-3; green would leave 1e-6: stop
    expect = torch.tensor([0.999, 0.0, 0.0], dtype=torch.float64)
    assert torch.allclose(render[0, 16, 20].detach(), expect, atol=1e-12)
    assert abs(float(alpha[0, 16, 20, 0].detach()) - 0.999) < 1e-12
    # empty pixels: no colour, no alpha
    assert float(render[0, 0, 0].detach().abs().max()) == 0.0 and float(alpha[0, 0, 0, 0].detach()) == 0.0
    # the clamped centre pixel passes no gradient to red's opacity or position; the reference agrees
    ref = rasterize_reference(*inputs.values(), w2c, K, WIDTH, HEIGHT)
    g_ours, g_ref = grads((render, alpha), inputs), grads(ref, inputs)
    for name in inputs:
        assert rel_err(g_ours[name], g_ref[name]) <= 1e-3, name


def test_gradcheck_composite_tiny():
    """torch.autograd.gradcheck of the numba forward/backward on fixed tile lists (float64)."""
    g = torch.Generator().manual_seed(5)
    n, width, height = 6, 12, 10
    means2d = torch.rand(1, n, 2, generator=g, dtype=torch.float64) * torch.tensor([12.0, 10.0])
    means2d.requires_grad_()
    a = torch.rand(1, n, generator=g, dtype=torch.float64) * 0.3 + 0.05
    c = torch.rand(1, n, generator=g, dtype=torch.float64) * 0.3 + 0.05
    b = (torch.rand(1, n, generator=g, dtype=torch.float64) - 0.5) * 0.5 * torch.sqrt(a * c)
    conics = torch.stack([a, b, c], dim=-1).requires_grad_()
    colors = torch.rand(1, n, 3, generator=g, dtype=torch.float64).requires_grad_()
    opacities = (torch.rand(1, n, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    depths = torch.rand(1, n, generator=g, dtype=torch.float64)
    radii = torch.full((1, n, 2), 12, dtype=torch.int32)
    bins = bin_gaussians(means2d.detach(), radii, depths, width, height, tile_size=4)

    def fn(m, q, col, o):
        return composite(m, q, col, o, bins, width, height)

    assert torch.autograd.gradcheck(
        fn, (means2d, conics, colors, opacities), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True
    )


def test_gradcheck_full_tiny():
    """gradcheck of the whole CPU path (projection, SH, tiles, compositing, background), float64."""
    scene = make_scene(5, seed=11, sh_degree=1, n_cams=1)
    w2c, K = make_cameras(1, torch.float64)
    names = ["means", "quats", "scales", "opacities", "colors", "backgrounds"]

    def fn(means, quats, scales, opacities, colors, backgrounds):
        render, alpha, _ = rasterize_gaussians(means, quats, scales, opacities, colors, w2c, K, 12, 10,
                                               sh_degree=1, backgrounds=backgrounds, render_mode="RGB+D")
        return render, alpha

    with torch.no_grad():  # move the Gaussians into the small 12 x 10 image
        scene["means"][:, 0] *= 0.25
        scene["means"][:, 1] *= 0.25
    inputs = tuple(scene[k].detach().clone().requires_grad_() for k in names)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_meta_matches_gsplat_conventions():
    scene = make_scene(120, seed=4)
    w2c, K = make_cameras(2, torch.float64)
    args = [scene[k] for k in ("means", "quats", "scales", "opacities", "colors")]
    render, alpha, meta = rasterize_gaussians(*args, w2c, K, WIDTH, HEIGHT)
    assert meta["radii"].shape == (2, 120, 2) and meta["radii"].dtype == torch.int32
    assert meta["means2d"].shape == (2, 120, 2) and meta["conics"].shape == (2, 120, 3)
    assert meta["depths"].shape == (2, 120) and meta["opacities"].shape == (2, 120)
    assert (meta["width"], meta["height"], meta["n_cameras"]) == (WIDTH, HEIGHT, 2)
    assert meta["gaussian_ids"] is None

    # radii: ceil(extent * sqrt(cov2d_ii)), extent = sqrt(2 ln(255 opacity)) (gsplat 1.5.3 CUDA, opacity < 1)
    means2d_ref, cov2d, _, _ = project_reference(*args[:3], w2c[1], K[1], WIDTH, HEIGHT)
    extent = torch.sqrt(2 * torch.log(255 * scene["opacities"]))
    expect = torch.ceil(extent[:, None] * torch.sqrt(torch.diagonal(cov2d, dim1=1, dim2=2))).detach()
    inside = ((means2d_ref + expect > 0) & (means2d_ref - expect < torch.tensor([WIDTH, HEIGHT]))).all(-1)
    assert inside.sum() > 50
    assert torch.equal(meta["radii"][1][inside].double(), expect[inside])
    assert (meta["radii"][1][~inside] == 0).all()

    # meta["means2d"].grad is the true dLoss/dmeans2d: compare with the dense compositor on the same 2D inputs
    loss_w = torch.rand(render.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (render * loss_w).sum().backward()
    for cam in range(2):
        vis = torch.nonzero((meta["radii"][cam] > 0).all(-1))[:, 0]
        m2d = meta["means2d"][cam, vis].detach().requires_grad_()
        a, b, c = meta["conics"][cam, vis].detach().unbind(-1)
        conic = torch.stack([torch.stack([a, b], -1), torch.stack([b, c], -1)], dim=1)
        ref, _ = composite_reference(m2d, conic, meta["opacities"][cam, vis].detach(), args[4][vis].detach(),
                                     meta["depths"][cam, vis].detach(), WIDTH, HEIGHT)
        (ref * loss_w[cam]).sum().backward()
        assert rel_err(meta["means2d"].grad[cam, vis], m2d.grad) <= 1e-6
        culled = torch.ones(120, dtype=torch.bool)
        culled[vis] = False
        assert (meta["means2d"].grad[cam, culled] == 0).all()


def test_default_strategy_runs_on_cpu():
    """gsplat's DefaultStrategy accumulates 2D-gradient stats from our meta and densifies."""
    from gsplat.strategy import DefaultStrategy

    scene = make_scene(80, dtype=torch.float32, seed=9)
    params = torch.nn.ParameterDict({
        "means": scene["means"].detach(),
        "scales": scene["scales"].detach().log(),
        "quats": scene["quats"].detach(),
        "opacities": torch.logit(scene["opacities"].detach()),
        "colors": scene["colors"].detach(),
    })
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    strategy = DefaultStrategy(refine_start_iter=0, refine_every=2, grow_grad2d=1e-9, grow_scale3d=0.1)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    w2c, K = make_cameras(2, torch.float32)
    target = torch.rand(2, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(0))
    visible_counts = torch.zeros(80)
    for step in range(3):
        render, _, meta = rasterize_gaussians(
            params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]),
            params["colors"], w2c, K, WIDTH, HEIGHT)
        strategy.step_pre_backward(params, optimizers, state, step, meta)
        (render - target).abs().mean().backward()
        if step < 2:
            visible_counts += (meta["radii"] > 0).all(-1).sum(0)
            assert meta["means2d"].grad is not None
        strategy.step_post_backward(params, optimizers, state, step, meta)
        if step == 1:
            assert torch.equal(state["count"], visible_counts)
            assert (state["grad2d"][visible_counts > 0] > 0).all()
            assert (state["grad2d"][visible_counts == 0] == 0).all()
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad()
    assert len(params["means"]) > 80  # step 2 duplicated / split the Gaussians with high 2D gradient


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"means": torch.zeros(10, 2)}, "means"),
        ({"quats": torch.zeros(9, 4)}, "quats"),
        ({"opacities": torch.zeros(10, 1)}, "opacities"),
        ({"colors": torch.zeros(10, 4, 3)}, "colors"),
        ({"K": torch.eye(3)}, "K"),
        ({"width": 0}, "width"),
        ({"render_mode": "D"}, "render_mode"),
        ({"sh_degree": 2, "colors": torch.zeros(10, 4, 3)}, "colors"),
        ({"backgrounds": torch.zeros(1, 4)}, "backgrounds"),
    ],
)
def test_bad_inputs_name_the_field(change, field):
    w2c, K = make_cameras(1, torch.float32)
    kwargs = dict(means=torch.zeros(10, 3), quats=torch.ones(10, 4), scales=torch.ones(10, 3),
                  opacities=torch.ones(10) * 0.5, colors=torch.zeros(10, 3), world_to_cam=w2c, K=K,
                  width=WIDTH, height=HEIGHT)
    kwargs.update(change)
    with pytest.raises(ValueError, match=field):
        rasterize_gaussians(**kwargs)


@pytest.mark.cuda
@pytest.mark.parametrize("sh_degree", [None, 3])
def test_cpu_matches_gsplat_cuda(sh_degree):
    scene = make_scene(300, dtype=torch.float32, seed=12, sh_degree=sh_degree)
    w2c, K = make_cameras(2, torch.float32)
    names = ["means", "quats", "scales", "opacities", "colors", "backgrounds"]

    def run(device):
        inputs = {k: scene[k].detach().to(device).requires_grad_() for k in names}
        render, alpha, meta = rasterize_gaussians(
            *[inputs[k] for k in names[:5]], w2c.to(device), K.to(device), WIDTH, HEIGHT, sh_degree=sh_degree,
            backgrounds=inputs["backgrounds"], render_mode="RGB+D")
        g = grads((render.cpu(), alpha.cpu()), inputs)
        g = {k: v.cpu() for k, v in g.items()}
        return render.detach().cpu(), alpha.detach().cpu(), meta["radii"].cpu(), g

    cpu, cuda = run("cpu"), run("cuda")
    assert torch.equal((cpu[2] > 0).all(-1), (cuda[2] > 0).all(-1))  # same culling
    assert int((cpu[2] - cuda[2]).abs().max()) <= 1  # radii: ceil() of float32 values may round apart
    assert float((cpu[0] - cuda[0]).abs().max()) <= 5e-4
    assert float((cpu[1] - cuda[1]).abs().max()) <= 5e-4
    for name in names:
        assert rel_err(cpu[3][name], cuda[3][name]) <= 5e-3, name
