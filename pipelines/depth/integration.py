"""The depth network's integration layer: multi-resolution log-depth gradients and sparse log-depths -> a dense
log-depth, by the op layer's :func:`ops.integrate_gradients` (the energy, the multigrid-preconditioned conjugate
gradients and the implicit backward are documented in :mod:`ops.gradient_integration`).

What the layer adds is the network's use of the solver: one set of solver settings, a looser tolerance in eval
mode (validation, prediction, ``geo3d complete``: no backward solve needs an accurate forward one there), and the
solver statistics of the last call for logging and tests.
"""

from __future__ import annotations

import torch
from torch import Tensor

import ops
from ops.gradient_integration import PRECONDITIONERS


class MultiResIntegration(torch.nn.Module):
    """The integration layer as a module (no parameters): ``forward`` returns the dense log-depth of
    :func:`ops.integrate_gradients`; ``last_stats`` holds the solver statistics of the last call (its ``"backward"``
    entry appears after the backward pass).

    Args:
        lam, iters, tol, preconditioner, coarse_to_fine: see :func:`ops.integrate_gradients` (``tol`` in training
            mode).
        eval_tol: the CG tolerance in eval mode (validation, prediction, inference); None: ``tol``. A looser
            tolerance there saves iterations where no backward solve needs an accurate forward one.
        backward_tol: the implicit backward solve's tolerance (see :func:`ops.integrate_gradients`); None: ``tol``.

    Example:
        >>> layer = MultiResIntegration(lam=1e-2, iters=100, tol=1e-4, eval_tol=1e-3)
        >>> layer
        MultiResIntegration(lam=0.01, iters=100, tol=0.0001, eval_tol=0.001, backward_tol=None, preconditioner='multigrid', coarse_to_fine=False)
    """  # noqa: E501 - the doctest's repr is one line

    def __init__(self, lam: float = 1e-3, iters: int = 200, tol: float = 1e-5, preconditioner: str = "multigrid",
                 coarse_to_fine: bool = False, eval_tol: float | None = None, backward_tol: float | None = None):
        super().__init__()
        if preconditioner not in PRECONDITIONERS:
            raise ValueError(f"preconditioner must be one of {PRECONDITIONERS}, got {preconditioner!r}")
        self.lam = lam
        self.iters = iters
        self.tol = tol
        self.eval_tol = eval_tol
        self.backward_tol = backward_tol
        self.preconditioner = preconditioner
        self.coarse_to_fine = coarse_to_fine
        self.last_stats: dict = {}

    def forward(self, gradients: list[Tensor], confidences: list[Tensor], sparse_log: Tensor, sparse_weight: Tensor,
                prior: Tensor, x_init: Tensor | None = None) -> Tensor:
        """Integrate.

        Args:
            gradients: ``S`` tensors ``(B, 2, H / 2^s, W / 2^s)``: log-depth forward differences (x, y) of the
                scale-``s`` (average pooled by ``2^s``) log-depth, log-metres per scale-``s`` pixel.
            confidences: ``S`` tensors ``>= 0`` shaped like ``gradients``.
            sparse_log: ``(B, 1, H, W)`` observed log-depth (any value where the weight is 0).
            sparse_weight: ``(B, 1, H, W)`` ``>= 0``, 0 where nothing is observed.
            prior: log-depth broadcastable to ``(B, 1, H, W)``, weighted by ``lam``.
            x_init: ``(B, 1, H, W)`` CG's start (None: ``prior``).

        Returns:
            The log-depth ``(B, 1, H, W)`` (log of metres).
        """
        self.last_stats = {}
        tol = self.tol if self.training or self.eval_tol is None else self.eval_tol
        return ops.integrate_gradients(gradients, confidences, sparse_log, sparse_weight, prior, lam=self.lam,
                                       iters=self.iters, tol=tol, x_init=x_init, preconditioner=self.preconditioner,
                                       coarse_to_fine=self.coarse_to_fine, stats=self.last_stats,
                                       backward_tol=self.backward_tol)

    def extra_repr(self) -> str:
        return (f"lam={self.lam}, iters={self.iters}, tol={self.tol}, eval_tol={self.eval_tol}, "
                f"backward_tol={self.backward_tol}, "
                f"preconditioner={self.preconditioner!r}, coarse_to_fine={self.coarse_to_fine}")
