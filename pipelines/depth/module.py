"""Depth completion as a LightningModule: the loss, per-pattern validation metrics, prediction to PNG.

Loss (on pixels with ground truth, in normalised log-depth ``log(depth / scale)``, so it does not depend on the
scene's scale): L1 of the integrated log-depth + ``nll_weight`` x the Laplace negative log-likelihood with the
predicted scale ``b`` (``|r| / b + log b``) + ``grad_weight`` x gradient matching (L1 of the forward differences of
the residual at full, 1/2 and 1/4 resolution, mask-aware pooling) + ``head_weight`` x L1 between each resolution's
predicted gradients and the ground truth's (direct supervision of the heads, which speeds up early training).

With the linear blend (:class:`~pipelines.depth.model.BlendSettings`' ``enabled``) these terms apply to the
integrated log-depth ``i``, and ``blend_loss_weight`` x a binary cross-entropy trains the blend head: its target per
pixel is the weight that would have hit the ground truth ``g`` between ``i`` and the linear fill ``l``, ``clamp((g - l)
/ (i - l), 0, 1)``, weighted by ``(i - l)^2`` and by the squared depth (``exp(2 g)``, ``blend_metric_weight``): the
blend's squared log error at a pixel is ``(i - l)^2 (alpha - target)^2`` (where the target is not clamped) and its error
in metres about depth times that, so the weight follows what RMSE counts, and where the two agree the weight does not
matter. (Without the depth factor, the near pixels ruled and the head trusted linear interpolation too much on LiDAR
inputs: 2.270 m on the KITTI frame against 2.088 with it. Weighted by ``|i - l|``, a run gave the integration weights of
only 0.38-0.43 on LiDAR patterns and 0.41 on the KITTI frame, where it is far better than linear interpolation.) A
cross-entropy on the logit keeps its gradient when the weight saturates, which an L1 on the blended output does not:
trained that way, the head learned in the first minutes, while the integration was still poor, to trust linear
interpolation everywhere (weights 0.01-0.09) and never recovered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import BasePredictionWriter

from geo3d.io.checkpoint import regroup_hparams
from geo3d.io.depth_png import write_depth_png
from geo3d.metrics.depth import depth_metrics
from geo3d.metrics.distributed import SampleMeans
from geo3d.schedule import step_one_cycle
from geo3d.types import DepthMap
from pipelines.depth.model import BlendSettings, DepthCompletionNet, IntegrationSettings, NetworkSettings

METRIC_KEYS = ("rmse_mm", "mae_mm", "irmse_1km", "imae_1km", "rel", "delta1")


def masked_pool(values: torch.Tensor, mask: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask-normalised average pooling by ``2^s``: ``(values (B, 1, H', W'), mask (B, 1, H', W') bool)``, a pooled
    pixel valid when any input pixel of its cell was."""
    if s == 0:
        return values, mask
    k = 2**s
    m = F.avg_pool2d(mask.float(), k, ceil_mode=True)
    v = F.avg_pool2d(values * mask, k, ceil_mode=True) / m.clamp_min(1e-6)
    return v, m > 0


def forward_differences(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) -> ((B, 2, H, W) x/y forward differences, zero at the last column/row; (B, 2, H, W) bool: both
    pixels valid)."""
    gx = torch.zeros_like(x).repeat(1, 2, 1, 1)
    valid = torch.zeros_like(mask).repeat(1, 2, 1, 1)
    gx[:, 0, :, :-1] = x[:, 0, :, 1:] - x[:, 0, :, :-1]
    gx[:, 1, :-1, :] = x[:, 0, 1:, :] - x[:, 0, :-1, :]
    valid[:, 0, :, :-1] = mask[:, 0, :, 1:] & mask[:, 0, :, :-1]
    valid[:, 1, :-1, :] = mask[:, 0, 1:, :] & mask[:, 0, :-1, :]
    return gx, valid


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1)


def normalised_log_depth(depth: torch.Tensor, scale: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The network's working variable for a depth map: ``log(depth / scale)`` where ``valid``, 0 elsewhere.

    Args:
        depth: (B, 1, H, W) metres.
        scale: (B,) metres (the median sparse depth, :func:`pipelines.depth.model.median_scale`).
        valid: (B, 1, H, W) bool.

    Returns:
        (B, 1, H, W).
    """
    return torch.where(valid, torch.log(depth.clamp_min(1e-6) / scale[:, None, None, None]), torch.zeros_like(depth))


