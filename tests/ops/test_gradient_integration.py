"""The gradient-integration op: the forward solve and its implicit backward against a dense direct solve of
explicitly assembled matrices (:mod:`ops.reference.gradient_integration`, float64), exact adjoints, exact recovery,
the multigrid preconditioner, gradcheck, and the solver statistics."""

from __future__ import annotations

import pytest
import torch

from ops import gradient_integration as integ
from ops.gradient_integration import (
    _apply_normal_operator,
    _conjugate_gradient,
    _grad_adjoint,
    _grad_op,
    _MultigridPreconditioner,
    _normal_diagonal,
    _normal_rhs,
    _pool,
    _pool_adjoint,
    integrate_gradients,
)
from ops.reference.gradient_integration import difference_matrix, integrate_gradients_reference, pooling_matrix

F64 = torch.float64


def _problem(b=2, h=8, w=8, scales=3, seed=0, density=0.3, dtype=F64):
    """Random inputs: positive confidences (a few zeros), sparse points with weights in [1, 10]."""
    gen = torch.Generator().manual_seed(seed)
    grads, confs = [], []
    for s in range(scales):
        shape = (b, 2, h // 2**s, w // 2**s)
        grads.append(0.3 * torch.randn(shape, generator=gen, dtype=dtype))
        conf = 0.2 + torch.rand(shape, generator=gen, dtype=dtype)
        confs.append(torch.where(torch.rand(shape, generator=gen, dtype=dtype) < 0.1, torch.zeros_like(conf), conf))
    mask = torch.rand(b, 1, h, w, generator=gen, dtype=dtype) < density
    mask[:, :, 0, 0] = True
    z = torch.where(mask, 1.0 + torch.randn(b, 1, h, w, generator=gen, dtype=dtype), torch.zeros(b, 1, h, w,
                                                                                                   dtype=dtype))
    a = mask.to(dtype) * (1.0 + 9.0 * torch.rand(b, 1, h, w, generator=gen, dtype=dtype))
    prior = torch.full((b, 1, h, w), 1.5, dtype=dtype)
    return grads, confs, z, a, prior


def _dense_matrix(confs, a, lam):
    """M as a dense (B, N, N) matrix, by applying the operator to the identity columns."""
    b, _, h, w = a.shape
    n = h * w
    eye = torch.eye(n, dtype=a.dtype).reshape(n, 1, h, w)
    cols = []
    for i in range(b):
        batch = [c[i : i + 1].expand(n, -1, -1, -1) for c in confs]
        cols.append(_apply_normal_operator(eye, batch, a[i : i + 1].expand(n, -1, -1, -1), lam).reshape(n, n).T)
    return torch.stack(cols)


def _dense_solve(grads, confs, z, a, prior, lam):
    """The reference: a dense direct solve of the explicitly assembled normal equations."""
    return integrate_gradients_reference(grads, confs, z, a, prior, lam)


def _inner(u, v):
    return float((u * v).sum())


def test_adjoints_are_exact():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 16, 24, generator=gen, dtype=F64)
    g = torch.randn(3, 2, 16, 24, generator=gen, dtype=F64)
    lhs, rhs = _inner(_grad_op(x), g), _inner(x, _grad_adjoint(g))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))
    d = _grad_op(x)
    assert d.shape == (3, 2, 16, 24)
    assert torch.all(d[:, 0, :, -1] == 0) and torch.all(d[:, 1, -1, :] == 0)
    assert torch.equal(d[:, 0, :, :-1], x[:, 0, :, 1:] - x[:, 0, :, :-1])
    assert torch.equal(d[:, 1, :-1], x[:, 0, 1:] - x[:, 0, :-1])
    for s in (1, 2, 3):
        y = torch.randn(3, 1, 16 // 2**s, 24 // 2**s, generator=gen, dtype=F64)
        lhs, rhs = _inner(_pool(x, s), y), _inner(x, _pool_adjoint(y, s))
        assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))
        assert torch.allclose(_pool(x, s), torch.nn.functional.avg_pool2d(x, 2**s))
    assert _pool(x, 0) is x and _pool_adjoint(x, 0) is x


