"""The sparse-view Gaussian splatting LightningModule (GaussianObject's recipe without the diffusion repair).

Training (manual optimization, one view per step), as in 3DGS and gsplat's ``simple_trainer``:

* parameters ``means, scales (log), quats, opacities (logit), sh0, shN`` in a ``ParameterDict``, one Adam per
  parameter (the layout gsplat's ``DefaultStrategy`` edits in place when it duplicates, splits and prunes,
  keeping each optimizer's moments aligned with the Gaussians); the means' learning rate is scaled by the
  scene size and decays exponentially over ``trainer.max_steps``;
* loss ``(1 - w_ssim) L1 + w_ssim (1 - SSIM)`` (kornia) on the image composited over the background, plus
  ``w_mask |alpha - mask|`` when the images have masks, plus opacity and scale regularisers;
* SH degree raised by one every ``sh_increase_every`` steps up to ``sh_degree``;
* densification and pruning by ``gsplat.strategy.DefaultStrategy`` on both devices (the op layer's CPU
  rasterizer returns the ``meta`` it reads);
* floater pruning (GaussianObject): every ``floaters.every`` steps, Gaussians whose mean distance to their
  k nearest neighbours exceeds mean + lambda * std are removed (lambda annealed from lenient to strict);
  removal goes through gsplat's ``remove`` so the optimizers stay consistent.

The world frame is not normalised: learning rates and strategy thresholds are scaled by the scene size from
:func:`~pipelines.splatting.data.scene_center_and_scale` (as 3DGS scales by its cameras extent), so the
exported PLY is directly in the input's frame and units. Validation renders a few test views (PSNR/SSIM,
full image and inside the mask, images logged); ``test`` renders all test views and saves them beside the
ground truth. At the end of training the Gaussians are written as a standard 3DGS PLY with the view split.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import kornia
import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image

import ops
from geo3d.io.atomic import atomic_path, atomic_write_text
from geo3d.io.gaussian_ply import write_gaussian_ply
from geo3d.metrics import lpips_status, psnr, ssim
from geo3d.types import Gaussians
from geo3d.types.gaussians import SH_C0
from pipelines.splatting.data import SplatDataModule, scene_center_and_scale

PARAM_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN")


@dataclass
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


@dataclass
class LearningRates:
    """Adam learning rates per parameter group (3DGS defaults); ``means`` and ``means_final`` are multiplied
    by the scene scale, and the means' rate decays exponentially from ``means`` to ``means_final``."""

    means: float = 1.6e-4
    means_final: float = 1.6e-6
    scales: float = 5e-3
    quats: float = 1e-3
    opacities: float = 5e-2
    sh0: float = 2.5e-3
    shN: float = 2.5e-3 / 20


@dataclass
class Densification:
    """gsplat ``DefaultStrategy`` settings (its names; scale thresholds relative to the scene scale)."""

    refine_start_iter: int = 500
    refine_stop_iter: int = 15000
    refine_every: int = 100
    grow_grad2d: float = 2e-4
    grow_scale3d: float = 0.01
    prune_opa: float = 0.005
    prune_scale3d: float = 0.1
    reset_every: int = 3000
    max_gaussians: int = 200000


@dataclass
class FloaterPruning:
    """GaussianObject's floater elimination by k-NN distance statistics.

    Attributes:
        enabled: run it.
        every: steps between two prunings.
        start: first step; ``stop``: last step (None: ``refine_stop_iter`` of the densification).
        k: neighbours for the mean distance.
        lam_start: lambda at ``start`` (lenient); ``lam_end``: lambda at ``stop`` (strict).
    """

    enabled: bool = True
    every: int = 500
    start: int = 500
    stop: int | None = None
    k: int = 8
    lam_start: float = 3.0
    lam_end: float = 1.5


@dataclass
class LossWeights:
    """Weights of the loss terms, and ``random_background``: with masks, composite the target and the render over
    a random colour each step (instead of the fixed background), so transparent Gaussians cannot pass for
    background and the object has to be opaque exactly where the mask is."""

    ssim: float = 0.2
    mask: float = 0.1
    opacity: float = 0.0
    scale: float = 0.0
    random_background: bool = False


