"""Densification and pruning of 3D Gaussians during training: gsplat's ``DefaultStrategy``, on both devices.

The adaptive density control of 3D Gaussian splatting (Kerbl et al. 2023) as gsplat 1.5.3 implements it: Gaussians
whose mean 2D position gradient is large are duplicated (small ones) or split (large ones), transparent or huge
ones are pruned, and the opacities are reset now and then. gsplat's code is pure torch and runs on CPU tensors as
on CUDA ones, so there is one path:

* :class:`DefaultStrategy` is gsplat's class itself (``gsplat.strategy.DefaultStrategy``), with its settings'
  names and defaults. A training step calls ``step_pre_backward(params, optimizers, state, step, meta)`` after
  rendering and ``step_post_backward(...)`` after the backward pass, where ``state`` comes from
  ``initialize_state(scene_scale)``.
* :func:`remove_gaussians` removes Gaussians by mask between those calls (e.g. floater pruning or a Gaussian
  budget), keeping every optimizer's moments and the strategy's running statistics aligned with them.

Conventions (both devices):

* ``params``: a ``torch.nn.ParameterDict`` (or dict) of per-Gaussian parameters, first dimension N (gsplat's
  names: ``means`` (N, 3), ``scales`` (N, 3) log, ``quats`` (N, 4), ``opacities`` (N,) logit, ``sh0``,
  ``shN``); ``optimizers``: name -> a ``torch.optim.Optimizer`` holding exactly that one parameter. Both are
  edited in place: after a densification the dict holds new ``Parameter`` objects and each optimizer's
  ``param_groups`` and state point at them.
* ``meta``: the third output of :func:`ops.rasterize_gaussians` (``packed=False`` layout): ``means2d`` (C, N, 2)
  pixels with its gradient retained, ``radii`` (C, N, 2) int32 (0 = culled), ``width``, ``height``,
  ``n_cameras``, ``gaussian_ids=None``. The CPU rasterizer returns exactly these keys, so the statistics
  (gradient norms normalised by the image size, visibility counts) are the same on both devices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

# gsplat's strategy code is pure torch: importing it compiles nothing, and it runs on CPU tensors.
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import remove as _gsplat_remove

__all__ = ["DefaultStrategy", "remove_gaussians"]


@torch.no_grad()
def remove_gaussians(params: torch.nn.ParameterDict | dict[str, torch.nn.Parameter],
                     optimizers: Mapping[str, torch.optim.Optimizer], state: dict[str, Any],
                     mask: torch.Tensor) -> None:
    """Remove the Gaussians flagged by ``mask``, in place, from the parameters, their optimizers and the state.

    Args:
        params: name -> (N, ...) parameter; replaced in place by (N - R, ...) parameters.
        optimizers: name -> the optimizer of that parameter (Adam's ``exp_avg``/``exp_avg_sq`` rows removed too).
        state: the strategy's state from ``DefaultStrategy.initialize_state``; its per-Gaussian tensors
            (``grad2d``, ``count``, ``radii`` once they exist) lose the same rows.
        mask: (N,) bool, True for the R Gaussians to remove; on the parameters' device.

    Example:
        >>> params = torch.nn.ParameterDict({"means": torch.nn.Parameter(torch.arange(9.0).reshape(3, 3))})
        >>> optimizers = {"means": torch.optim.Adam([params["means"]])}
        >>> remove_gaussians(params, optimizers, {}, torch.tensor([False, True, False]))
        >>> params["means"].tolist()
        [[0.0, 1.0, 2.0], [6.0, 7.0, 8.0]]
        >>> optimizers["means"].param_groups[0]["params"][0] is params["means"]
        True
    """
    if mask.dtype != torch.bool or mask.dim() != 1:
        raise ValueError(f"remove_gaussians: mask: expected an (N,) bool tensor, got {mask.dtype} "
                         f"{tuple(mask.shape)}")
    n = next(iter(params.values())).shape[0]
    if mask.shape[0] != n:
        raise ValueError(f"remove_gaussians: mask: expected {n} entries (one per Gaussian), got {mask.shape[0]}")
    _gsplat_remove(params=params, optimizers=dict(optimizers), state=state, mask=mask)
