"""The op layer: sparse convolution, voxelization, scatter reductions, neighbours, rotated boxes, splatting,
gradient integration, farthest-point sampling.

Every op picks its backend from its input's device (CUDA kernels from spconv/gsplat/torch on CUDA tensors,
a tested CPU path on CPU tensors); pipelines call these functions and never branch on the device. Each op
has a simple reference in :mod:`ops.reference` (used by tests only) and a row in ``scripts/bench_ops.py``.

The names below are imported lazily (on first use), so ``import ops`` does not load spconv or numba:

>>> import sys, ops
>>> "spconv" in sys.modules and "ops.sparse_conv" not in sys.modules  # nothing loaded yet
False
>>> from ops import hard_voxelize, SubMConv3d, nms_rotated  # now each module loads on first use
>>> "ops.sparse_conv" in sys.modules
True
"""

from __future__ import annotations

import importlib
import logging
import warnings

# spconv 2.3.6 decorates its autograd functions with torch.cuda.amp.custom_fwd/bwd, deprecated since
# torch 2.4 (one FutureWarning per function at import), and SparseConvTensor.dense() indexes with a list
# (a UserWarning on every call). Both are about spconv's code, not ours or the user's.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"spconv\.")
warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing",
                        category=UserWarning, module=r"spconv\.")
# spconv asks torch.fx.is_fx_tracing() in every module call; torch logs a deprecation note on the first.
logging.getLogger("torch.fx._symbolic_trace").addFilter(
    lambda record: "is_fx_tracing will return true" not in record.getMessage())

_EXPORTS = {
    "ops.sparse_conv": ("SparseConv2d", "SparseConv3d", "SparseConvTensor", "SparseInverseConv2d",
                        "SparseInverseConv3d", "SparseMaxPool2d", "SparseMaxPool3d", "SparseSequential",
                        "SubMConv2d", "SubMConv3d", "sparse_tensor"),
    "ops.voxelize": ("dynamic_voxelize", "grid_size", "hard_voxelize"),
    "ops.scatter": ("scatter_max", "scatter_mean", "scatter_sum"),
    "ops.neighbors": ("knn", "radius_graph"),
    "ops.boxes": ("batched_nms_rotated", "boxes_iou_3d", "boxes_iou_bev", "boxes_overlap_bev", "nms_rotated"),
    "ops.rasterize": ("rasterize_gaussians",),
    "ops.sampling": ("farthest_point_sampling",),
    "ops.densify": ("DefaultStrategy", "remove_gaussians"),
    "ops.gradient_integration": ("integrate_gradients",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'ops' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