# Checkpoints hold the hyperparameters, these dataclasses among them; torch.load(weights_only=True), the default
# since torch 2.6, rebuilds only allow-listed classes.
torch.serialization.add_safe_globals([InitOptions, LearningRates, Densification, FloaterPruning, LossWeights])


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
    """

    def __init__(self, init: InitOptions | None = None,
                 lr: LearningRates | None = None, densification: Densification | None = None,
                 floaters: FloaterPruning | None = None, loss: LossWeights | None = None, sh_degree: int = 1,
                 sh_increase_every: int = 1000, export_dir: str | None = None, log_images: int = 3):
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
        self.save_hyperparameters()
        self.params = torch.nn.ParameterDict()
        self.register_buffer("scene_center", torch.zeros(3))
        self.register_buffer("scene_scale", torch.ones(()))
        self.register_buffer("background", torch.ones(3))
        self.strategy_state: dict | None = None
        self._val_images: list[torch.Tensor] = []
        self._test_rows: list[dict] = []
        self._train_start: float | None = None

    # --- set-up ---------------------------------------------------------------------------------------

    @property
    def datamodule(self) -> SplatDataModule:
        dm = getattr(self.trainer, "datamodule", None)
        if not isinstance(dm, SplatDataModule):
            raise TypeError("GaussianSplatting needs a SplatDataModule (data.class_path in the config)")
        return dm

    def setup(self, stage: str) -> None:
        """Initialise the Gaussians from the training views (skipped when a checkpoint provides them)."""
        dm = self.datamodule
        dm.setup(stage)
        self.background.copy_(torch.tensor(dm.background_color))
        if len(self.params):
            return
        center, scale = scene_center_and_scale(dm.train.cameras)
        self.scene_center.copy_(center)
        self.scene_scale.fill_(scale)
        points, colors = self._initial_points(dm)
        self._create_params(points, colors)

    def _initial_points(self, dm: SplatDataModule) -> tuple[torch.Tensor, torch.Tensor]:
        from pipelines.splatting import init as init_mod

        opts = self.init_options
        if opts.kind == "points":
            if not opts.points_path:
                raise ValueError("init.points_path: required with init.kind='points'")
            return init_mod.point_cloud_init(opts.points_path)
        bounds = init_mod.bounds_from_cameras(dm.train.cameras)
        if opts.kind == "random":
            return init_mod.random_init(bounds, opts.num_points, opts.seed)
        if opts.kind != "visual_hull":
            raise ValueError(f"init.kind: expected visual_hull, random or points, got {opts.kind!r}")
        if dm.train.masks is None:
            raise ValueError(f"init.kind='visual_hull' needs masks (RGBA images); {dm.path} has none: "
                             "use init.kind=random or points")
        return init_mod.visual_hull(dm.train.masks, dm.train.images, dm.train.cameras, bounds,
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
        scale = float(self.scene_scale)
        lrs = {**asdict(self.lr), "means": self.lr.means * scale}
        lrs.pop("means_final")
        return [torch.optim.Adam([self.params[name]], lr=lrs[name], eps=1e-15) for name in PARAM_NAMES]

    def _strategy(self):
        from gsplat.strategy import DefaultStrategy

        d = self.densification
        return DefaultStrategy(prune_opa=d.prune_opa, grow_grad2d=d.grow_grad2d, grow_scale3d=d.grow_scale3d,
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
        from gsplat.strategy.ops import remove

        from pipelines.splatting.floaters import annealed_lambda, floater_mask

        lam = annealed_lambda(step, f.start, stop, f.lam_start, f.lam_end)
        mask = floater_mask(self.params["means"].detach(), k=f.k, lam=lam)
        if bool(mask.any()):
            remove(params=self.params, optimizers=optimizers, state=self.strategy_state, mask=mask)
        self.log("train/floaters_removed", float(mask.sum()))

    @torch.no_grad()
    def _cap_gaussians(self, optimizers: dict) -> None:
        """Keep at most ``densification.max_gaussians``: drop the least opaque beyond it (a CPU budget)."""
        n, cap = len(self.params["means"]), self.densification.max_gaussians
        if n <= cap:
            return
        from gsplat.strategy.ops import remove

        order = torch.argsort(self.params["opacities"].detach(), descending=True)
        mask = torch.zeros(n, dtype=torch.bool, device=self.device)
        mask[order[cap:]] = True
        remove(params=self.params, optimizers=optimizers, state=self.strategy_state, mask=mask)

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
        self._test_rows = []

    def test_step(self, batch: dict, batch_idx: int) -> None:
        metrics, rgb = self._evaluate(batch)
        name = self.datamodule.test.names[int(batch["index"][0])]
        for k, v in metrics.items():
            self.log(f"test/{k}", v, batch_size=1)
        self._test_rows.append({"name": name, **metrics})
        self._save_render(name, batch["image"][0], rgb[0])

    def on_test_epoch_end(self) -> None:
        self._write_test_metrics(self._test_rows)

    @torch.no_grad()
    def evaluate_test_views(self) -> dict:
        """Render every test view of the datamodule, save ground truth | render PNGs, write
        ``test_metrics.json``; returns its content (``mean`` PSNR/SSIM, full and masked, and per view)."""
        views = self.datamodule.test
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
        """Write ``gaussians.ply`` (3DGS), ``split.json`` and ``train_info.json`` to the export folder."""
        out = self._export_dir()
        out.mkdir(parents=True, exist_ok=True)
        path = out / "gaussians.ply"
        write_gaussian_ply(path, self.gaussians())
        atomic_write_text(out / "split.json", json.dumps(self.datamodule.split(), indent=2) + "\n")
        info = {"steps": int(self.global_step), "num_gaussians": len(self.params["means"]),
                "train_seconds": None if self._train_start is None else time.perf_counter() - self._train_start,
                "scene_center": self.scene_center.tolist(), "scene_scale": float(self.scene_scale),
                "init": asdict(self.init_options)}
        atomic_write_text(out / "train_info.json", json.dumps(info, indent=2) + "\n")
        return path
