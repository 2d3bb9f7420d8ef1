"""Complete one frame: the trained model (a checkpoint) or a classical baseline, behind one function.

Used by ``geo3d complete RGB SPARSE --out DEPTH.png`` and by the benchmark, so both run exactly the same code.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from geo3d.io.checkpoint import load_module

if TYPE_CHECKING:
    from pipelines.depth.module import DepthCompletion

METHODS = ("model", "nearest", "linear", "ip_basic")
_MODELS: dict[str, DepthCompletion] = {}  # pytorch_lightning is imported on first use, not by `--method ip_basic`


@dataclass
class Completion:
    """A completed frame.

    Attributes:
        depth: (H, W) float32 metres, dense.
        uncertainty: (H, W) float32 metres (standard deviation), the model only; None for baselines.
        seconds: wall time of the completion itself (not reading or writing).
    """

    depth: torch.Tensor
    uncertainty: torch.Tensor | None
    seconds: float


def load_model(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> DepthCompletion:
    """A :class:`~pipelines.depth.module.DepthCompletion` checkpoint in eval mode with its batch norms folded into the
    convolutions (:meth:`~pipelines.depth.model.DepthCompletionNet.fuse_batch_norm`; cached per process).

    Loaded by :func:`geo3d.io.checkpoint.load_module`, so checkpoints written before the settings groups load too
    (:meth:`~pipelines.depth.module.DepthCompletion.upgrade_hparams`).

    Raises:
        InputError: the file is missing or is not such a checkpoint (one line naming the file).
    """
    key = f"{Path(checkpoint).resolve()}@{device}"
    if key not in _MODELS:
        from pipelines.depth.module import DepthCompletion

        model = load_module(checkpoint, DepthCompletion, map_location=device)
        model.net.fuse_batch_norm()  # inference only: the cached model is never trained
        _MODELS[key] = model
    return _MODELS[key]


@torch.no_grad()
def complete_frame(image: np.ndarray, sparse: torch.Tensor, method: str = "model",
                   checkpoint: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                   max_depth: float = 100.0) -> Completion:
    """Complete a sparse depth map.

    Args:
        image: (H, W, 3) uint8 RGB.
        sparse: (H, W) float32 metres, 0 = missing.
        method: ``"model"`` (needs ``checkpoint``), ``"nearest"``, ``"linear"`` or ``"ip_basic"``.
        checkpoint: a DepthCompletion ``.ckpt``.
        device: where to run (the model and IP-Basic run on CUDA tensors as well).
        max_depth: IP-Basic's maximum depth, metres.

    Returns:
        :class:`Completion`.

    Raises:
        ValueError: unknown method, mismatched sizes, no valid sparse pixel.
        InputError: a bad checkpoint.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if image.ndim != 3 or image.shape[2] != 3 or tuple(image.shape[:2]) != tuple(sparse.shape):
        raise ValueError(f"image (H, W, 3) and sparse (H, W) must have one size, got {image.shape} and "
                         f"{tuple(sparse.shape)}")
    if not bool((sparse > 0).any()):
        raise ValueError("sparse depth has no valid (non-zero) pixel")
    from pipelines.depth.baselines import complete_baseline
    from pipelines.depth.data import to_tensors

    img, sp = to_tensors(image, sparse)
    img, sp = img[None].to(device), sp[None].to(device)
    if method == "model":
        if checkpoint is None:
            raise ValueError("method 'model' needs a checkpoint (--ckpt)")
        from pipelines.depth.module import uncertainty

        model = load_model(checkpoint, device)
        start = time.perf_counter()
        out = model(img, sp)
        # the copy to the host waits for the device's queued work, so the time is the completion's on any device
        depth, unc = out["depth"][0, 0].float().cpu(), uncertainty(out)[0, 0].float().cpu()
        return Completion(depth, unc, time.perf_counter() - start)
    start = time.perf_counter()
    kwargs = {"max_depth": max_depth} if method == "ip_basic" else {}
    depth = complete_baseline(method, sp, **kwargs)[0, 0].float().cpu()
    return Completion(depth, None, time.perf_counter() - start)


PROBE_SEED = 27
"""The seed of :func:`zoo_probe`'s synthetic frame and sparse pattern."""


@torch.no_grad()
def zoo_probe(module: DepthCompletion) -> dict[str, np.ndarray]:
    """The model zoo's probe: the completed depth of one fixed small synthetic frame.

    The frame is :func:`geo3d.synth.depth.synth_frame` of seed :data:`PROBE_SEED` (an outdoor street, 192 x 64,
    built in code in well under a second) with a 64-beam LiDAR pattern drawn from its ground truth with the same
    seed (:func:`geo3d.synth.patterns.sample_sparse`). The module runs as loaded, in eval mode.

    Args:
        module: a :class:`~pipelines.depth.module.DepthCompletion` (a zoo entry's weights, or any).

    Returns:
        ``depth`` and ``uncertainty``: (64, 192) float32 metres.
    """
    from geo3d.synth.depth import synth_frame
    from geo3d.synth.patterns import sample_sparse
    from pipelines.depth.data import to_tensors
    from pipelines.depth.module import uncertainty

    image, gt, K, _ = synth_frame(PROBE_SEED, "outdoor", 192, 64, nthreads=1)
    sparse = sample_sparse(torch.from_numpy(gt), "lidar:64", np.random.default_rng(PROBE_SEED),
                           K=torch.from_numpy(K), image=image)
    img, sp = to_tensors(image, sparse)
    was_training = module.training
    module.eval()
    try:
        out = module(img[None], sp[None])
    finally:
        module.train(was_training)
    return {"depth": out["depth"][0, 0].numpy(), "uncertainty": uncertainty(out)[0, 0].numpy()}
