"""Multi-resolution gradient integration: a dense field from multi-scale gradients and sparse observations.

One op, :func:`integrate_gradients`: the field ``x`` that best agrees, in weighted least squares, with predicted
forward differences at several resolutions, with sparse observations of its values and with a weak prior (a
screened Poisson problem on an image pyramid), solved by preconditioned conjugate gradients and differentiated
implicitly. Depth completion (OMNI-DC) integrates log-depth gradients this way (``pipelines.depth``).

Unknown: ``x``, shape ``(B, 1, H, W)`` (any unit: log-metres for log-depth). Inputs, for ``S`` scales
``s = 0..S-1`` (scale ``s`` has resolution ``H_s x W_s = H / 2^s x W / 2^s``):

* ``g_s`` ``(B, 2, H_s, W_s)``: forward differences of the scale-``s`` field, channel 0 along x
  (``y[..., i, j+1] - y[..., i, j]``), channel 1 along y (``y[..., i+1, j] - y[..., i, j]``), and their
  confidences ``w_s >= 0`` (same shape). The scale-``s`` field is ``P_s x``, the average pooling of ``x``
  with kernel and stride ``2^s`` (``H`` and ``W`` must be divisible by ``2^(S-1)``; pad in the caller). The
  difference past the last column (channel 0) / row (channel 1) is undefined: those entries of ``g_s`` and
  ``w_s`` are ignored.
* sparse observations ``z`` ``(B, 1, H, W)`` with weights ``a >= 0`` (0 where there is none);
* a prior ``x0`` (e.g. a constant: the log of the median sparse depth) with a small Tikhonov weight ``lam >= 0``.

Energy (``D`` = forward differences with a zero last column/row, ``W_s = diag(w_s)``)::

    E(x) = sum_s || W_s^(1/2) (D P_s x - g_s) ||^2 + sum_i a_i (x_i - z_i)^2 + lam || x - x0 ||^2

Normal equations ``M x = b``::

    M = sum_s P_s^T D^T W_s D P_s + diag(a) + lam I
    b = sum_s P_s^T D^T W_s g_s + a * z + lam * x0

``M`` is symmetric positive semi-definite, and definite when ``lam > 0`` (or when every connected region of
positive gradient weight holds an observation). It is never formed: :func:`_apply_normal_operator` applies it with
slicing and pooling, and :func:`_conjugate_gradient` solves the system (batched, preconditioned).

Jacobi diagonal (analytic). ``P_s e_i = 4^-s e_p`` with ``p`` the coarse pixel holding ``i``, so
``(P_s^T D^T W_s D P_s)_ii = 16^-s (D^T W_s D)_pp``, and ``(D^T W D)_pp = sum_k w_k D_kp^2`` is the sum of the
weights of the (at most four) differences that touch ``p``: ``wx[p] + wx[p - (0, 1)] + wy[p] + wy[p - (1, 0)]``,
each only where that difference exists. Hence ``diag(M) = a + lam + sum_s 4^-s P_s^T (that sum at scale s)``.

Preconditioner. Jacobi alone leaves CG with the conditioning of a weighted Laplacian between the observations:
the iterations grow as the sparse points thin out (on 352 x 1216, to a 1e-4 relative residual: 34 iterations at
5 % density, 92 at 0.5 %, 184 at 0.05 %). The default is a multigrid preconditioner
(:class:`_MultigridPreconditioner`): levels of resolution ``H / 2^l`` whose operators are the problem restricted
to the coarser grid (the confidences of the scales at or below the level merged as block means, the sparse
weights and ``lam`` summed over the blocks: the same energy for smooth fields), bilinear prolongation and its
exact adjoint as restriction, a symmetric V(1, 1)-cycle with l1-Jacobi smoothing on the levels ``l >= 1`` and a
Cholesky solve on the coarsest (at most ``max_direct`` pixels), combined additively with Jacobi on the full
resolution: ``B r = diag(M)^-1 r + R^T V_1(R r)``. ``B`` is linear, symmetric and positive definite (each part
is), so plain PCG applies; it needs 12-17 iterations for the same residual at any of those densities (each costs
about 2.5 Jacobi-PCG iterations), and leaves a smaller error for a given residual.

Coarse-to-fine start (optional, off by default: with the multigrid preconditioner it saves a few iterations but
not time; with Jacobi it saves about a third). Without ``x_init`` the forward solve starts from the solution of
the problem restricted to the coarsest gradient scale ``L = S - 1`` (the multigrid level ``L``, solved by PCG
with the V-cycle), upsampled bilinearly. Its right-hand side restricts the data: a coarse difference of block
means is the block mean of the sums of ``2^(L-s)`` consecutive scale-``s`` differences (exact), merged over the
scales by the block-mean confidences, and the observations become block sums of ``a z``.

Implicit backward. With ``x = M^-1 b`` and an upstream gradient ``v = dL/dx``, let ``u = M^-1 v`` (one more CG
solve; ``M`` is symmetric). Then ``dL/db = u`` and ``dL/dM = -u x^T``, which gives, for every input::

    dL/dg_s   = W_s D P_s u                    b is linear in g_s: b = ... + P_s^T D^T W_s g_s
    dL/dw_s   = (D P_s u) * (g_s - D P_s x)    w_s,k is in b (g_s,k (P_s^T D^T)_:k) and in M (rank one, D P_s row k)
    dL/dz     = a * u                          b = ... + a * z
    dL/da     = u * (z - x)                    a is in b (a * z) and in M (diag(a))
    dL/dprior = lam * u                        b = ... + lam * x0

(For an input ``t`` of ``b`` and ``M``: ``dL/dt = u . (db/dt - (dM/dt) x)``.)

All of them are zero on the ignored last column/row of ``g_s`` / ``w_s`` (``D`` is zero there). The backward is
never unrolled through the CG iterations: the autograd graph holds a single node per integration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["integrate_gradients"]

PRECONDITIONERS = ("multigrid", "jacobi", "none")


# --------------------------------------------------------------------------------------------------------------
# linear operators


def _grad_op(x: Tensor) -> Tensor:
    """Forward differences ``D x``.

    Args:
        x: ``(B, C, H, W)``.

    Returns:
        ``(B, 2C, H, W)``: channels ``[:C]`` along x (``x[..., j+1] - x[..., j]``, last column 0), channels ``[C:]``
        along y (``x[..., i+1, :] - x[..., i, :]``, last row 0).
    """
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return torch.cat([dx, dy], dim=1)


def _grad_adjoint(g: Tensor) -> Tensor:
    """Exact adjoint ``D^T g`` of :func:`_grad_op` (a negative divergence).

    Args:
        g: ``(B, 2C, H, W)`` x-differences then y-differences; the last column of the x part and the last row of
            the y part are ignored (``D`` never writes them).

    Returns:
        ``(B, C, H, W)``.
    """
    c = g.shape[1] // 2
    gx = g[:, :c, :, :-1]
    gy = g[:, c:, :-1, :]
    return F.pad(gx, (1, 0)) - F.pad(gx, (0, 1)) + F.pad(gy, (0, 0, 1, 0)) - F.pad(gy, (0, 0, 0, 1))


def _pool2(x: Tensor) -> Tensor:
    """2 x 2 average pooling with strided slices (several times faster than ``avg_pool2d`` on CPU)."""
    return (x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2]) * 0.25


def _pool(x: Tensor, s: int) -> Tensor:
    """``P_s x``: average pooling with kernel and stride ``2^s``.

    Args:
        x: ``(B, C, H, W)``, ``H`` and ``W`` divisible by ``2^s``.
        s: the scale (0 is the identity).

    Returns:
        ``(B, C, H / 2^s, W / 2^s)``.
    """
    for _ in range(s):
        x = _pool2(x)
    return x


def _pool_adjoint(y: Tensor, s: int) -> Tensor:
    """Exact adjoint ``P_s^T y`` of :func:`_pool`: nearest upsampling by ``2^s`` divided by ``4^s``.

    Args:
        y: ``(B, C, h, w)``.
        s: the scale.

    Returns:
        ``(B, C, h * 2^s, w * 2^s)``.
    """
    if s == 0:
        return y
    return F.interpolate(y / 4**s, scale_factor=2**s, mode="nearest")


def _add_dtwd(out: Tensor, y: Tensor, w: Tensor) -> Tensor:
    """``out += D^T (w * D y)`` in place, with slices (no padding); ``y``/``out`` ``(B, 1, h, w)``, ``w``
    ``(B, 2, h, w)``."""
    t = (y[..., :, 1:] - y[..., :, :-1]) * w[:, 0:1, :, :-1]
    out[..., :, :-1] -= t
    out[..., :, 1:] += t
    t = (y[..., 1:, :] - y[..., :-1, :]) * w[:, 1:2, :-1, :]
    out[..., :-1, :] -= t
    out[..., 1:, :] += t
    return out


def _apply_normal_operator(x: Tensor, confidences: Sequence[Tensor], obs_weight: Tensor, lam: float) -> Tensor:
    """``M x = sum_s P_s^T D^T W_s D P_s x + (a + lam) x`` (see the module docstring).

    The scales are accumulated coarse to fine (``P_s`` is ``s`` nested 2x2 poolings, so
    ``sum_s P_s^T T_s P_s x = T_0 x_0 + P_1^T (T_1 x_1 + P_1^T (T_2 x_2 + ...))`` with ``x_s = P_s x``).

    Args:
        x: ``(B, 1, H, W)``.
        confidences: ``S`` tensors ``w_s`` ``(B, 2, H / 2^s, W / 2^s)``.
        obs_weight: ``a``, ``(B, 1, H, W)``.
        lam: the Tikhonov weight.

    Returns:
        ``(B, 1, H, W)``.
    """
    pooled = [x]
    for _ in range(1, len(confidences)):
        pooled.append(_pool2(pooled[-1]))
    acc = None
    for s in range(len(confidences) - 1, 0, -1):
        t = torch.zeros_like(pooled[s]) if acc is None else F.interpolate(acc, scale_factor=2, mode="nearest")
        acc = _add_dtwd(t, pooled[s], confidences[s]).mul_(0.25)
    out = (obs_weight + lam) * x
    if acc is not None:
        out += F.interpolate(acc, scale_factor=2, mode="nearest")
    return _add_dtwd(out, x, confidences[0])


def _normal_rhs(gradients: Sequence[Tensor], confidences: Sequence[Tensor], obs: Tensor, obs_weight: Tensor,
                prior: Tensor, lam: float) -> Tensor:
    """``b = sum_s P_s^T D^T W_s g_s + a z + lam x0``, ``(B, 1, H, W)`` (shapes as in :func:`integrate_gradients`)."""
    b = obs_weight * obs + lam * prior
    for s, (g, w) in enumerate(zip(gradients, confidences)):
        b = b + _pool_adjoint(_grad_adjoint(w * g), s)
    return b


def _touching_weights(w: Tensor) -> Tensor:
    """``(D^T diag(w) D)_pp``: the sum of the weights of the differences touching each pixel, ``(B, 1, h, w)``."""
    wx = w[:, 0:1, :, :-1]
    wy = w[:, 1:2, :-1, :]
    return F.pad(wx, (1, 0)) + F.pad(wx, (0, 1)) + F.pad(wy, (0, 0, 1, 0)) + F.pad(wy, (0, 0, 0, 1))


def _normal_diagonal(confidences: Sequence[Tensor], obs_weight: Tensor, lam: float) -> Tensor:
    """The exact diagonal of ``M``, computed analytically (derivation in the module docstring), ``(B, 1, H, W)``."""
    diag = obs_weight + lam
    for s, w in enumerate(confidences):
        diag = diag + _pool_adjoint(_touching_weights(w), s) / 4**s
    return diag


def _l1_diagonal(confidences: Sequence[Tensor], obs_weight: Tensor, lam: float) -> Tensor:
    """The absolute row sums of ``M`` (the l1-Jacobi smoother, convergent without damping): row ``i`` of
    ``P_s^T L P_s`` (``L = D^T W_s D``) has absolute sum ``4^-s sum_q |L_pq| = 2 * 4^-s L_pp``."""
    diag = obs_weight + lam
    for s, w in enumerate(confidences):
        diag = diag + 2 * _pool_adjoint(_touching_weights(w), s)
    return diag


# --------------------------------------------------------------------------------------------------------------
# multigrid preconditioner


def _prolong(c: Tensor, shape: Sequence[int]) -> Tensor:
    """Bilinear 2x upsampling (pixel centres, clamped borders) of ``(B, 1, h, w)`` cropped to ``shape`` (H, W)."""
    return F.interpolate(c, scale_factor=2, mode="bilinear", align_corners=False)[..., : shape[0], : shape[1]]


def _restrict(f: Tensor) -> Tensor:
    """The exact adjoint of :func:`_prolong`: zero padding to even size, then per axis
    ``c[i] = (f[2i-1] + 3 f[2i] + 3 f[2i+1] + f[2i+2]) / 4`` with replicated borders."""
    f = F.pad(_pad_even(f), (1, 1, 1, 1), mode="replicate")
    t = 0.25 * (f[..., :, 0:-3:2] + f[..., :, 3::2]) + 0.75 * (f[..., :, 1:-2:2] + f[..., :, 2:-1:2])
    return 0.25 * (t[..., 0:-3:2, :] + t[..., 3::2, :]) + 0.75 * (t[..., 1:-2:2, :] + t[..., 2:-1:2, :])


def _pad_even(x: Tensor) -> Tensor:
    return F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))


class _MultigridPreconditioner:
    """``B r = diag(M)^-1 r + R^T V_1(R r)``: Jacobi on the full resolution plus a coarse correction by a symmetric
    V(1, 1)-cycle (see the module docstring). Linear, symmetric and positive definite.

    Level ``l`` has resolution ``ceil(H / 2^l) x ceil(W / 2^l)`` (odd sizes are zero padded with zero weights);
    its system keeps the scales coarser than ``l`` as they are and merges the others into one scale of confidence
    ``sum_s P_(l-s) w_s``; its sparse weight is ``4^l P_l a`` (block sums) and its Tikhonov weight ``4^l lam``.
    Levels are added until one has at most ``max_direct`` pixels; that one is solved by Cholesky.

    Args:
        confidences: ``S`` tensors ``w_s`` ``(B, 2, H / 2^s, W / 2^s)``.
        obs_weight: ``a`` ``(B, 1, H, W)``.
        lam: the Tikhonov weight (``> 0`` keeps every level definite).
        max_direct: the largest coarsest level, in pixels.
        min_levels: the smallest number of levels (e.g. ``S`` for the coarse-to-fine start on level ``S - 1``).
    """

    def __init__(self, confidences: Sequence[Tensor], obs_weight: Tensor, lam: float, max_direct: int = 512,
                 min_levels: int = 2):
        confs, weight = list(confidences), obs_weight
        self.levels: list[tuple[list[Tensor], Tensor, float, Tensor]] = []
        while True:
            h, w = weight.shape[-2:]
            last = h * w == 1 or (h * w <= max_direct and len(self.levels) + 1 >= min_levels)
            diag = _l1_diagonal(confs, weight, lam) if self.levels else _normal_diagonal(confs, weight, lam)
            self.levels.append((confs, weight, lam, diag))
            if last:
                break
            merged = _pool2(_pad_even(confs[0]))
            confs = [merged + confs[1], *confs[2:]] if len(confs) > 1 else [merged]
            weight, lam = _pool2(_pad_even(weight)) * 4, lam * 4
        self.cholesky = self._factor(*self.levels[-1][:3]) if len(self.levels) > 1 else None

    @staticmethod
    def _factor(confs: list[Tensor], weight: Tensor, lam: float) -> Tensor:
        """The Cholesky factors ``(B, n, n)`` of the coarsest operator, assembled by applying it to unit vectors."""
        b, _, h, w = weight.shape
        n = h * w
        eye = torch.eye(n, dtype=weight.dtype, device=weight.device).reshape(n, 1, h, w)
        mats = torch.stack([_apply_normal_operator(eye, [c[i : i + 1].expand(n, -1, -1, -1) for c in confs],
                                                   weight[i : i + 1].expand(n, -1, -1, -1), lam).reshape(n, n)
                            for i in range(b)])
        # a tiny jitter keeps the factorisation defined for a singular coarse operator (lam = 0); it only changes
        # the preconditioner, never the solution
        diag = torch.diagonal(mats, dim1=1, dim2=2)
        jitter = 100 * torch.finfo(mats.dtype).eps * diag.mean(1).clamp_min(torch.finfo(mats.dtype).tiny)
        return torch.linalg.cholesky(mats + torch.diag_embed(jitter[:, None].expand_as(diag)))

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    def operator(self, level: int) -> Callable[[Tensor], Tensor]:
        """``x -> M_level x``."""
        confs, weight, lam, _ = self.levels[level]
        return lambda x: _apply_normal_operator(x, confs, weight, lam)

    def vcycle(self, r: Tensor, level: int) -> Tensor:
        """Approximate ``M_level^-1 r`` (``level >= 1``): exact on the coarsest level, else a V(1, 1)-cycle."""
        if level == len(self.levels) - 1:
            n = r.shape[0]
            return torch.cholesky_solve(r.reshape(n, -1, 1), self.cholesky).reshape(r.shape)
        apply = self.operator(level)
        diag = self.levels[level][3]
        e = r / diag
        e = e + _prolong(self.vcycle(_restrict(r - apply(e)), level + 1), r.shape[-2:])
        return e + (r - apply(e)) / diag

    def __call__(self, r: Tensor) -> Tensor:
        """``B r`` for a full-resolution residual ``r`` ``(B, 1, H, W)``."""
        z = r / self.levels[0][3]
        if len(self.levels) > 1:
            z = z + _prolong(self.vcycle(_restrict(r), 1), r.shape[-2:])
        return z

    def precondition(self, level: int) -> Callable[[Tensor], Tensor]:
        """The preconditioner for the system of ``level`` (``self`` on level 0, the V-cycle below)."""
        return self if level == 0 else lambda r: self.vcycle(r, level)


# --------------------------------------------------------------------------------------------------------------
# solver


def _batch_dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-item inner products of two ``(B, ...)`` tensors, ``(B,)`` (a batched matrix product: no temporary)."""
    n = a.shape[0]
    return torch.bmm(a.reshape(n, 1, -1), b.reshape(n, -1, 1)).view(n)


