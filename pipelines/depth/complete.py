"""Complete one frame: the trained model (a checkpoint) or a classical baseline, behind one function.

Used by ``geo3d complete RGB SPARSE --out DEPTH.png`` and by the benchmark, so both run exactly the same code.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geo3d.errors import InputError

METHODS = ("model", "nearest", "linear", "ip_basic")
_MODELS: dict[str, torch.nn.Module] = {}


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


def load_model(checkpoint: str | os.PathLike, device: str | torch.device = "cpu"):
    """A :class:`~pipelines.depth.module.DepthCompletion` checkpoint in eval mode with its batch norms folded into the
    convolutions (:meth:`~pipelines.depth.model.DepthCompletionNet.fuse_batch_norm`; cached per process).

    Raises:
        InputError: the file is missing or is not such a checkpoint.
    """
    key = f"{Path(checkpoint).resolve()}@{device}"
    if key not in _MODELS:
        from pipelines.depth.module import DepthCompletion

        if not Path(checkpoint).is_file():
            raise InputError(checkpoint, "checkpoint file not found")
        try:
            hparams = torch.load(str(checkpoint), map_location="cpu", weights_only=False).get("hyper_parameters", {})
            # checkpoints from before the linear blend (step 5 of pipelines.depth.model) have no blend head, those
            # of its first design (2026-12-01) no blend_version; the linear prior's first design (an experiment of
            # 2026-12-01) had no linear_input and fed linear interpolation to the encoder
            old = {} if "linear_blend" in hparams else {"linear_blend": False}
            if "linear_blend" in hparams and "blend_version" not in hparams:
                old["blend_version"] = 1
            if "linear_prior" not in hparams:
                old["linear_prior"] = False
            elif "linear_input" not in hparams:
                old["linear_input"] = True
            model = DepthCompletion.load_from_checkpoint(str(checkpoint), map_location=device, **old)
        except Exception as e:  # whatever fails to load is not a usable checkpoint
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(checkpoint, f"not a DepthCompletion checkpoint ({type(e).__name__}: {first})") from None
        model.eval()
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
    from pipelines.depth.baselines import complete_baseline
    from pipelines.depth.data import to_tensors

    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if image.ndim != 3 or image.shape[2] != 3 or tuple(image.shape[:2]) != tuple(sparse.shape):
        raise ValueError(f"image (H, W, 3) and sparse (H, W) must have one size, got {image.shape} and "
                         f"{tuple(sparse.shape)}")
    if not bool((sparse > 0).any()):
        raise ValueError("sparse depth has no valid (non-zero) pixel")
    img, sp = to_tensors(image, sparse)
    img, sp = img[None].to(device), sp[None].to(device)
    if method == "model":
        if checkpoint is None:
            raise ValueError("method 'model' needs a checkpoint (--ckpt)")
        model = load_model(checkpoint, device)
        start = time.perf_counter()
        out = model(img, sp)
        from pipelines.depth.module import uncertainty

        depth, unc = out["depth"][0, 0], uncertainty(out)[0, 0]
        _sync(device)
        seconds = time.perf_counter() - start
        return Completion(depth.float().cpu(), unc.float().cpu(), seconds)
    start = time.perf_counter()
    kwargs = {"max_depth": max_depth} if method == "ip_basic" else {}
    depth = complete_baseline(method, sp, **kwargs)[0, 0]
    _sync(device)
    return Completion(depth.float().cpu(), None, time.perf_counter() - start)


def _sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
