"""The depth network's integration layer: it is :func:`ops.integrate_gradients` with the layer's settings (the op
itself is tested against a dense direct solve in tests/ops/test_gradient_integration.py)."""

from __future__ import annotations

import pytest
import torch

import ops
from pipelines.depth.integration import MultiResIntegration


def _problem(b=2, h=16, w=32, scales=3, seed=10):
    gen = torch.Generator().manual_seed(seed)
    grads = [0.3 * torch.randn(b, 2, h // 2**s, w // 2**s, generator=gen) for s in range(scales)]
    confs = [0.2 + torch.rand(b, 2, h // 2**s, w // 2**s, generator=gen) for s in range(scales)]
    mask = torch.rand(b, 1, h, w, generator=gen) < 0.2
    z = torch.where(mask, 1.0 + torch.randn(b, 1, h, w, generator=gen), torch.zeros(b, 1, h, w))
    return grads, confs, z, 5.0 * mask.float(), torch.full((b, 1, 1, 1), 1.5)


def test_the_layer_is_the_op_with_its_settings_and_eval_tol_in_eval_mode():
    grads, confs, z, a, prior = _problem()
    layer = MultiResIntegration(lam=1e-3, iters=500, tol=1e-6, eval_tol=1e-2, backward_tol=1e-3)
    assert repr(layer) == ("MultiResIntegration(lam=0.001, iters=500, tol=1e-06, eval_tol=0.01, backward_tol=0.001, "
                           "preconditioner='multigrid', coarse_to_fine=False)")
    for training, tol in ((True, 1e-6), (False, 1e-2)):
        layer.train(training)
        g = [t.clone().requires_grad_() for t in grads]
        x = layer(g, confs, z, a, prior)
        stats = {}
        expected = ops.integrate_gradients(grads, confs, z, a, prior, lam=1e-3, iters=500, tol=tol, stats=stats)
        assert torch.equal(x.detach(), expected)
        assert layer.last_stats["total_iterations"] == stats["total_iterations"]
        assert "backward" not in layer.last_stats
        x.sum().backward()
        backward = layer.last_stats["backward"]["relative_residual"]
        assert bool((backward < 1e-3).all()) and bool((backward > 1e-6).any())  # backward_tol, not tol
    with pytest.raises(ValueError, match="preconditioner"):
        MultiResIntegration(preconditioner="ilu")