def _conjugate_gradient(apply_M: Callable[[Tensor], Tensor], b: Tensor, x0: Tensor | None = None, iters: int = 200,
                        tol: float = 1e-5, precond_diag: Tensor | None = None,
                        precond: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, dict]:
    """Batched preconditioned conjugate gradient for a symmetric positive definite ``M``.

    Every batch item runs its own CG (its own step sizes); an item stops updating once its relative residual
    ``||b - M x|| / ||b||`` is below ``tol``, and the loop stops when all items have or after ``iters`` iterations.
    The residual is the recursively updated one (no extra operator application); an item with ``b = 0`` counts
    ``||b||`` as the smallest positive float.

    Args:
        apply_M: ``x -> M x`` on ``(B, ...)`` tensors, acting on every item independently.
        b: the right-hand side ``(B, ...)``.
        x0: the initial guess (same shape), zeros when None.
        iters: the maximum number of iterations.
        tol: the relative residual to reach.
        precond_diag: the diagonal of ``M`` (same shape as ``b``, positive) for Jacobi preconditioning, or None.
        precond: ``r -> B r`` with ``B`` a symmetric positive definite approximation of ``M^-1`` acting on every
            item independently (e.g. :class:`_MultigridPreconditioner`); replaces ``precond_diag``.

    Returns:
        ``x`` (same shape as ``b``) and stats: ``iterations`` (int64 ``(B,)``, the iterations each item took),
        ``relative_residual`` (``(B,)``), ``converged`` (bool ``(B,)``), ``total_iterations`` (int, loop count),
        ``operator_calls`` (int, applications of ``apply_M``).
    """
    shape = (-1,) + (1,) * (b.dim() - 1)
    if x0 is None:
        x, r, calls = torch.zeros_like(b), b.clone(), 0
    else:
        x = x0.detach().clone()
        r, calls = b - apply_M(x), 1
    if precond is None:
        inv_diag = None if precond_diag is None else 1.0 / precond_diag

        def precond(v: Tensor) -> Tensor:
            return v if inv_diag is None else v * inv_diag

    z = precond(r)
    p = z.clone()
    rz = _batch_dot(r, z)
    b_norm = _batch_dot(b, b).sqrt().clamp_min(torch.finfo(b.dtype).tiny)
    rel = _batch_dot(r, r).sqrt() / b_norm
    item_iters = torch.zeros(b.shape[0], dtype=torch.int64, device=b.device)
    total = 0
    while total < iters:
        active = rel >= tol
        if not bool(active.any()):
            break
        Mp = apply_M(p)
        calls += 1
        pMp = _batch_dot(p, Mp)
        alpha = torch.where(active & (pMp > 0), rz / torch.where(pMp > 0, pMp, 1.0), 0.0).view(shape)
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, Mp, value=-1.0)
        z = precond(r)
        rz_new = _batch_dot(r, z)
        beta = torch.where(active & (rz > 0), rz_new / torch.where(rz > 0, rz, 1.0), 0.0).view(shape)
        p.mul_(beta).add_(z)
        rz = rz_new
        item_iters += active.long()
        rel = _batch_dot(r, r).sqrt() / b_norm
        total += 1
    stats = {"iterations": item_iters, "relative_residual": rel, "converged": rel < tol, "total_iterations": total,
             "operator_calls": calls}
    return x, stats


