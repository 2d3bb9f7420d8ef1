"""Refit the blend head on the trained network's own outputs, as the last stage of training.

The blend head (step 5 of :mod:`pipelines.depth.model`) chooses per pixel between the integrated log-depth and
linear interpolation. Its inputs are detached, so during training it chases a moving target: the integration
changes under it at every step, and it sees training-mode outputs on crops while it is used in eval mode on whole
frames. Once the network is trained, the target stands still. This stage freezes the network, runs it in eval mode
over ``frames`` training frames (each with a random training pattern), keeps the head's input maps and what its
loss needs, and trains a freshly initialised head on random crops of them for ``steps`` steps with the same loss
(:func:`pipelines.depth.module.blend_loss`).

Measured on the 809-step checkpoint of 2026-12-01's sixth session (pipelines/depth/README.md): the jointly trained
version 2 head lost to a plain 50 / 50 average on 5 % outliers (1.881 against 1.728 m) and to linear interpolation
on SIFT keypoints (2.198 against 2.107 m); refitted this way (300 frames, 1000 steps) the context head
(:class:`~pipelines.depth.model.ContextBlendHead`) gave 1.858 and 2.077, and 2.462 against 2.727 on random 0.03 %.

Written here rather than taken from a library: it is a few lines of plain torch around the project's own loss, and
Lightning has no notion of a second stage that fits one head on cached, frozen outputs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn as nn
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from pipelines.depth.model import DepthCompletionNet
from pipelines.depth.module import mixed_choice_loss, normalised_log_depth


def cache_blend_inputs(net: DepthCompletionNet, frames: Dataset, count: int, seed: int = 0,
                       max_depth: float | None = None, progress: bool = True) -> list[dict[str, torch.Tensor]]:
    """Run the network (in eval mode, without gradients) over ``count`` frames and keep what the blend head needs.

    Args:
        net: a network with a blend head (``linear_blend``); switched to eval mode and back.
        frames: a dataset of ``{"image" (3, H, W), "sparse" (1, H, W) metres, "gt" (1, H, W) metres}`` items (e.g.
            :class:`pipelines.depth.data.DepthFrames` with random training patterns and no crop).
        count: frames to use (``min(count, len(frames))``, drawn without replacement).
        seed: the draw's seed (the dataset's own randomness follows torch's global seed, which is set from it too).
        max_depth: ground truth beyond this many metres does not count (as in evaluation); None: all of it.
        progress: show a progress bar.

    Returns:
        One dict per frame, each map (1, C, H, W) on the network's device: ``inputs`` (the head's input maps,
        float16, channels-last when the network is), ``integrated`` and ``linear`` (normalised log-depth),
        ``gt_log`` (normalised log-depth of the ground truth, 0 where invalid), ``valid`` (bool: ground truth
        present, within ``max_depth``).
    """
    if net.blend is None:
        raise ValueError("cache_blend_inputs: the network has no blend head (linear_blend=False)")
    device = next(net.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(frames), generator=generator)[: min(count, len(frames))].tolist()
    captured: dict[str, torch.Tensor] = {}
    hook = net.blend.register_forward_hook(lambda module, args, output: captured.__setitem__("inputs", args[0]))
    was_training = net.training
    layout = torch.channels_last if net.channels_last else torch.contiguous_format
    net.eval()
    cache = []
    try:
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(seed)
            for index in tqdm(order, desc="blend head: caching frames", unit="frame", disable=not progress):
                item = frames[index]
                out = net(item["image"][None].to(device), item["sparse"][None].to(device))
                h, w = item["gt"].shape[-2:]
                gt = item["gt"][None].to(device)
                valid = (gt > 0) & (gt <= max_depth) if max_depth is not None else gt > 0
                cache.append({"inputs": captured["inputs"][..., :h, :w].half().contiguous(memory_format=layout),
                              "integrated": out["log_depth_integrated"], "linear": out["linear"],
                              "gt_log": normalised_log_depth(gt, out["scale"], valid), "valid": valid})
    finally:
        hook.remove()
        net.train(was_training)
    return cache


def fit_blend_head(head: nn.Module, cache: list[dict[str, torch.Tensor]], steps: int, crop: tuple[int, int],
                   batch_size: int = 3, lr: float = 6e-3, seed: int = 0, metric: bool = True,
                   mae_share: float = 0.0, progress: bool = True) -> dict[str, float]:
    """Train a blend head on :func:`cache_blend_inputs`'s maps: Adam, one-cycle learning rate, random crops.

    Args:
        head: the head (maps (B, C, h, w) -> logit (B, 1, h, w)); trained in place.
        cache: the cached frames (of any sizes: the crop is clipped to the smallest).
        steps: optimisation steps.
        crop: (h, w) crop size, pixels (clipped to the frames' size).
        batch_size: crops per step.
        lr: the peak learning rate.
        seed: the crops' seed.
        metric: weight the loss by the depth (:func:`pipelines.depth.module.blend_loss`).
        mae_share: the share of the loss weighted for absolute rather than squared errors (``blend_loss``'s).
        progress: show a progress bar.

    Returns:
        ``{"loss_first", "loss_last"}``: the mean loss over the first and the last tenth of the steps.
    """
    if not cache:
        raise ValueError("fit_blend_head: no cached frames")
    ch = min(crop[0], *(frame["inputs"].shape[-2] for frame in cache))
    cw = min(crop[1], *(frame["inputs"].shape[-1] for frame in cache))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.3)
    head.train()
    losses = []
    for _ in tqdm(range(steps), desc="blend head: fitting", unit="step", disable=not progress):
        picks = []
        for _ in range(batch_size):
            frame = cache[int(torch.randint(len(cache), (), generator=generator))]
            height, width = frame["inputs"].shape[-2:]
            top = int(torch.randint(height - ch + 1, (), generator=generator))
            left = int(torch.randint(width - cw + 1, (), generator=generator))
            picks.append({key: t[..., top:top + ch, left:left + cw] for key, t in frame.items()})
        batch = {key: torch.cat([p[key] for p in picks]) for key in picks[0]}
        logit = head(batch["inputs"].float())
        loss = mixed_choice_loss(logit, batch["integrated"], batch["linear"], batch["gt_log"], batch["valid"], metric,
                                 mae_share)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    tenth = max(len(losses) // 10, 1)
    return {"loss_first": sum(losses[:tenth]) / tenth, "loss_last": sum(losses[-tenth:]) / tenth}


def reset_blend_head(net: DepthCompletionNet, seed: int = 0) -> None:
    """Re-initialise the blend head as a new network's (``alpha`` = 0.5 everywhere), reproducibly from ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for module in net.blend.modules():
            if isinstance(module, nn.Conv2d):
                module.reset_parameters()
        last = [m for m in net.blend.modules() if isinstance(m, nn.Conv2d)][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)


class BlendHeadCalibration(pl.Callback):
    """At the end of ``geo3d fit``: refit the blend head on the frozen network's eval-mode outputs over training
    frames (:func:`cache_blend_inputs`, :func:`fit_blend_head`) and write the checkpoints again with it.

    Runs after the trainer stops (``max_steps`` or ``max_time``), so it adds its own time to the run: 169 s
    at the defaults on a 2-core CPU (300 frames of 176 x 608, 1000 steps; 2026-12-01). The
    training frames and patterns are the datamodule's (:class:`pipelines.depth.data.DepthDataModule`), drawn
    whole (no crop), with random flips; the crops are its training crop.

    Args:
        frames: training frames to cache (float16 maps: ~1.5 GB at the defaults).
        steps: the head's optimisation steps.
        lr: its peak learning rate.
        batch_size: crops per step.
        reset: start from a freshly initialised head (measured that way) rather than the jointly trained one.
        seed: seed of the frame draw and the crops.
    """

    def __init__(self, frames: int = 300, steps: int = 1000, lr: float = 6e-3, batch_size: int = 3,
                 reset: bool = True, seed: int = 0):
        if frames < 1 or steps < 1 or batch_size < 1:
            raise ValueError(f"BlendHeadCalibration: frames, steps and batch_size must be >= 1, got {frames}, "
                             f"{steps}, {batch_size}")
        self.frames, self.steps, self.lr, self.batch_size = frames, steps, lr, batch_size
        self.reset, self.seed = reset, seed

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from pipelines.depth.data import DepthFrames

        net = pl_module.net
        if net.blend is None:
            rank_zero_info("BlendHeadCalibration: the model has no blend head; nothing to do")
            return
        data = trainer.datamodule
        if not all(hasattr(data, name) for name in ("train_dir", "train_patterns", "crop")):
            raise TypeError("BlendHeadCalibration needs the depth datamodule (pipelines.depth.data.DepthDataModule: "
                            f"train_dir, train_patterns, crop), got {type(data).__name__}")
        start = time.perf_counter()
        if trainer.world_size > 1:  # under DDP each rank's batch-norm statistics are its own last batches': all
            # ranks refit from rank 0's model (what its checkpoints hold), so they end with the same weights
            pl_module.load_state_dict(trainer.strategy.broadcast(pl_module.state_dict(), src=0))
        frames = DepthFrames(data.train_dir, data.train_patterns, train=True, crop=None)
        progress = trainer.is_global_zero
        cache = cache_blend_inputs(net, frames, self.frames, seed=self.seed,
                                   max_depth=pl_module.max_depth, progress=progress)
        if self.reset:
            reset_blend_head(net, self.seed)
        crop = data.crop or tuple(cache[0]["inputs"].shape[-2:])
        with torch.enable_grad():
            weights = pl_module.loss_weights
            stats = fit_blend_head(net.blend, cache, self.steps, crop, self.batch_size, self.lr, self.seed,
                                   metric=weights.blend_metric_weight, mae_share=weights.blend_mae_share,
                                   progress=progress)
        del cache
        seconds = time.perf_counter() - start
        rank_zero_info(f"BlendHeadCalibration: refitted the blend head on {min(self.frames, len(frames))} frames, "
                       f"{self.steps} steps, {seconds:.0f} s; loss {stats['loss_first']:.4f} -> "
                       f"{stats['loss_last']:.4f}")
        if trainer.logger is not None:
            trainer.logger.log_metrics({"calibration/loss_first": stats["loss_first"],
                                        "calibration/loss_last": stats["loss_last"],
                                        "calibration/seconds": seconds}, step=trainer.global_step)
        self._rewrite_checkpoints(trainer)

    @staticmethod
    def _rewrite_checkpoints(trainer: pl.Trainer) -> None:
        """Write the model checkpoints of this run again, now with the refitted head (each atomically)."""
        paths = set()
        for callback in trainer.checkpoint_callbacks:
            for path in (callback.last_model_path, callback.best_model_path):
                if path and Path(path).is_file():
                    paths.add(path)
        for path in sorted(paths):
            partial = f"{path}.partial"
            trainer.save_checkpoint(partial)
            if trainer.is_global_zero:
                os.replace(partial, path)
            rank_zero_info(f"BlendHeadCalibration: wrote {path}")
