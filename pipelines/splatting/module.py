"""The sparse-view Gaussian splatting LightningModule (GaussianObject's recipe without the diffusion repair).

Training (manual optimization, one view per step), as in 3DGS and gsplat's ``simple_trainer``:

* parameters ``means, scales (log), quats, opacities (logit), sh0, shN`` in a ``ParameterDict``, one Adam per
  parameter (the layout gsplat's ``DefaultStrategy`` edits in place when it duplicates, splits and prunes,
  keeping each optimizer's moments aligned with the Gaussians); the means' learning rate is scaled by the
  scene size and decays exponentially over ``trainer.max_steps``;
* loss ``(1 - w_ssim) L1 + w_ssim (1 - SSIM)`` (kornia) on the image composited over the background, plus
  ``w_mask |alpha - mask|`` when the images have masks, plus opacity and scale regularisers;
* SH degree raised by one every ``sh_increase_every`` steps up to ``sh_degree``;
* densification and pruning by gsplat's ``DefaultStrategy`` through the op layer (:mod:`ops.densify`), on both
  devices (the op layer's CPU rasterizer returns the ``meta`` it reads);
* floater pruning (GaussianObject): every ``floaters.every`` steps, Gaussians whose mean distance to their
  k nearest neighbours exceeds mean + lambda * std are removed (lambda annealed from lenient to strict);
  removal goes through :func:`ops.remove_gaussians` (gsplat's ``remove``) so the optimizers stay consistent.

The world frame is not normalised: learning rates and strategy thresholds are scaled by the scene size from
:func:`~pipelines.splatting.cameras.scene_center_and_scale` (as 3DGS scales by its cameras extent), so the
exported PLY is directly in the input's frame and units. Validation renders a few test views (PSNR/SSIM,
full image and inside the mask, images logged); ``test`` renders all test views and saves them beside the
ground truth. At the end of training the Gaussians are written as a standard 3DGS PLY with the view split.

The model never reads the trainer's datamodule: what it needs of the data comes in as ``scene``
(:class:`~pipelines.splatting.data.SplatScene`: the loaded training and test views, the background, the split),
which ``geo3d fit`` links from ``SplatDataModule.scene`` at instantiation and Python code passes explicitly
(``GaussianSplatting(..., scene=datamodule.scene)``); the test batches carry their view names. ``scene`` is not a
hyper-parameter (it holds the images): a module loaded from a checkpoint has none, and needs none to render.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import kornia
import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image

import ops
from geo3d.io.atomic import atomic_path, atomic_write_text
from geo3d.io.checkpoint import regroup_hparams
from geo3d.io.gaussian_ply import write_gaussian_ply
from geo3d.metrics import lpips_status, psnr, ssim
from geo3d.types import Gaussians
from geo3d.types.gaussians import SH_C0
from pipelines.splatting.cameras import scene_center_and_scale
from pipelines.splatting.data import SplatScene

PARAM_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN")


INIT_KINDS = ("visual_hull", "random", "points")


@dataclass(frozen=True)
class InitOptions:
    """How the Gaussians start.

    Attributes:
        kind: ``"visual_hull"`` (carved from the training masks), ``"random"`` (uniform in the camera-derived
            bounds) or ``"points"`` (a PLY point cloud, e.g. COLMAP's points).
        resolution: visual hull: voxels along the longest side of the first grid.
        refine_resolution: visual hull: voxels along the longest side of the refined grid.
        min_views: visual hull: a voxel survives when inside the mask in at least this many views
            (None: V - 1).
        num_points: random init: number of points; visual hull: at most this many (subsampled).
        points_path: PLY file for ``kind="points"``.
        opacity: initial opacity of every Gaussian.
        seed: seed of the random init and subsampling.
    """

    kind: Literal["visual_hull", "random", "points"] = "visual_hull"
    resolution: int = 64
    refine_resolution: int = 128
    min_views: int | None = None
    num_points: int = 20000
    points_path: str | None = None
    opacity: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INIT_KINDS:
            raise ValueError(f"init.kind: expected visual_hull, random or points, got {self.kind!r}")
        if self.kind == "points" and not self.points_path:
            raise ValueError("init.points_path: required with init.kind='points'")


@dataclass(frozen=True)
class LearningRates:
    """Adam learning rates per parameter group (3DGS defaults).

    Attributes:
        means: the means' rate at step 0, times the scene scale (metres).
        means_final: the means' rate at ``trainer.max_steps``, times the scene scale; it decays exponentially
            from ``means`` to this.
        scales: rate of the log scales.
        quats: rate of the (unnormalised) rotation quaternions.
        opacities: rate of the opacity logits.
        sh0: rate of the SH DC coefficients (the base colour).
        shN: rate of the higher SH coefficients (3DGS: ``sh0 / 20``).
    """

    means: float = 1.6e-4
    means_final: float = 1.6e-6
    scales: float = 5e-3
    quats: float = 1e-3
    opacities: float = 5e-2
    sh0: float = 2.5e-3
    shN: float = 2.5e-3 / 20


@dataclass(frozen=True)
class Densification:
    """Densification and pruning: gsplat ``DefaultStrategy`` settings (its names), plus a Gaussian budget.

    Attributes:
        refine_start_iter: first step that duplicates, splits or prunes.
        refine_stop_iter: no refinement from this step on (also the default end of floater pruning).
        refine_every: steps between two refinements.
        grow_grad2d: a Gaussian grows when its mean 2D position gradient (pixels, normalised by the image size)
            exceeds this.
        grow_scale3d: growing Gaussians smaller than this (times the scene scale) are duplicated, larger ones
            split.
        prune_opa: Gaussians less opaque than this are pruned.
        prune_scale3d: Gaussians larger than this (times the scene scale) are pruned after the first opacity
            reset.
        reset_every: steps between two opacity resets.
        max_gaussians: at most this many Gaussians after each step: the least opaque beyond it are dropped
            (a CPU memory and time budget; not a gsplat setting).
    """

    refine_start_iter: int = 500
    refine_stop_iter: int = 15000
    refine_every: int = 100
    grow_grad2d: float = 2e-4
    grow_scale3d: float = 0.01
    prune_opa: float = 0.005
    prune_scale3d: float = 0.1
    reset_every: int = 3000
    max_gaussians: int = 200000


@dataclass(frozen=True)
class FloaterPruning:
    """GaussianObject's floater elimination by k-NN distance statistics.

    Attributes:
        enabled: run it.
        every: steps between two prunings.
        start: first step.
        stop: last step (None: ``refine_stop_iter`` of the densification).
        k: neighbours for the mean distance.
        lam_start: lambda at ``start`` (lenient).
        lam_end: lambda at ``stop`` (strict).
    """

    enabled: bool = True
    every: int = 500
    start: int = 500
    stop: int | None = None
    k: int = 8
    lam_start: float = 3.0
    lam_end: float = 1.5


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms, and the random background.

    Attributes:
        ssim: weight of D-SSIM against L1 in the image loss ``(1 - ssim) L1 + ssim (1 - SSIM)``.
        mask: weight of ``|alpha - mask|`` (images with masks only).
        opacity: weight of the mean opacity (a sparsity regulariser).
        scale: weight of the mean largest scale over the scene scale.
        random_background: with masks, composite the target and the render over a random colour each step
            (instead of the fixed background), so transparent Gaussians cannot pass for background and the
            object has to be opaque exactly where the mask is.
    """

    ssim: float = 0.2
    mask: float = 0.1
    opacity: float = 0.0
    scale: float = 0.0
    random_background: bool = False


# Checkpoints hold the hyperparameters, these dataclasses among them; torch.load(weights_only=True), the default
# since torch 2.6, rebuilds only allow-listed classes.
torch.serialization.add_safe_globals([InitOptions, LearningRates, Densification, FloaterPruning, LossWeights])

GROUPS: dict[str, type] = {"init": InitOptions, "lr": LearningRates, "densification": Densification,
                           "floaters": FloaterPruning, "loss": LossWeights}
"""The typed settings groups: constructor argument -> dataclass."""


class GaussianSplatting(pl.LightningModule):
    """3D Gaussians fitted to a few posed images.

    Args:
        init: how the Gaussians start.
        lr: Adam learning rates.
        densification: gsplat ``DefaultStrategy`` settings.
        floaters: floater pruning settings.
        loss: loss weights.
        sh_degree: final spherical-harmonics degree (0-3).
        sh_increase_every: steps between SH degree increases.
        export_dir: where the PLY, split, metrics and test renders go (None: the trainer's log dir).
        log_images: validation views logged as images (ground truth | render).
        scene: the data the model starts from and is evaluated on (training and test views, background, split):
            ``SplatDataModule.scene``, linked by ``geo3d fit``. Not saved as a hyper-parameter; None (a module
            loaded from a checkpoint) renders and tests, but cannot initialise new Gaussians.
    """

    def __init__(self, init: InitOptions | None = None,
                 lr: LearningRates | None = None, densification: Densification | None = None,
                 floaters: FloaterPruning | None = None, loss: LossWeights | None = None, sh_degree: int = 1,
                 sh_increase_every: int = 1000, export_dir: str | None = None, log_images: int = 3,
                 scene: SplatScene | None = None):
        super().__init__()
        self.automatic_optimization = False
        self.init_options = init or InitOptions()
        self.lr = lr or LearningRates()
        self.densification = densification or Densification()
        self.floaters = floaters or FloaterPruning()
        self.loss_weights = loss or LossWeights()
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree: expected 0-3, got {sh_degree}")
        self.sh_degree = sh_degree
        self.sh_increase_every = sh_increase_every
        self.export_dir = export_dir
        self.log_images = log_images
        self.scene = scene
        self.save_hyperparameters(ignore=["scene"])
        self.params = torch.nn.ParameterDict()
        self.register_buffer("scene_center", torch.zeros(3))
        self.register_buffer("scene_scale", torch.ones(()))
        self.register_buffer("background", torch.ones(3))
        self.strategy_state: dict | None = None
        self._val_images: list[torch.Tensor] = []
        self._test_rows: list[dict] = []
        self._train_start: float | None = None

    # --- set-up ---------------------------------------------------------------------------------------

    @staticmethod
    def upgrade_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
        """Hyper-parameters of an older checkpoint in today's signature (for :func:`geo3d.io.checkpoint.load_module`).

        The settings have been grouped since the first version, so checkpoints written by earlier code (its groups
        as dataclasses, or as dicts with Lightning's CLI instantiator) load unchanged: this is a no-op for them.
        Flat keys that name a field of a group (hand-written or flattened hyper-parameters) move into that group
        with :func:`~geo3d.io.checkpoint.regroup_hparams`; ``opacity``, a field of both ``init`` and ``loss``,
        is the initial opacity (the loss weight is only ever written grouped).

        Args:
            hparams: the checkpoint's ``hyper_parameters``.

        Returns:
            The grouped hyper-parameters (a new dict).
        """
        return regroup_hparams(hparams, GROUPS, renames={"opacity": ("init", "opacity")})

    def setup(self, stage: str) -> None:
        """Initialise the Gaussians from the scene's training views (skipped when a checkpoint provides them)."""
        if self.scene is not None:
            self.background.copy_(torch.tensor(self.scene.background))
        if len(self.params) or self.scene is None:
            return  # restored from a checkpoint (now, or by the trainer right after this hook), or nothing to do
        center, scale = scene_center_and_scale(self.scene.train.cameras)
        self.scene_center.copy_(center)
        self.scene_scale.fill_(scale)
        points, colors = self._initial_points(self.scene)
        self._create_params(points, colors)

    def _require_gaussians(self) -> None:
        if not len(self.params):
            raise ValueError("GaussianSplatting has no Gaussians: give it scene=SplatDataModule(...).scene to "
                             "initialise them (geo3d fit links it), or load a checkpoint")

    def _initial_points(self, scene: SplatScene) -> tuple[torch.Tensor, torch.Tensor]:
        from pipelines.splatting import init as init_mod

        opts = self.init_options
        if opts.kind == "points":
            return init_mod.point_cloud_init(opts.points_path)
        bounds = init_mod.bounds_from_cameras(scene.train.cameras)
        if opts.kind == "random":
            return init_mod.random_init(bounds, opts.num_points, opts.seed)
        if scene.train.masks is None:
            raise ValueError(f"init.kind='visual_hull' needs masks (RGBA images); {scene.source} has none: "
                             "use init.kind=random or points")
        return init_mod.visual_hull(scene.train.masks, scene.train.images, scene.train.cameras, bounds,
                                    resolution=opts.resolution, refine_resolution=opts.refine_resolution,
                                    min_views=opts.min_views, max_points=opts.num_points, seed=opts.seed)

    def _create_params(self, points: torch.Tensor, colors: torch.Tensor) -> None:
        points = points.float()
        n = points.shape[0]
        _, dist = ops.knn(points, points, min(4, n))
        nn_dist = dist[:, 1:].mean(1) if n > 1 else torch.full((n,), float(self.scene_scale) * 0.01)
        nn_dist = nn_dist.clamp_min(1e-7)
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1
        k_rest = (self.sh_degree + 1) ** 2 - 1
        opacity = torch.logit(torch.tensor(self.init_options.opacity))
        self.params = torch.nn.ParameterDict({
            "means": torch.nn.Parameter(points),
            "scales": torch.nn.Parameter(nn_dist.log()[:, None].repeat(1, 3)),
            "quats": torch.nn.Parameter(quats),
            "opacities": torch.nn.Parameter(torch.full((n,), float(opacity))),
            "sh0": torch.nn.Parameter(((colors.float() - 0.5) / SH_C0)[:, None, :]),
            "shN": torch.nn.Parameter(torch.zeros(n, k_rest, 3)),
        }).to(self.device)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resize the parameters to the checkpoint's Gaussian count before its state dict is loaded."""
        state = checkpoint["state_dict"]
        self.params = torch.nn.ParameterDict({
            name: torch.nn.Parameter(torch.empty_like(state[f"params.{name}"])) for name in PARAM_NAMES
        })

    def configure_optimizers(self):
        self._require_gaussians()
        scale = float(self.scene_scale)
        lrs = {**asdict(self.lr), "means": self.lr.means * scale}
        lrs.pop("means_final")
        return [torch.optim.Adam([self.params[name]], lr=lrs[name], eps=1e-15) for name in PARAM_NAMES]

    def _strategy(self) -> ops.DefaultStrategy:
        d = self.densification
        return ops.DefaultStrategy(prune_opa=d.prune_opa, grow_grad2d=d.grow_grad2d, grow_scale3d=d.grow_scale3d,
                               prune_scale3d=d.prune_scale3d, refine_start_iter=d.refine_start_iter,
                               refine_stop_iter=d.refine_stop_iter, refine_every=d.refine_every,
                               reset_every=d.reset_every)

    # --- rendering ------------------------------------------------------------------------------------

    def gaussians(self) -> Gaussians:
        """The current Gaussians (detached, CPU), in the input's world frame and units."""
        p = {k: v.detach().cpu() for k, v in self.params.items()}
        return Gaussians(p["means"], p["quats"], p["scales"], p["opacities"], torch.cat([p["sh0"], p["shN"]], 1))

    def current_sh_degree(self, step: int | None = None) -> int:
        step = self.global_step if step is None else step
        return min(self.sh_degree, step // max(self.sh_increase_every, 1))

    def render(self, world_to_cam: torch.Tensor, K: torch.Tensor, width: int, height: int,
               sh_degree: int | None = None, background: torch.Tensor | None = None):
        """Render the Gaussians into C cameras over the background.

        Args:
            world_to_cam: (C, 4, 4) float32 OpenCV transforms, metres.
            K: (C, 3, 3) float32 intrinsics, pixels.
            width: image width, pixels.
            height: image height, pixels.
            sh_degree: SH degree to use (default: the schedule's current degree).
            background: (3,) colour behind the Gaussians (default: the data's background).

        Returns:
            ``(rgb (C, H, W, 3), alpha (C, H, W, 1), meta)`` as :func:`ops.rasterize_gaussians`.
        """
        p = self.params
        degree = self.current_sh_degree() if sh_degree is None else sh_degree
        colors = torch.cat([p["sh0"], p["shN"]], 1)
        c = world_to_cam.shape[0]
        background = self.background if background is None else background
        return ops.rasterize_gaussians(p["means"], p["quats"], p["scales"].exp(), torch.sigmoid(p["opacities"]),
                                       colors, world_to_cam, K, width, height, sh_degree=degree,
                                       backgrounds=background[None].expand(c, 3))

    # --- training -------------------------------------------------------------------------------------

    def on_train_start(self) -> None:
        self._train_start = time.perf_counter()
        self.strategy = self._strategy()
        self.strategy_state = self.strategy.initialize_state(scene_scale=float(self.scene_scale))

    def _optimizer_dict(self) -> tuple[dict, list]:
        wrapped = self.optimizers()
        wrapped = wrapped if isinstance(wrapped, list) else [wrapped]
        return {name: w.optimizer for name, w in zip(PARAM_NAMES, wrapped)}, wrapped

    def _means_lr(self, step: int) -> float:
        """The means' learning rate at ``step``: exponential from ``lr.means`` to ``lr.means_final`` (both times
        the scene scale) over ``trainer.max_steps`` (30k, 3DGS's schedule, when the trainer sets none)."""
        total = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 else 30000
        t = min(step / total, 1.0)
        scale = float(self.scene_scale)
        return scale * math.exp((1 - t) * math.log(self.lr.means) + t * math.log(self.lr.means_final))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        step = self.global_step
        optimizers, wrapped = self._optimizer_dict()
        for group in optimizers["means"].param_groups:
            group["lr"] = self._means_lr(step)
        image = batch["image"]  # (1, H, W, 3), composited over self.background where there is a mask
        height, width = image.shape[1:3]
        background = None
        if self.loss_weights.random_background and "mask" in batch:
            background = torch.rand(3, device=self.device)
            image = image + (1 - batch["mask"][..., None]) * (background - self.background)
        rgb, alpha, meta = self.render(batch["world_to_cam"], batch["K"], width, height, background=background)
        self.strategy.step_pre_backward(self.params, optimizers, self.strategy_state, step, meta)

        w = self.loss_weights
        l1 = (rgb - image).abs().mean()
        dssim = 2 * kornia.losses.ssim_loss(rgb.permute(0, 3, 1, 2), image.permute(0, 3, 1, 2), 11)  # 1 - SSIM
        loss = (1 - w.ssim) * l1 + w.ssim * dssim
        if "mask" in batch and w.mask > 0:
            mask_loss = (alpha[..., 0] - batch["mask"]).abs().mean()
            loss = loss + w.mask * mask_loss
            self.log("train/mask_l1", mask_loss)
        if w.opacity > 0:
            loss = loss + w.opacity * torch.sigmoid(self.params["opacities"]).mean()
        if w.scale > 0:
            loss = loss + w.scale * (self.params["scales"].exp().amax(-1).mean() / self.scene_scale)

        self.manual_backward(loss)
        self.strategy.step_post_backward(self.params, optimizers, self.strategy_state, step, meta)
        # One LightningOptimizer step advances global_step once per training step; the rest step directly.
        wrapped[0].step()
        for name in PARAM_NAMES[1:]:
            optimizers[name].step()
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        self._prune_floaters(step + 1, optimizers)
        self._cap_gaussians(optimizers)

        with torch.no_grad():
            self.log("train/loss", loss, prog_bar=True)
            self.log("train/l1", l1)
            self.log("train/psnr", float(psnr(rgb.detach().clamp(0, 1), image)[0]), prog_bar=True)
            self.log("train/num_gaussians", float(len(self.params["means"])), prog_bar=True)
            self.log("train/sh_degree", float(self.current_sh_degree(step)))
        return loss.detach()

    @torch.no_grad()
    def _prune_floaters(self, step: int, optimizers: dict) -> None:
        f = self.floaters
        stop = f.stop if f.stop is not None else self.densification.refine_stop_iter
        if not f.enabled or step < f.start or step > stop or step % f.every:
            return
        from pipelines.splatting.floaters import annealed_lambda, floater_mask

        lam = annealed_lambda(step, f.start, stop, f.lam_start, f.lam_end)
        mask = floater_mask(self.params["means"].detach(), k=f.k, lam=lam)
        if bool(mask.any()):
            ops.remove_gaussians(self.params, optimizers, self.strategy_state, mask)
        self.log("train/floaters_removed", float(mask.sum()))

    @torch.no_grad()
    def _cap_gaussians(self, optimizers: dict) -> None:
        """Keep at most ``densification.max_gaussians``: drop the least opaque beyond it (a CPU budget)."""
        n, cap = len(self.params["means"]), self.densification.max_gaussians
        if n <= cap:
            return
        order = torch.argsort(self.params["opacities"].detach(), descending=True)
        mask = torch.zeros(n, dtype=torch.bool, device=self.device)
        mask[order[cap:]] = True
        ops.remove_gaussians(self.params, optimizers, self.strategy_state, mask)

    def on_train_end(self) -> None:
        """Export the Gaussians and evaluate every test view (so ``fit`` alone reports the test numbers)."""
        self.export()
        summary = self.evaluate_test_views()
        if summary:
            m = summary["mean"]
            print(f"[splatting] {summary['num_views']} test views: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}"
                  + (f", masked PSNR {m['psnr_masked']:.2f} dB" if "psnr_masked" in m else "")
                  + f"; {summary['num_gaussians']} Gaussians; {summary['lpips']}; written to {self._export_dir()}")

    # --- evaluation -----------------------------------------------------------------------------------

    def _evaluate(self, batch: dict) -> tuple[dict, torch.Tensor]:
        image = batch["image"]
        height, width = image.shape[1:3]
        rgb, alpha, _ = self.render(batch["world_to_cam"], batch["K"], width, height, sh_degree=self.sh_degree)
        rgb = rgb.clamp(0, 1)
        metrics = {"psnr": float(psnr(rgb, image)[0]), "ssim": float(ssim(rgb, image)[0])}
        if "mask" in batch:
            inside = batch["mask"] > 0.5
            metrics["psnr_masked"] = float(psnr(rgb, image, inside)[0])
            metrics["ssim_masked"] = float(ssim(rgb, image, inside)[0])
        return metrics, rgb

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        metrics, rgb = self._evaluate(batch)
        for k, v in metrics.items():
            self.log(f"val/{k}", v, batch_size=1)
        if batch_idx < self.log_images:
            self._val_images.append(torch.cat([batch["image"][0], rgb[0]], 1).cpu())

    def on_validation_epoch_end(self) -> None:
        logger = self.logger
        if self._val_images and logger is not None and hasattr(logger.experiment, "add_image"):
            for i, im in enumerate(self._val_images):
                logger.experiment.add_image(f"val/view_{i}", im.permute(2, 0, 1), self.global_step)
        self._val_images = []

    def on_test_start(self) -> None:
        self._require_gaussians()
        self._test_rows = []

    def test_step(self, batch: dict, batch_idx: int) -> None:
        metrics, rgb = self._evaluate(batch)
        name = batch["name"][0]
        for k, v in metrics.items():
            self.log(f"test/{k}", v, batch_size=1)
        self._test_rows.append({"name": name, **metrics})
        self._save_render(name, batch["image"][0], rgb[0])

    def on_test_epoch_end(self) -> None:
        self._write_test_metrics(self._test_rows)

    @torch.no_grad()
    def evaluate_test_views(self) -> dict:
        """Render every test view of the scene, save ground truth | render PNGs, write ``test_metrics.json``;
        returns its content (``mean`` PSNR/SSIM, full and masked, and per view); ``{}`` without a scene."""
        if self.scene is None:
            return {}
        views = self.scene.test
        rows = []
        for i in range(len(views)):
            batch = {"image": views.images[i:i + 1].to(self.device), "K": views.cameras.K[i:i + 1].to(self.device),
                     "world_to_cam": views.cameras.world_to_cam[i:i + 1].to(self.device)}
            if views.masks is not None:
                batch["mask"] = views.masks[i:i + 1].to(self.device)
            metrics, rgb = self._evaluate(batch)
            rows.append({"name": views.names[i], **metrics})
            self._save_render(views.names[i], batch["image"][0], rgb[0])
        return self._write_test_metrics(rows)

    def _save_render(self, name: str, image: torch.Tensor, rgb: torch.Tensor) -> None:
        """Write ``test_renders/<name>.png``: ground truth (left) beside the render (right)."""
        side = torch.cat([image, rgb], 1).cpu().numpy()
        stem = Path(name).with_suffix("").as_posix().replace("/", "_")
        with atomic_path(self._export_dir() / "test_renders" / f"{stem}.png") as tmp:
            Image.fromarray((side * 255 + 0.5).clip(0, 255).astype(np.uint8)).save(tmp, format="PNG")

    def _write_test_metrics(self, rows: list[dict]) -> dict:
        if not rows:
            return {}
        keys = [k for k in rows[0] if k != "name"]
        mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
        _, lpips_note = lpips_status()
        summary = {"mean": mean, "num_views": len(rows), "num_gaussians": len(self.params["means"]),
                   "steps": int(self.global_step), "lpips": lpips_note, "views": rows}
        atomic_write_text(self._export_dir() / "test_metrics.json", json.dumps(summary, indent=2) + "\n")
        return summary

    # --- export ---------------------------------------------------------------------------------------

    def _export_dir(self) -> Path:
        if self.export_dir:
            return Path(self.export_dir)
        log_dir = self.trainer.log_dir if self.trainer is not None else None
        return Path(log_dir or ".")

    def export(self) -> Path:
        """Write ``gaussians.ply`` (3DGS), ``split.json`` (with a scene) and ``train_info.json`` to the export
        folder; returns the PLY's path."""
        out = self._export_dir()
        out.mkdir(parents=True, exist_ok=True)
        path = out / "gaussians.ply"
        write_gaussian_ply(path, self.gaussians())
        if self.scene is not None:
            atomic_write_text(out / "split.json", json.dumps(self.scene.split, indent=2) + "\n")
        info = {"steps": int(self.global_step), "num_gaussians": len(self.params["means"]),
                "train_seconds": None if self._train_start is None else time.perf_counter() - self._train_start,
                "scene_center": self.scene_center.tolist(), "scene_scale": float(self.scene_scale),
                "init": asdict(self.init_options)}
        atomic_write_text(out / "train_info.json", json.dumps(info, indent=2) + "\n")
        return path