# --------------------------------------------------------------------------------------------------------------
# coarse-to-fine initial guess


def _box_forward(g: Tensor, k: int, dim: int) -> Tensor:
    """``h[j] = g[j] + ... + g[j + k - 1]`` along ``dim`` (3: x, 2: y), zero past the end."""
    n = g.shape[dim]
    out = g.clone()
    for t in range(1, k):
        shifted = g.narrow(dim, t, n - t)
        out.narrow(dim, 0, n - t).add_(shifted)
    return out


def _coarse_rhs(gradients: Sequence[Tensor], confidences: Sequence[Tensor], obs: Tensor,
                obs_weight: Tensor, prior: Tensor, lam: float) -> Tensor:
    """The right-hand side of the problem restricted to the coarsest scale ``L = S - 1`` (the system of level
    ``L`` of :class:`_MultigridPreconditioner`), from restricted data, ``(B, 1, H / 2^L, W / 2^L)``.

    A coarse difference of block means is the block mean of the sums of ``k = 2^(L-s)`` consecutive scale-``s``
    differences (exact); the scale-``s`` terms enter weighted by the block means of ``w_s`` (the coarse confidence
    is their sum, so ``D^T`` of the weighted sum is the merged gradient term of ``b``). The observations become
    block sums of ``a z`` and the prior term ``4^L lam P_L x0``."""
    lvl = len(gradients) - 1
    num = torch.zeros_like(gradients[-1])
    for s, (g, w) in enumerate(zip(gradients, confidences)):
        k = 2 ** (lvl - s)
        if k > 1:
            g = torch.cat([_box_forward(g[:, 0:1], k, 3), _box_forward(g[:, 1:2], k, 2)], dim=1)
        num = num + _pool(w, lvl - s) * _pool(g, lvl - s)
    scale = 4**lvl
    return _grad_adjoint(num) + _pool(obs_weight * obs, lvl) * scale + _pool(prior, lvl) * (lam * scale)