def metric_l1(log_depth: torch.Tensor, gt_log: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean absolute error in units of the image's scale: ``|exp(x) - exp(g)|`` over the valid pixels, the error in
    metres divided by the median sparse depth (the normalisation keeps scenes of any scale comparable).

    Args:
        log_depth: (B, 1, H, W) normalised log-depth ``x``.
        gt_log: (B, 1, H, W) ground-truth normalised log-depth ``g``, meaningful where ``valid``.
        valid: (B, 1, H, W) bool.

    Returns:
        A scalar.
    """
    error = torch.exp(log_depth.clamp(max=10.0)) - torch.exp(gt_log)
    return _masked_mean(torch.where(valid, error.abs(), torch.zeros_like(error)), valid)


def blend_loss(out: dict, gt_log: torch.Tensor, valid: torch.Tensor, metric: bool = True,
               mae_share: float = 0.0) -> torch.Tensor:
    """The blend head's loss: binary cross-entropy of its logit against the per-pixel weight that would have been
    right, ``clamp((g - l) / (i - l), 0, 1)``, weighted by ``(i - l)^2`` (see the module docstring), times
    ``exp(2 g)`` with ``metric``: the squared error in metres (what RMSE counts) is about the squared log-depth
    error times depth^2, so far pixels weigh as they do in the benchmark. With ``mae_share`` > 0, that share of the
    loss is the same cross-entropy weighted by ``|i - l|`` (times ``exp(g)`` with ``metric``): the absolute error in
    metres, what MAE counts (:func:`choice_loss`'s ``power``).

    Args:
        out: the network's output with ``log_depth_integrated`` ``i``, ``linear`` ``l`` and ``blend_logit``, each
            (B, 1, H, W) normalised log-depth (``blend_logit``: any real).
        gt_log: (B, 1, H, W) ground-truth normalised log-depth ``g``, meaningful where ``valid``.
        valid: (B, 1, H, W) bool.
        metric: weight by the depth (relative to the image's scale) as well.
        mae_share: in [0, 1], the MAE-oriented term's share; the RMSE-oriented one has the rest.

    Returns:
        A scalar.
    """
    return mixed_choice_loss(out["blend_logit"], out["log_depth_integrated"], out["linear"], gt_log, valid, metric,
                             mae_share)


def mixed_choice_loss(logit: torch.Tensor, take: torch.Tensor, other: torch.Tensor, gt_log: torch.Tensor,
                      valid: torch.Tensor, metric: bool = True, mae_share: float = 0.0) -> torch.Tensor:
    """``(1 - mae_share)`` x :func:`choice_loss` with ``power`` 2 + ``mae_share`` x with ``power`` 1 (each term
    computed only when its share is not 0). Arguments as :func:`choice_loss`'s; ``mae_share`` in [0, 1].

    Returns:
        A scalar.
    """
    if not 0.0 <= mae_share <= 1.0:
        raise ValueError(f"mae_share must lie in [0, 1], got {mae_share!r}")
    loss = logit.new_zeros(())
    if mae_share < 1.0:
        loss = loss + (1.0 - mae_share) * choice_loss(logit, take, other, gt_log, valid, metric, power=2)
    if mae_share > 0.0:
        loss = loss + mae_share * choice_loss(logit, take, other, gt_log, valid, metric, power=1)
    return loss


def prior_loss(out: dict, gt_log: torch.Tensor, valid: torch.Tensor, metric: bool = True) -> torch.Tensor:
    """The prior head's loss (``prior_mix``): as :func:`blend_loss`, for the weight ``beta`` of the linear
    interpolation ``l`` against the nearest fill ``f`` (``prior = f + beta (l - f)``): target ``clamp((g - f) / (l -
    f), 0, 1)``, weighted by ``(l - f)^2`` (times ``exp(2 g)`` with ``metric``).

    Args:
        out: the network's output with ``linear``, ``fill`` and ``prior_logit``, each (B, 1, H, W).
        gt_log, valid, metric: as in :func:`blend_loss`.

    Returns:
        A scalar.
    """
    return choice_loss(out["prior_logit"], out["linear"], out["fill"], gt_log, valid, metric)


def choice_loss(logit: torch.Tensor, take: torch.Tensor, other: torch.Tensor, gt_log: torch.Tensor,
                valid: torch.Tensor, metric: bool = True, power: int = 2) -> torch.Tensor:
    """Cross-entropy of a per-pixel mixing weight ``w = sigmoid(logit)`` in ``w take + (1 - w) other`` against the
    weight that would have hit the ground truth, ``clamp((g - other) / (take - other), 0, 1)``, weighted by
    ``|take - other|^power`` and, with ``metric``, by ``exp(power g)`` (the depth relative to the image's scale, to
    that power). The mix's error is ``|take - other| |w - target|`` in log-depth and about ``depth`` times that in
    metres, so ``power`` 2 weighs each pixel by what its squared error in metres can be (RMSE) and ``power`` 1 by
    what its absolute error can be (MAE).

    Args:
        logit: (B, 1, H, W) any real.
        take, other: (B, 1, H, W) normalised log-depth (detached here).
        gt_log: (B, 1, H, W) ground-truth normalised log-depth ``g``, meaningful where ``valid``.
        valid: (B, 1, H, W) bool.
        metric: weight by the depth (to ``power``) as well.
        power: 2 (squared errors) or 1 (absolute errors).

    Returns:
        A scalar.
    """
    if power not in (1, 2):
        raise ValueError(f"choice_loss: power must be 1 or 2, got {power!r}")
    take, other = take.detach(), other.detach()
    gap = take - other
    target = ((gt_log - other) / torch.where(gap.abs() > 1e-6, gap, torch.ones_like(gap))).clamp(0, 1)
    weight = (gap.square() if power == 2 else gap.abs()) * valid
    if metric:
        weight = weight * torch.exp(power * torch.where(valid, gt_log, torch.zeros_like(gt_log)).clamp(max=5.0))
    bce = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    return (bce * weight).sum() / weight.sum().clamp_min(1e-6)


@dataclass(frozen=True)
class LossWeights:
    """The training loss's terms (see the module docstring).

    Attributes:
        nll_weight: weight of the Laplace NLL term.
        grad_weight: weight of the multi-scale gradient-matching term.
        head_weight: weight of the direct supervision of the predicted gradients.
        blend_loss_weight: weight of the blend head's cross-entropy (with the blend); also of the prior head's
            (with ``network.prior_mix``).
        blend_metric_weight: weight the blend head's loss by the depth (:func:`blend_loss`'s ``metric``).
        blend_mae_share: the share of the blend head's loss weighted for absolute errors (MAE) rather than squared
            ones (RMSE), in [0, 1] (:func:`blend_loss`'s ``mae_share``); also the refit's
            (:class:`pipelines.depth.calibration.BlendHeadCalibration`).
        metric_l1_weight: weight of the L1 of the integrated depth in units of the image's scale, ``|exp(i) -
            exp(g)|`` (the error in metres over the median sparse depth: far pixels count as MAE counts them),
            added to the L1 of the log-depth (which counts relative errors).
    """

    nll_weight: float = 0.1
    grad_weight: float = 0.5
    head_weight: float = 0.1
    blend_loss_weight: float = 1.0
    blend_metric_weight: bool = True
    blend_mae_share: float = 0.0
    metric_l1_weight: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.blend_mae_share <= 1.0:
            raise ValueError(f"loss.blend_mae_share: expected a share in [0, 1], got {self.blend_mae_share!r}")


@dataclass(frozen=True)
class OptimSettings:
    """AdamW with a one-cycle learning rate over ``trainer.max_steps`` (``geo3d.schedule.step_one_cycle``).

    Attributes:
        lr: the peak learning rate.
        weight_decay: AdamW weight decay.
        blend_lr_scale: the blend head's (and the prior head's) learning rate relative to ``lr`` (its inputs are
            detached, so it cannot upset the rest). At 10x (blend version 1), the head's ReLUs died within 250
            steps and its weight became one constant (0.52 on every pixel of every pattern); at 1x it moves slowly
            (0.40-0.66 per pattern after 550 steps); at 10x with version 2's leaky ReLU (669 steps) it trained but
            was no more pattern-specific than at the config's 3x, and the model no better.
    """

    lr: float = 2e-3
    weight_decay: float = 1e-4
    blend_lr_scale: float = 1.0


# Checkpoints hold these in their hyper-parameters; torch.load(weights_only=True) rebuilds allow-listed classes only.
torch.serialization.add_safe_globals([LossWeights, OptimSettings])

SETTINGS_GROUPS = {"network": NetworkSettings, "integration": IntegrationSettings, "blend": BlendSettings,
                   "loss": LossWeights, "optim": OptimSettings}
"""The constructor's settings groups, by argument name (for :meth:`DepthCompletion.upgrade_hparams`)."""

RENAMED_HPARAMS = {"linear_blend": ("blend", "enabled"), "blend_version": ("blend", "version")}
"""Flat hyper-parameters of checkpoints written before the groups whose field has another name now."""


class DepthCompletion(pl.LightningModule):
    """OMNI-DC-style depth completion (:class:`~pipelines.depth.model.DepthCompletionNet`) with its training loop.

    Args:
        network: the network's size and inputs.
        integration: the integration layer's solver.
        blend: the blend with linear interpolation.
        loss: the loss's weights.
        optim: the optimiser and the blend head's learning-rate scale.
        max_depth: evaluation cap, metres (None: no cap).

    ``geo3d predict`` writes its outputs through :class:`DepthPredictionWriter` (a trainer callback).

    Example:
        >>> model = DepthCompletion(NetworkSettings(base_channels=4, sparse_channels=4), blend=BlendSettings(version=3))
        >>> model.hparams["blend"], model.hparams["optim"].lr
        (BlendSettings(enabled=True, version=3), 0.002)
    """

    def __init__(self, network: NetworkSettings = NetworkSettings(),
                 integration: IntegrationSettings = IntegrationSettings(), blend: BlendSettings = BlendSettings(),
                 loss: LossWeights = LossWeights(), optim: OptimSettings = OptimSettings(),
                 max_depth: float | None = 80.0):
        super().__init__()
        # every field, defaults included (under the Lightning CLI: its config, with the class path, so that a
        # --ckpt_path can be parsed back into the config)
        self.save_hyperparameters()
        self.loss_weights, self.optim, self.max_depth = loss, optim, max_depth
        self._eval_means = SampleMeans()  # validation/test metrics per (frame, pattern), exact under DDP
        self.net = DepthCompletionNet(network, integration, blend)

    @staticmethod
    def upgrade_hparams(hparams: dict) -> dict:
        """The hyper-parameters of a checkpoint written before the settings groups (23 flat arguments), grouped.

        The migrations of older flat checkpoints stay as they were: without ``linear_blend`` (before the blend) the
        blend is off; with ``linear_blend`` but no ``blend_version`` (its first design, 2026-12-01) the version is
        1; ``linear_prior`` without ``linear_input`` (the linear prior's first design) fed linear interpolation to
        the encoder too. A checkpoint with the groups is returned as it is.

        Args:
            hparams: the checkpoint's ``hyper_parameters``.

        Returns:
            A new dict with the groups (:data:`SETTINGS_GROUPS`).

        Example:
            >>> up = DepthCompletion.upgrade_hparams({"base_channels": 8, "lr": 0.003, "linear_blend": True})
            >>> up["network"].base_channels, up["optim"].lr, up["blend"]
            (8, 0.003, BlendSettings(enabled=True, version=1))
        """
        if any(group in hparams for group in SETTINGS_GROUPS):
            return dict(hparams)
        legacy = {} if "linear_blend" in hparams else {"linear_blend": False}
        if "linear_blend" in hparams and "blend_version" not in hparams:
            legacy["blend_version"] = 1
        if "linear_prior" not in hparams:
            legacy["linear_prior"] = False
        elif "linear_input" not in hparams:
            legacy["linear_input"] = True
        return regroup_hparams({**hparams, **legacy}, SETTINGS_GROUPS, RENAMED_HPARAMS)

    def forward(self, image: torch.Tensor, sparse: torch.Tensor) -> dict:
        """See :meth:`DepthCompletionNet.forward`: image (B, 3, H, W) in [0, 1], sparse (B, 1, H, W) metres."""
        return self.net(image, sparse)

    def loss(self, out: dict, gt: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss.

        Args:
            out: :meth:`forward`'s output.
            gt: (B, 1, H, W) float32 metres, 0 = missing.

        Returns:
            ``(loss, parts)``: a scalar and its terms.
        """
        h, w = gt.shape[-2:]
        valid = gt > 0
        gt_log = normalised_log_depth(gt, out["scale"], valid)
        blended = "blend_logit" in out
        residual = (out["log_depth_integrated"] if blended else out["log_depth"]) - gt_log
        l1 = _masked_mean(residual.abs(), valid)
        b = out["laplace_b"]
        nll = _masked_mean(residual.abs() / b + torch.log(b), valid)
        grad_match, head = residual.new_zeros(()), residual.new_zeros(())
        for s, predicted in enumerate(out["gradients"]):
            r, m = masked_pool(torch.where(valid, residual, torch.zeros_like(residual)), valid, s)
            d, dm = forward_differences(r, m)
            grad_match = grad_match + _masked_mean(d.abs(), dm)
            g, gm = masked_pool(gt_log, valid, s)
            target, tm = forward_differences(g, gm)
            predicted = predicted[..., : target.shape[-2], : target.shape[-1]]
            head = head + _masked_mean((predicted - target).abs(), tm)
        n = len(out["gradients"])
        hp = self.loss_weights
        loss = l1 + hp.nll_weight * nll + hp.grad_weight * grad_match / n + hp.head_weight * head / n
        parts = {"l1_log": l1, "laplace_nll": nll, "grad_match": grad_match / n, "head_grad": head / n}
        if hp.metric_l1_weight:
            integrated = out["log_depth_integrated"] if blended else out["log_depth"]
            parts["l1_metric"] = metric_l1(integrated, gt_log, valid)
            loss = loss + hp.metric_l1_weight * parts["l1_metric"]
        if blended:
            parts["blend_bce"] = blend_loss(out, gt_log, valid, metric=hp.blend_metric_weight,
                                            mae_share=hp.blend_mae_share)
            parts["l1_log_blended"] = _masked_mean((out["log_depth"] - gt_log).abs(), valid).detach()
            loss = loss + hp.blend_loss_weight * parts["blend_bce"]
        if "prior_logit" in out:
            parts["prior_bce"] = prior_loss(out, gt_log, valid, metric=hp.blend_metric_weight)
            loss = loss + hp.blend_loss_weight * parts["prior_bce"]
        return loss, parts

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self(batch["image"], batch["sparse"])
        loss, parts = self.loss(out, batch["gt"])
        n = batch["gt"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        for key, value in parts.items():
            self.log(f"train/{key}", value, batch_size=n)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Metrics of one (frame, pattern) sample (batch size 1), recorded by its ids; averaged over the split at
        the epoch's end (:class:`geo3d.metrics.distributed.SampleMeans`: every sample once under DDP)."""
        out = self(batch["image"], batch["sparse"])
        loss, _ = self.loss(out, batch["gt"])
        metrics = depth_metrics(out["depth"][:, 0], batch["gt"][:, 0], max_depth=self.max_depth)
        pattern = batch["pattern"][0]
        values = {"val/loss": loss}
        for key in METRIC_KEYS:
            values[f"val/{key}"] = metrics[key]
            values[f"val_{pattern}/{key}"] = metrics[key]
        if "blend_weight" in out:  # how much the output trusts the integration over linear interpolation
            values[f"val_{pattern}/blend_weight"] = out["blend_weight"].mean()
        if "prior_weight" in out:  # how much the integration's prior trusts linear interpolation over the nearest fill
            values[f"val_{pattern}/prior_weight"] = out["prior_weight"].mean()
        self._eval_means.add((batch["frame"][0], pattern), values)

    def on_validation_epoch_end(self) -> None:
        means = self._eval_means.compute("val/num_samples")
        self.log_dict(means, sync_dist=True)  # the same on every rank: sync_dist only averages equal values

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Complete a batch: ``{"depth", "uncertainty"}`` (B, 1, H, W) metres, with the batch's frame and pattern
        names (see :class:`DepthPredictionWriter`)."""
        out = self(batch["image"], batch["sparse"])
        return {"depth": out["depth"].cpu(), "uncertainty": uncertainty(out).cpu(), "frame": batch["frame"],
                "pattern": batch["pattern"]}

    def configure_optimizers(self):
        hp = self.optim
        heads = ("blend.", "prior_head.")  # the heads on detached inputs
        groups = [{"params": [p for name, p in self.net.named_parameters() if not name.startswith(heads)],
                   "lr": hp.lr}]
        head_params = [p for name, p in self.net.named_parameters() if name.startswith(heads)]
        if head_params:
            groups.append({"params": head_params, "lr": hp.lr * hp.blend_lr_scale})
        opt = torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        sched = step_one_cycle(opt, self.trainer.max_steps, pct_start=0.05)  # by steps: the same on any machine
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class DepthPredictionWriter(BasePredictionWriter):
    """Writes ``geo3d predict`` outputs: ``output_dir/<frame>_<pattern>.png`` (depth) and
    ``..._uncertainty.png`` (standard deviation), uint16 PNGs in metres x 256, atomically.

    Args:
        output_dir: the folder (created).
    """

    def __init__(self, output_dir: str = "out/depth/predict"):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)

    def write_on_batch_end(self, trainer, pl_module, prediction: dict, batch_indices, batch, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        for i, frame in enumerate(prediction["frame"]):
            name = f"{frame}_{prediction['pattern'][i].replace(':', '-')}"
            write_depth_png(self.output_dir / f"{name}.png", DepthMap(prediction["depth"][i, 0].float()), scale=256.0)
            write_depth_png(self.output_dir / f"{name}_uncertainty.png",
                            DepthMap(prediction["uncertainty"][i, 0].float()), scale=256.0)


def uncertainty(out: dict) -> torch.Tensor:
    """Per-pixel standard deviation of the depth, metres: (B, 1, H, W).

    The network predicts a Laplace scale ``b`` on the log-depth; a Laplace variable's standard deviation is
    ``sqrt(2) b`` and, to first order, ``std(depth) = depth x std(log depth)``.
    """
    return out["depth"] * out["laplace_b"] * 2**0.5