def test_operator_is_the_normal_matrix_and_the_diagonal_is_exact():
    grads, confs, z, a, prior = _problem(b=2, h=8, w=8, scales=3)
    lam = 1e-3
    x = torch.randn(2, 1, 8, 8, dtype=F64)
    naive = (a + lam) * x
    for s, w in enumerate(confs):
        naive = naive + _pool_adjoint(_grad_adjoint(w * _grad_op(_pool(x, s))), s)
    assert torch.allclose(_apply_normal_operator(x, confs, a, lam), naive, rtol=0, atol=1e-12)
    m = _dense_matrix(confs, a, lam)
    explicit = [difference_matrix(8 // 2**s, 8 // 2**s) @ pooling_matrix(8, 8, s) for s in range(3)]
    for i in range(2):  # the operator is the reference's explicitly assembled M
        m_ref = torch.diag(a[i].flatten()) + lam * torch.eye(64, dtype=F64)
        for dp, w in zip(explicit, confs):
            m_ref = m_ref + dp.T @ (w[i].flatten()[:, None] * dp)
        assert torch.allclose(m[i], m_ref, rtol=0, atol=1e-14)
    assert torch.allclose(m, m.transpose(1, 2), rtol=0, atol=1e-14)
    assert torch.linalg.eigvalsh(m).min() > 0
    diag = _normal_diagonal(confs, a, lam)
    assert torch.allclose(diag.flatten(1), torch.diagonal(m, dim1=1, dim2=2), rtol=0, atol=1e-14)
    # b is the gradient of E at 0 (up to the sign and a factor 2): E(x) = x^T M x - 2 b^T x + const
    rhs = _normal_rhs(grads, confs, z, a, prior, lam)
    x = torch.zeros_like(z, requires_grad=True)
    energy = (a * (x - z) ** 2).sum() + lam * ((x - prior) ** 2).sum()
    for s, (g, w) in enumerate(zip(grads, confs)):
        energy = energy + (w * (_grad_op(_pool(x, s)) - g) ** 2)[:, 0, :, :-1].sum()
        energy = energy + (w * (_grad_op(_pool(x, s)) - g) ** 2)[:, 1, :-1, :].sum()
    (grad,) = torch.autograd.grad(energy, x)
    assert torch.allclose(-grad / 2, rhs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("preconditioner", ["multigrid", "jacobi", "none"])
@pytest.mark.parametrize("coarse_to_fine", [True, False])
def test_solution_matches_a_dense_direct_solve(preconditioner, coarse_to_fine):
    grads, confs, z, a, prior = _problem(b=2, h=8, w=8, scales=3)
    lam = 1e-3
    expected = _dense_solve(grads, confs, z, a, prior, lam)
    stats = {}
    x = integrate_gradients(grads, confs, z, a, prior, lam=lam, iters=1000, tol=1e-14, preconditioner=preconditioner,
                        coarse_to_fine=coarse_to_fine, stats=stats)
    assert torch.allclose(x, expected, rtol=0, atol=1e-9), (x - expected).abs().max()
    assert bool(stats["converged"].all())
    assert ("coarse" in stats) == coarse_to_fine


def test_exact_recovery_of_a_known_field():
    h, w, scales = 32, 48, 3
    v, u = torch.meshgrid(torch.arange(h, dtype=F64), torch.arange(w, dtype=F64), indexing="ij")
    truth = (2.0 + 0.5 * torch.sin(u / 7) * torch.cos(v / 5) + 0.01 * u + 0.3 * (u > 30)).expand(2, 1, h, w)
    truth = truth + 0.05 * torch.randn(2, 1, h, w, dtype=F64, generator=torch.Generator().manual_seed(3))
    grads = [_grad_op(_pool(truth, s)) for s in range(scales)]
    confs = [0.5 + torch.rand(2, 2, h // 2**s, w // 2**s, dtype=F64) for s in range(scales)]
    mask = torch.rand(2, 1, h, w, dtype=F64) < 0.02
    mask[:, :, 5, 7] = True
    z = torch.where(mask, truth, torch.zeros_like(truth))
    a = 10.0 * mask.to(F64)
    # lam = 0: the observations fix the constant; lam > 0 with the truth as the prior is consistent too
    for lam, prior in [(0.0, torch.zeros(2, 1, 1, 1, dtype=F64)), (1e-3, truth)]:
        x = integrate_gradients(grads, confs, z, a, prior, lam=lam, iters=2000, tol=1e-14)
        assert torch.allclose(x, truth, rtol=0, atol=1e-8), (lam, (x - truth).abs().max())


def test_coarse_problem_restricts_exact_data_exactly():
    """With exact gradients at every scale and every pixel observed with the same weight, the coarse problem's
    solution is the block mean of the truth: the restriction of the gradients (sums of fine differences) and of the
    observations (block sums) is exact."""
    h, w, scales = 16, 32, 3
    truth = torch.randn(2, 1, h, w, dtype=F64).cumsum(-1).cumsum(-2) / 10
    grads = [_grad_op(_pool(truth, s)) for s in range(scales)]
    confs = [0.5 + torch.rand(2, 2, h // 2**s, w // 2**s, dtype=F64) for s in range(scales)]
    a = torch.ones_like(truth)
    lam, prior = 1e-3, _pool_adjoint(_pool(truth, 2), 2) * 16
    mg = _MultigridPreconditioner(confs, a, lam, min_levels=3)
    rhs = integ._coarse_rhs(grads, confs, truth, a, prior, lam)
    y, _ = _conjugate_gradient(mg.operator(2), rhs, None, 500, 1e-14, precond=mg.precondition(2))
    assert torch.allclose(y, _pool(truth, 2), rtol=0, atol=1e-10)
    # the level-2 system is the fine one with x = the nearest upsampling of y for a piecewise constant x
    confs_2, weight_2, lam_2, _ = mg.levels[2]
    assert len(confs_2) == 1
    assert torch.allclose(confs_2[0], _pool(confs[0], 2) + _pool(confs[1], 1) + confs[2], rtol=0, atol=1e-12)
    assert torch.allclose(weight_2, _pool(a, 2) * 16) and lam_2 == 16 * lam


def test_prolongation_and_restriction_are_adjoint_on_odd_sizes():
    gen = torch.Generator().manual_seed(12)
    for h, w in [(6, 10), (7, 5), (3, 8)]:
        c = torch.randn(2, 1, (h + 1) // 2, (w + 1) // 2, generator=gen, dtype=F64)
        f = torch.randn(2, 1, h, w, generator=gen, dtype=F64)
        up = integ._prolong(c, (h, w))
        assert up.shape == f.shape
        assert abs(_inner(up, f) - _inner(c, integ._restrict(f))) < 1e-12
    c = torch.randn(1, 1, 3, 5, dtype=F64)
    bilinear = torch.nn.functional.interpolate(c, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.equal(integ._prolong(c, (6, 10)), bilinear)


@pytest.mark.parametrize("shape", [(8, 8), (12, 20), (20, 12)])
def test_multigrid_preconditioner_is_symmetric_positive_definite(shape):
    h, w = shape
    _, confs, _, a, _ = _problem(b=2, h=h, w=w, scales=3, seed=13)
    mg = _MultigridPreconditioner(confs, a, 1e-3, max_direct=4)  # levels down to 2 x 2 (odd sizes padded)
    assert mg.num_levels >= 3
    n = h * w
    eye = torch.eye(n, dtype=F64).reshape(n, 1, h, w)
    for i in range(2):
        sub = _MultigridPreconditioner([c[i : i + 1].expand(n, -1, -1, -1) for c in confs],
                                      a[i : i + 1].expand(n, -1, -1, -1), 1e-3, max_direct=4)
        mat = sub(eye).reshape(n, n)
        assert torch.allclose(mat, mat.T, rtol=0, atol=1e-12)
        assert torch.linalg.eigvalsh(mat).min() > 0
    # PCG with it solves the system
    grads, confs, z, a, prior = _problem(b=2, h=h, w=w, scales=3, seed=13)
    b = _normal_rhs(grads, confs, z, a, prior, 1e-3)
    x, stats = _conjugate_gradient(lambda v: _apply_normal_operator(v, confs, a, 1e-3), b, None, 200, 1e-13, precond=mg)
    assert torch.allclose(x, _dense_solve(grads, confs, z, a, prior, 1e-3), rtol=0, atol=1e-9)
    assert stats["total_iterations"] < 40


def test_implicit_backward_matches_finite_differences():
    """gradcheck's fast mode (random projections of the Jacobian against finite differences); every input's exact
    gradient is checked against the dense reference in test_forward_and_gradients_match_the_reference."""
    grads, confs, z, a, prior = _problem(b=1, h=4, w=4, scales=2, seed=4, density=0.5)
    n = len(grads)
    inputs = [t.clone().requires_grad_() for t in (z, a, prior, *grads, *confs)]

    def fn(z, a, prior, *scales):
        return integrate_gradients(list(scales[:n]), list(scales[n:]), z, a, prior, lam=1e-2, iters=500, tol=1e-13)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


def test_implicit_backward_three_scales_fast_gradcheck():
    grads, confs, z, a, prior = _problem(b=2, h=8, w=8, scales=3, seed=5)
    n = len(grads)
    inputs = [t.clone().requires_grad_() for t in (z, a, prior, *grads, *confs)]

    def fn(z, a, prior, *scales):
        return integrate_gradients(list(scales[:n]), list(scales[n:]), z, a, prior, lam=1e-3, iters=1000, tol=1e-13)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("coarse_to_fine", [False, True])
def test_forward_and_gradients_match_the_reference(coarse_to_fine):
    """Parity with the dense direct solve in float64, to 1e-9: the solution, and the gradients of a random linear
    function of it with respect to every input (the op's implicit backward against autograd through
    ``torch.linalg.solve``), with a broadcast (B, 1, 1, 1) prior and an odd-shaped grid."""
    grads, confs, z, a, _ = _problem(b=2, h=8, w=12, scales=3, seed=6)
    lam = 1e-2
    prior = torch.tensor([1.0, 2.0], dtype=F64).view(2, 1, 1, 1)
    v = torch.randn(2, 1, 8, 12, generator=torch.Generator().manual_seed(1), dtype=F64)
    results = []
    for solve in ("ours", "reference"):
        inputs = [t.clone().requires_grad_() for t in (z, a, prior, *grads, *confs)]
        zi, ai, pi, *scales = inputs
        if solve == "ours":
            x = integrate_gradients(scales[:3], scales[3:], zi, ai, pi, lam=lam, iters=1000, tol=1e-14,
                                    coarse_to_fine=coarse_to_fine, backward_tol=1e-14)
        else:
            x = integrate_gradients_reference(scales[:3], scales[3:], zi, ai, pi, lam)
        (x * v).sum().backward()
        results.append((x.detach(), [t.grad for t in inputs]))
    (x, grads_ours), (x_ref, grads_ref) = results
    torch.testing.assert_close(x, x_ref, rtol=0, atol=1e-9)
    names = ["observations", "observation_weight", "prior"] + [f"gradients[{s}]" for s in range(3)] + \
        [f"confidences[{s}]" for s in range(3)]
    for name, ours, ref in zip(names, grads_ours, grads_ref):
        assert ours.shape == ref.shape, name
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9, msg=name)
    # the ignored entries (past the last column / row) get no gradient
    for g in grads_ours[3:]:
        assert torch.all(g[:, 0, :, -1] == 0) and torch.all(g[:, 1, -1, :] == 0)


def test_backward_tol_sets_the_backward_solve_only():
    """``backward_tol`` stops the implicit backward solve at its own relative residual, checked against the dense
    matrix (``u`` read from the prior's gradient, ``lam u``); the forward solve keeps ``tol``."""
    grads, confs, z, a, prior = _problem(b=2, h=16, w=16, scales=3, seed=11)
    lam = 1e-2
    v = torch.randn(z.shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    m = _dense_matrix(confs, a, lam)
    results = {}
    for backward_tol in (None, 1e-3):
        p = prior.clone().requires_grad_()
        stats = {}
        x = integrate_gradients(grads, confs, z, a, p, lam=lam, iters=1000, tol=1e-12, stats=stats,
                                backward_tol=backward_tol)
        (x * v).sum().backward()
        u = p.grad / lam
        residual = torch.stack([(v.flatten(1)[i] - m[i] @ u.flatten(1)[i]).norm() / v.flatten(1)[i].norm()
                                for i in range(2)])
        results[backward_tol] = (x.detach(), residual, stats["backward"]["total_iterations"])
    assert torch.equal(results[None][0], results[1e-3][0])  # the forward solve does not see it
    assert bool((results[None][1] < 1e-11).all())
    assert bool((results[1e-3][1] < 1e-3).all()) and bool((results[1e-3][1] > 1e-6).any())  # stopped there, not later
    assert results[1e-3][2] < results[None][2]
    with pytest.raises(ValueError, match="backward_tol"):
        integrate_gradients(grads, confs, z, a, prior, backward_tol=0.0)


def _graph_size(t):
    seen, todo = set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo.extend(fn for fn, _ in node.next_functions)
    return len(seen)


@pytest.mark.parametrize("preconditioner", ["multigrid", "jacobi"])
def test_backward_is_one_implicit_solve_not_unrolled(monkeypatch, preconditioner):
    grads, confs, z, a, prior = _problem(b=2, h=16, w=16, scales=3, seed=7)
    grads = [g.requires_grad_() for g in grads]
    calls = {"n": 0}
    original = integ._apply_normal_operator

    def counting(x, *args, **kwargs):
        calls["n"] += x.shape == z.shape  # full-resolution applications (not the multigrid levels)
        return original(x, *args, **kwargs)

    monkeypatch.setattr(integ, "_apply_normal_operator", counting)
    sizes = []
    for iters, tol in [(3, 1e-30), (400, 1e-12)]:
        stats = {}
        calls["n"] = 0
        x = integrate_gradients(grads, confs, z, a, prior, iters=iters, tol=tol, preconditioner=preconditioner,
                            coarse_to_fine=False, stats=stats)
        assert calls["n"] == stats["operator_calls"] == stats["total_iterations"] + 1  # + the initial residual
        assert type(x.grad_fn).__name__ == "_IntegrateBackward"
        sizes.append(_graph_size(x))
        calls["n"] = 0
        x.square().sum().backward()
        back = stats["backward"]
        assert calls["n"] == back["operator_calls"] == back["total_iterations"]  # a zero start: no extra residual
        assert 0 < back["total_iterations"] <= iters
    assert sizes[0] == sizes[1] <= 1 + len(grads)  # the solve node and the leaves' accumulators


def test_batched_convergence_stats():
    grads, confs, z, a, prior = _problem(b=3, h=8, w=8, scales=3, seed=8)
    exact = _dense_solve(grads, confs, z, a, prior, 1e-3)
    x_init = prior.clone()
    x_init[0] = exact[0]  # item 0 starts at its solution
    stats = {}
    x = integrate_gradients(grads, confs, z, a, prior, x_init=x_init, iters=1000, tol=1e-12, stats=stats)
    assert torch.allclose(x, exact, rtol=0, atol=1e-9)
    assert stats["iterations"][0] == 0 and bool((stats["iterations"][1:] > 0).all())
    assert stats["total_iterations"] == int(stats["iterations"].max())
    assert bool(stats["converged"].all()) and bool((stats["relative_residual"] < 1e-12).all())
    # every item is solved on its own: the batch is the concatenation of single solves
    single = integrate_gradients([g[2:] for g in grads], [c[2:] for c in confs], z[2:], a[2:], prior[2:], iters=1000,
                             tol=1e-12)
    assert torch.allclose(x[2:], single, rtol=0, atol=1e-9)
    # a budget too small to converge
    stats = {}
    integrate_gradients(grads, confs, z, a, prior, iters=2, tol=1e-12, coarse_to_fine=False, stats=stats)
    assert stats["iterations"].tolist() == [2, 2, 2] and not bool(stats["converged"].any())


def test_preconditioners_reduce_the_iterations():
    grads, confs, z, a, prior = _problem(b=2, h=16, w=16, scales=3, seed=9)
    lam = 1e-3
    b = _normal_rhs(grads, confs, z, a, prior, lam)
    expected = _dense_solve(grads, confs, z, a, prior, lam)
    its = []
    for precond in ({}, {"precond_diag": _normal_diagonal(confs, a, lam)}, {"precond": _MultigridPreconditioner(
            confs, a, lam)}):
        x, stats = _conjugate_gradient(lambda v: _apply_normal_operator(v, confs, a, lam), b, None, 2000, 1e-13,
                                      **precond)
        assert torch.allclose(x, expected, rtol=0, atol=1e-9)
        its.append(stats["total_iterations"])
    assert its[2] < its[1] < its[0]
    # a larger, sparser problem: multigrid needs a fraction of the Jacobi iterations
    grads, confs, z, a, prior = _problem(b=1, h=64, w=128, scales=3, seed=9, density=0.002, dtype=torch.float32)
    counts = {}
    for kind in ("jacobi", "multigrid"):
        stats = {}
        integrate_gradients(grads, confs, z, a, prior, tol=1e-5, iters=1000, preconditioner=kind, coarse_to_fine=False,
                        stats=stats)
        assert bool(stats["converged"].all())
        counts[kind] = stats["total_iterations"]
    assert counts["multigrid"] * 3 < counts["jacobi"], counts


def test_float32_and_half_inputs():
    grads, confs, z, a, prior = _problem(b=2, h=16, w=32, scales=3, seed=10)
    expected = _dense_solve(grads, confs, z, a, prior, 1e-3)
    g32 = [g.float().requires_grad_() for g in grads]
    stats = {}
    x = integrate_gradients(g32, [c.float() for c in confs], z.float(), a.float(), prior.float(), lam=1e-3,
                            iters=500, tol=1e-6, stats=stats)
    assert x.dtype == torch.float32 and torch.allclose(x.double(), expected, atol=1e-4)
    assert bool(stats["converged"].all()) and "backward" not in stats
    x.sum().backward()
    assert "backward" in stats and g32[0].grad.shape == grads[0].shape
    x16 = integrate_gradients([g.half() for g in grads], [c.half() for c in confs], z.half(), a.half(), prior.half(),
                              lam=1e-3, iters=500, tol=1e-6)
    assert x16.dtype == torch.float16 and torch.allclose(x16.double(), expected, atol=1e-2)


def test_bad_inputs_raise_value_error():
    grads, confs, z, a, prior = _problem(b=2, h=8, w=8, scales=3)
    with pytest.raises(ValueError, match="divisible"):
        g, c, z6, a6, p6 = _problem(b=1, h=10, w=8, scales=3)
        integrate_gradients(g, c, z6, a6, p6)
    with pytest.raises(ValueError, match="one confidence per gradient"):
        integrate_gradients(grads, confs[:2], z, a, prior)
    with pytest.raises(ValueError, match=r"gradients\[1\]"):
        integrate_gradients([grads[0], grads[1][..., :3], grads[2]], confs, z, a, prior)
    with pytest.raises(ValueError, match=r"confidences\[0\]"):
        integrate_gradients(grads, [confs[0][:, :1], *confs[1:]], z, a, prior)
    with pytest.raises(ValueError, match="observation_weight"):
        integrate_gradients(grads, confs, z, a[:1], prior)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        integrate_gradients(grads, confs, z[:, 0], a, prior)
    with pytest.raises(ValueError, match="prior"):
        integrate_gradients(grads, confs, z, a, prior[..., :3])
    with pytest.raises(ValueError, match="x_init"):
        integrate_gradients(grads, confs, z, a, prior, x_init=prior[:1])
    with pytest.raises(ValueError, match="float32"):
        integrate_gradients(grads, confs, z, a.float(), prior)
    with pytest.raises(ValueError, match="lam"):
        integrate_gradients(grads, confs, z, a, prior, lam=-1.0)
    with pytest.raises(ValueError, match="preconditioner"):
        integrate_gradients(grads, confs, z, a, prior, preconditioner="ilu")


@pytest.mark.cuda
def test_cuda_matches_cpu():
    """The same solve and implicit backward on CUDA tensors (float64): the solution and every input's gradient."""
    grads, confs, z, a, prior = _problem(b=2, h=32, w=64, scales=3, seed=11)
    v = torch.randn(z.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    results = []
    for device in ("cpu", "cuda"):
        inputs = [t.to(device).requires_grad_() for t in (z, a, prior, *grads, *confs)]
        x = integrate_gradients(inputs[3:6], inputs[6:], *inputs[:3], iters=1000, tol=1e-12)
        (x * v.to(device)).sum().backward()
        results.append([x.detach().cpu(), *(t.grad.cpu() for t in inputs)])
    for cpu, gpu in zip(*results):
        torch.testing.assert_close(gpu, cpu, rtol=0, atol=1e-9)