def _coarse_to_fine_guess(mg: _MultigridPreconditioner, gradients: Sequence[Tensor], confidences: Sequence[Tensor],
                          obs: Tensor, obs_weight: Tensor, prior: Tensor, lam: float, iters: int,
                          tol: float) -> tuple[Tensor, dict]:
    """Solve the problem restricted to the coarsest gradient scale on its multigrid level (PCG with the V-cycle)
    and upsample it bilinearly to ``(B, 1, H, W)``."""
    lvl = len(gradients) - 1
    rhs = _coarse_rhs(gradients, confidences, obs, obs_weight, prior, lam)
    y, stats = _conjugate_gradient(mg.operator(lvl), rhs, _pool(prior, lvl), iters, tol, precond=mg.precondition(lvl))
    for level in range(lvl - 1, -1, -1):
        y = _prolong(y, mg.levels[level][1].shape[-2:])
    return y, stats


# --------------------------------------------------------------------------------------------------------------
# the differentiable solve


def _check_inputs(gradients: Sequence[Tensor], confidences: Sequence[Tensor], obs: Tensor,
                  obs_weight: Tensor, prior: Tensor, x_init: Tensor | None) -> None:
    """Raise ValueError on inconsistent shapes, dtypes or devices (``prior`` may broadcast to ``(B, 1, H, W)``)."""
    if len(gradients) == 0 or len(gradients) != len(confidences):
        raise ValueError(f"need one confidence per gradient scale and at least one scale, got {len(gradients)} "
                         f"gradients and {len(confidences)} confidences")
    if obs.dim() != 4 or obs.shape[1] != 1:
        raise ValueError(f"observations must be (B, 1, H, W), got {tuple(obs.shape)}")
    if not obs.is_floating_point():
        raise ValueError(f"inputs must be floating point, got {obs.dtype}")
    b, _, h, w = obs.shape
    k = 2 ** (len(gradients) - 1)
    if h % k or w % k:
        raise ValueError(f"H x W = {h} x {w} must be divisible by 2^(S-1) = {k} for S = {len(gradients)} scales; "
                         f"pad the inputs (e.g. by replication, with zero weights) before integrating")
    named = [("observation_weight", obs_weight, (b, 1, h, w))]
    for s, (g, c) in enumerate(zip(gradients, confidences)):
        shape = (b, 2, h // 2**s, w // 2**s)
        named += [(f"gradients[{s}]", g, shape), (f"confidences[{s}]", c, shape)]
    if x_init is not None:
        named.append(("x_init", x_init, (b, 1, h, w)))
    for name, t, shape in named:
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if prior.dim() != 4 or any(p not in (1, n) for p, n in zip(prior.shape, obs.shape)):
        raise ValueError(f"prior of shape {tuple(prior.shape)} does not broadcast to {(b, 1, h, w)}")
    for name, t, _ in named + [("prior", prior, None)]:
        if t.dtype != obs.dtype or t.device != obs.device:
            raise ValueError(f"{name} is {t.dtype} on {t.device}, observations are {obs.dtype} on {obs.device}")


def _solver_setup(kind: str, confs: Sequence[Tensor], obs_weight: Tensor, lam: float, levels: int
                  ) -> tuple[dict, _MultigridPreconditioner | None]:
    """The preconditioner keywords of :func:`_conjugate_gradient` for ``kind`` and the multigrid hierarchy (built
    for the ``"multigrid"`` preconditioner and for a coarse-to-fine start: ``levels`` > 0 levels at least)."""
    mg = None
    if kind == "multigrid" or levels > 0:
        mg = _MultigridPreconditioner(confs, obs_weight, lam, min_levels=max(levels, 2))
    if kind == "multigrid":
        return {"precond": mg}, mg
    if kind == "jacobi":
        return {"precond_diag": _normal_diagonal(confs, obs_weight, lam)}, mg
    return {}, mg


class _Integrate(torch.autograd.Function):
    """``x = M^-1 b`` with an implicit backward (one more PCG solve with ``M``; see the module docstring)."""

    @staticmethod
    def forward(ctx, options: dict, obs: Tensor, obs_weight: Tensor, prior: Tensor, x_init: Tensor | None,
                *scales: Tensor) -> Tensor:
        n = len(scales) // 2
        grads, confs = scales[:n], scales[n:]
        lam, iters, tol, stats = options["lam"], options["iters"], options["tol"], options["stats"]
        start = time.perf_counter()
        coarse_to_fine = x_init is None and options["coarse_to_fine"] and n > 1
        precond, mg = _solver_setup(options["preconditioner"], confs, obs_weight, lam, n if coarse_to_fine else 0)
        stats["setup_seconds"] = time.perf_counter() - start
        if coarse_to_fine:
            x_init, stats["coarse"] = _coarse_to_fine_guess(mg, grads, confs, obs, obs_weight, prior, lam, iters, tol)
        b = _normal_rhs(grads, confs, obs, obs_weight, prior, lam)
        x, solve_stats = _conjugate_gradient(mg.operator(0) if mg else lambda v: _apply_normal_operator(
            v, confs, obs_weight, lam), b, prior if x_init is None else x_init, iters, tol, **precond)
        stats.update(solve_stats)
        stats["seconds"] = time.perf_counter() - start
        ctx.options = options
        ctx.solver = precond  # reused by the backward solve
        ctx.save_for_backward(x, obs, obs_weight, *scales)
        return x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_x: Tensor):
        x, obs, obs_weight, *scales = ctx.saved_tensors
        n = len(scales) // 2
        grads, confs = scales[:n], scales[n:]
        options = ctx.options
        lam, iters, tol = options["lam"], options["iters"], options["backward_tol"]
        start = time.perf_counter()
        u, stats = _conjugate_gradient(lambda v: _apply_normal_operator(v, confs, obs_weight, lam),
                                       grad_x.contiguous(), None, iters, tol, **ctx.solver)
        stats["seconds"] = time.perf_counter() - start
        options["stats"]["backward"] = stats

        need = ctx.needs_input_grad
        d_z = obs_weight * u if need[1] else None
        d_a = u * (obs - x) if need[2] else None
        d_prior = lam * u if need[3] else None
        d_grads, d_confs = [], []
        for s, (g, w) in enumerate(zip(grads, confs)):
            du = _grad_op(_pool(u, s))
            d_grads.append(w * du if need[5 + s] else None)
            d_confs.append(du * (g - _grad_op(_pool(x, s))) if need[5 + n + s] else None)
        return None, d_z, d_a, d_prior, None, *d_grads, *d_confs


def integrate_gradients(gradients: Sequence[Tensor], confidences: Sequence[Tensor], observations: Tensor,
                        observation_weight: Tensor, prior: Tensor, lam: float = 1e-3, iters: int = 200,
                        tol: float = 1e-5, x_init: Tensor | None = None, *, preconditioner: str = "multigrid",
                        coarse_to_fine: bool = False, stats: dict | None = None,
                        backward_tol: float | None = None) -> Tensor:
    """Integrate multi-scale gradients and sparse observations into a dense field (the energy is in the module
    docstring), differentiably with an implicit backward.

    Args:
        gradients: ``S`` tensors ``g_s`` ``(B, 2, H / 2^s, W / 2^s)``: forward differences of the scale-``s``
            (average pooled by ``2^s``) field, channel 0 along x, 1 along y; the last column of channel 0 and
            the last row of channel 1 are ignored. Units: the field's per scale-``s`` pixel (log-metres for
            log-depth).
        confidences: ``S`` tensors ``w_s >= 0``, shaped like ``gradients``.
        observations: ``z`` ``(B, 1, H, W)``, observed values of the field; any value where the weight is 0.
        observation_weight: ``a >= 0`` ``(B, 1, H, W)``, 0 where nothing is observed.
        prior: ``x0``, broadcastable to ``(B, 1, H, W)`` (e.g. ``(B, 1, 1, 1)``: the log of the median sparse
            depth); gradients are returned in its shape.
        lam: the Tikhonov weight ``>= 0`` (``> 0`` keeps the system definite with no observation).
        iters: the maximum number of CG iterations (for each solve: forward, backward, coarse).
        tol: the relative residual ``||b - M x|| / ||b||`` to reach (the backward solve too, unless
            ``backward_tol`` is given).
        x_init: ``(B, 1, H, W)`` initial guess (e.g. the previous frame's solution); no gradient flows into it.
        preconditioner: ``"multigrid"`` (a V-cycle over coarser grids with a Cholesky solve on the coarsest: the
            fastest), ``"jacobi"`` (the exact diagonal) or ``"none"``; the backward solve uses the same.
        coarse_to_fine: when ``x_init`` is None and ``S > 1``, start CG from the solution of the problem
            restricted to the coarsest gradient scale (upsampled bilinearly) instead of ``prior`` (worth it with
            ``"jacobi"``, not with ``"multigrid"``). The backward solve starts from zero.
        stats: a dict filled with the solver statistics: ``iterations`` (int64 ``(B,)``, per item),
            ``relative_residual`` (``(B,)``), ``converged`` (bool ``(B,)``), ``total_iterations`` (int),
            ``operator_calls`` (int, applications of ``M``), ``seconds``, ``setup_seconds`` and, with the
            coarse-to-fine start, ``coarse`` (the coarse solve's statistics); the backward pass adds
            ``stats["backward"]``.
        backward_tol: the backward solve's relative residual (``||v - M u|| / ||v||``); None: ``tol``. Its
            solution ``u`` (hence every input gradient) is then off by at most ``cond(M)`` times this, relatively
            (the usual residual bound), so a looser value trades gradient accuracy for iterations (the backward
            solve starts from zero and takes more iterations than the forward one, which starts from a good
            guess).

    Returns:
        ``x`` ``(B, 1, H, W)`` in the dtype of the inputs (float16 and bfloat16 inputs are solved in float32), on
        their device (every step is a torch op: CPU and CUDA alike).

    Raises:
        ValueError: on inconsistent shapes, dtypes or devices, ``H``, ``W`` not divisible by ``2^(S-1)``,
            ``lam < 0``, ``backward_tol <= 0`` or an unknown preconditioner.

    Example:
        A ramp ``x = j`` (one unit per column) from its exact x-differences and a single observation:

        >>> import torch
        >>> ramp = torch.arange(8.0).expand(1, 1, 4, 8)
        >>> gradients = [torch.stack([torch.ones(4, 8), torch.zeros(4, 8)])[None]]
        >>> confidences = [torch.ones(1, 2, 4, 8)]
        >>> weight = torch.zeros(1, 1, 4, 8)
        >>> weight[0, 0, 0, 0] = 1.0
        >>> x = integrate_gradients(gradients, confidences, ramp, weight, torch.zeros(1, 1, 1, 1), lam=0.0,
        ...                         tol=1e-7)
        >>> torch.allclose(x, ramp, atol=1e-4)
        True
    """
    _check_inputs(gradients, confidences, observations, observation_weight, prior, x_init)
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if backward_tol is not None and not backward_tol > 0:
        raise ValueError(f"backward_tol must be > 0 or None, got {backward_tol}")
    if preconditioner not in PRECONDITIONERS:
        raise ValueError(f"preconditioner must be one of {PRECONDITIONERS}, got {preconditioner!r}")
    dtype = observations.dtype
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    tensors = [observations, observation_weight, prior.expand_as(observations), *gradients, *confidences]
    tensors = [t.to(work).contiguous() for t in tensors]
    if x_init is not None:
        x_init = x_init.detach().to(work)
    options = {"lam": float(lam), "iters": int(iters), "tol": float(tol), "preconditioner": preconditioner,
               "backward_tol": float(tol if backward_tol is None else backward_tol),
               "coarse_to_fine": coarse_to_fine, "stats": {} if stats is None else stats}
    x = _Integrate.apply(options, *tensors[:3], x_init, *tensors[3:])
    return x.to(dtype)
