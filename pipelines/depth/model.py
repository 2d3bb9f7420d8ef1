"""The depth-completion network: image + sparse depth -> multi-resolution log-depth gradients -> integrated depth.

OMNI-DC's recipe at a CPU-trainable size:

1. **Scale normalisation.** Depths are divided by the median valid sparse depth ``s`` of each image and the network
   works in ``log(depth / s)``: the prediction is equivariant to the scene's scale (metres or millimetres, a room or
   a street), and a gradient of log-depth is a relative depth change.
2. **Inputs.** The RGB image; the sparse points through a sparse branch on the op layer (``ops.SubMConv2d`` over the
   valid pixels only, so its cost follows the number of points, not the image size), densified; the
   nearest-sample fill of the sparse log-depth with the distance to that sample (:func:`nearest_fill`, jump
   flooding in torch), which hands the encoder where the samples are and what they say at any sparsity; and
   optionally (``linear_input``, off by default) the log of the linear interpolation of the sparse depth.
3. **Encoder-decoder** (a small U-Net with strided convolutions to 1/16) with heads at 1/4, 1/2 and full resolution:
   log-depth gradients (x and y forward differences) and their confidences; at full resolution also a per-pixel
   Laplace scale (uncertainty of the log-depth) and a weight per sparse observation (so outliers can be discounted).
4. **Integration** (:class:`pipelines.depth.integration.MultiResIntegration`, the op layer's
   :func:`ops.integrate_gradients`): the log-depth that best agrees, in weighted least squares, with the gradients at
   all three resolutions and with the sparse observations, solved by conjugate gradients and differentiated
   implicitly. The nearest fill of step 2 (or, with ``linear_prior``, the
   linear interpolation of the sparse depth) is, with a small weight ``lam``, its prior where the gradients'
   confidences are low. CG starts from the linear interpolation whenever the model computes one (step 5), else from
   the prior: the solution lies closer to it (20 instead of 27 iterations on the KITTI frame at inference). With
   ``prior_mix`` the prior is chosen per pixel between the two: a small head predicts ``beta`` in (0, 1) and the
   prior is ``fill + beta (linear - fill)``, trained like the blend head (step 5) towards the weight that would have
   hit the ground truth.
5. **Blend with linear interpolation** (``blend.enabled``, on by default): a small head looks at the decoder's
   features, the integrated log-depth, the linear interpolation of the sparse depth (Delaunay,
   :func:`pipelines.depth.baselines.complete_linear`) and the integration's own uncertainty ``log b``, and predicts a
   per-pixel weight ``alpha`` in (0, 1); the output is ``alpha x integrated + (1 - alpha) x linear`` in log-depth.
   Linear interpolation is hard to beat between dense-enough random samples on piecewise-planar scenes, and the
   integration wins where linear fails (scan lines, outliers, edges); the blend lets the network learn where each is
   right. The head's inputs are detached, so the integration trains exactly as without the blend, and the head is
   trained to predict, per pixel, the weight that would have been right (see
   :meth:`pipelines.depth.module.DepthCompletion.loss`). The integrated log-depth stays an output of its own
   (``log_depth_integrated``). Version 3 of the head (:class:`ContextBlendHead`) also sees a 120-pixel context, and
   the config refits it on the trained network's eval-mode outputs at the end of training
   (:mod:`pipelines.depth.calibration`).

Every operation is a torch op (or an op-layer sparse conv), so the network runs on CPU and CUDA unchanged.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

import ops
from pipelines.depth.baselines import complete_linear
from pipelines.depth.integration import MultiResIntegration

PAD_MULTIPLE = 16  # the encoder's total stride
FILL_FACTOR = 4  # the nearest-sample fill runs at 1/4 resolution


def median_scale(sparse: torch.Tensor) -> torch.Tensor:
    """Median valid depth per image.

    Args:
        sparse: (B, 1, H, W) float32 metres, 0 = missing.

    Returns:
        (B,) float32 metres.

    Raises:
        ValueError: an image has no valid sparse depth.
    """
    scales = []
    for b, item in enumerate(sparse):
        valid = item[item > 0]
        if valid.numel() == 0:
            raise ValueError(f"sparse depth of batch item {b} has no valid (non-zero) pixel")
        scales.append(valid.median())
    return torch.stack(scales)


def nearest_fill(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill every pixel with the value of its nearest valid pixel (jump flooding, torch only, any device).

    Jump flooding (Rong and Tan 2006) propagates, for every pixel, the coordinates of the nearest seed found so far
    from its 8 neighbours at offsets ``k = 2^m, ..., 2, 1`` pixels, then once more at 1 (``JFA+1``): log2(max(H, W))
    passes of 9 shifted comparisons instead of a distance transform on the CPU. It can miss the true nearest seed
    for a few pixels (the distance is then slightly larger than the exact one; measured against SciPy's exact
    transform in the tests).

    Args:
        values: (B, C, H, W) float, meaningful where ``mask``.
        mask: (B, 1, H, W) bool or 0/1; every batch item needs at least one valid pixel.

    Returns:
        ``(filled (B, C, H, W), distance (B, 1, H, W) float32 pixels to the seed used)``.
    """
    b, c, h, w = values.shape
    valid = mask.bool()[:, 0]
    ys = torch.arange(h, device=values.device, dtype=torch.float32)[:, None].expand(h, w)
    xs = torch.arange(w, device=values.device, dtype=torch.float32)[None, :].expand(h, w)
    inf = torch.tensor(float("inf"), device=values.device)
    seed_y = torch.where(valid, ys, inf)
    seed_x = torch.where(valid, xs, inf)

    def shifted(t: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
        out = torch.full_like(t, float("inf"))
        ys0, ys1 = max(dy, 0), h + min(dy, 0)
        xs0, xs1 = max(dx, 0), w + min(dx, 0)
        if ys1 > ys0 and xs1 > xs0:
            out[:, ys0:ys1, xs0:xs1] = t[:, ys0 - dy:ys1 - dy, xs0 - dx:xs1 - dx]
        return out

    steps = []
    k = 1 << max(h, w).bit_length()
    while k > 1:
        k //= 2
        steps.append(k)
    for k in [*steps, 1]:
        best = (seed_y - ys) ** 2 + (seed_x - xs) ** 2
        cand_y, cand_x = seed_y, seed_x
        for dy in (-k, 0, k):
            for dx in (-k, 0, k):
                if dy == 0 and dx == 0:
                    continue
                sy, sx = shifted(seed_y, dy, dx), shifted(seed_x, dy, dx)
                d = (sy - ys) ** 2 + (sx - xs) ** 2
                closer = d < best
                best = torch.where(closer, d, best)
                cand_y, cand_x = torch.where(closer, sy, cand_y), torch.where(closer, sx, cand_x)
        seed_y, seed_x = cand_y, cand_x
    index = (seed_y * w + seed_x).long().reshape(b, 1, h * w).expand(b, c, h * w)
    filled = values.reshape(b, c, h * w).gather(2, index).reshape(b, c, h, w)
    distance = torch.sqrt((seed_y - ys) ** 2 + (seed_x - xs) ** 2)[:, None]
    return filled, distance


_LINEAR_THREAD: ThreadPoolExecutor | None = None


def _forget_linear_thread() -> None:
    """In a forked child the parent's worker thread does not exist: start a new one there when needed."""
    global _LINEAR_THREAD
    _LINEAR_THREAD = None


os.register_at_fork(after_in_child=_forget_linear_thread)


def _linear_in_background(sparse: torch.Tensor) -> Future:
    """:func:`~pipelines.depth.baselines.complete_linear` of ``sparse`` ((B, 1, H, W) metres) on a worker thread.

    SciPy calls Qhull's Delaunay triangulation without the GIL, so it overlaps the U-Net, whose many small tensor ops
    leave cores idle: the forward at 352 x 1216 took 0.99 s instead of 1.17 s (median of 12, interleaved, 2 threads).
    Errors surface at ``.result()``.
    """
    global _LINEAR_THREAD
    if _LINEAR_THREAD is None:
        _LINEAR_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geo3d-linear")
    return _LINEAR_THREAD.submit(complete_linear, sparse)


def coarse_nearest_fill(values: torch.Tensor, mask: torch.Tensor, factor: int = FILL_FACTOR
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`nearest_fill` at ``1 / factor`` resolution, bilinearly upsampled: the samples are averaged per
    ``factor x factor`` cell first. 40 ms instead of 2.7 s at 352 x 1216 on this CPU; the fill is an input cue and
    the starting point of the integration, which enforces the exact samples itself.

    Args:
        values: (B, 1, H, W) float; mask: (B, 1, H, W) 0/1, H and W divisible by ``factor``.

    Returns:
        ``(filled (B, 1, H, W), distance (B, 1, H, W) pixels, approximate)``.
    """
    m = F.avg_pool2d(mask.float(), factor)
    v = F.avg_pool2d(values * mask, factor) / m.clamp_min(1e-6)
    filled, distance = nearest_fill(v, m > 0)
    size = values.shape[-2:]
    return (F.interpolate(filled, size=size, mode="bilinear", align_corners=False),
            F.interpolate(distance * factor, size=size, mode="bilinear", align_corners=False))


def cat_channels(tensors: list[torch.Tensor], channels_last: bool) -> torch.Tensor:
    """``torch.cat(tensors, 1)`` of (B, C_i, H, W) maps; with ``channels_last`` the result is written channels-last
    (NHWC) in one pass, whatever the inputs' layouts (a plain cat writes NCHW when any input is, and the next
    convolution then copies it again: 24-29 ms per full-resolution input map at 352 x 1216 on a 2-core CPU)."""
    if not channels_last:
        return torch.cat(tensors, 1)
    return torch.cat([t.permute(0, 2, 3, 1) for t in tensors], 3).permute(0, 3, 1, 2)


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class ContextBlendHead(nn.Module):
    """The blend head of version 3 (:class:`BlendSettings`): per-pixel logit of the weight ``alpha`` from the blend's
    input maps, seen locally and in a wide context.

    A local branch (a 3 x 3 convolution at full resolution) and a context branch (the inputs averaged over ``pool``
    x ``pool`` cells, then three 3 x 3 convolutions dilated 1, 2 and 4: a receptive field of 15 cells, 120 pixels at
    ``pool`` 8, bilinearly upsampled) meet in a last 3 x 3 convolution. The context is what version 2's 5 x 5 pixels
    lack: whether a pixel lies in a large region without samples, where the integration can drift far from the
    samples (pipelines/depth/README.md, the SIFT frame). Trained on a frozen network's outputs (see
    :mod:`pipelines.depth.calibration`), it beat version 2 trained the same way on the sparsest random points
    (2.46 against 2.69 m), SIFT (2.08 against 2.14) and 5 % outliers (1.86 against 1.87).

    Args:
        in_channels: channels of the input maps.
        channels: hidden channels of each branch.
        pool: the context branch's cell size, pixels.
    """

    def __init__(self, in_channels: int, channels: int, pool: int = 8):
        super().__init__()
        self.pool = pool
        def act() -> nn.Module:
            return nn.LeakyReLU(0.1, inplace=True)

        self.local = nn.Sequential(nn.Conv2d(in_channels, channels, 3, 1, 1), act())
        self.context = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, 1, 1), act(),
            nn.Conv2d(channels, channels, 3, 1, 2, dilation=2), act(),
            nn.Conv2d(channels, channels, 3, 1, 4, dilation=4), act(),
        )
        self.out = nn.Conv2d(2 * channels, 1, 3, 1, 1)
        nn.init.zeros_(self.out.weight)  # alpha = 0.5 at the start
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) input maps -> (B, 1, H, W) logit of ``alpha``."""
        context = self.context(F.avg_pool2d(x, self.pool, ceil_mode=True))
        context = F.interpolate(context, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(cat_channels([self.local(x), context], x.is_contiguous(memory_format=torch.channels_last)))


class SparseBranch(nn.Module):
    """Features of the sparse points on the op layer's submanifold 2D convolutions, densified.

    Args:
        channels: output channels.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ops.SubMConv2d(2, channels, 5, bias=True)
        self.conv2 = ops.SubMConv2d(channels, channels, 5, bias=True)

    def forward(self, log_depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) normalised log-depth and 0/1 mask -> (B, C, H, W) features, zero off the points."""
        b, _, h, w = log_depth.shape
        idx = mask[:, 0].nonzero()  # (V, 3) [batch, y, x]
        values = log_depth[idx[:, 0], 0, idx[:, 1], idx[:, 2]]
        feats = torch.stack([values, torch.ones_like(values)], 1)
        x = ops.sparse_tensor(feats, idx, (h, w), b)
        x = self.conv1(x)
        x = x.replace_feature(F.relu(x.features))
        x = self.conv2(x)
        x = x.replace_feature(F.relu(x.features))
        return x.dense()


@dataclass(frozen=True)
class NetworkSettings:
    """The network's size and inputs.

    Attributes:
        base_channels: channels at full resolution (doubling per level to 8x at 1/8 and 1/16).
        sparse_channels: channels of the sparse branch.
        obs_weight: scale of the learned sparse-observation weights (relative to gradient confidences ~1).
        linear_prior: the log of the linear interpolation of the sparse depth is the integration's prior and
            starting point (step 4 of the module docstring) instead of the nearest fill. Off by default: a
            400-step run with it won the sparsest random and keypoint inputs and lost the KITTI frame and the
            KITTI-mounted LiDAR pattern, where linear interpolation carries the LiDAR's see-through returns
            (pipelines/depth/README.md, the blend experiments).
        linear_input: the log of the linear interpolation is also an encoder input (step 2). Off by default: in a
            400-step run with it, the network copied linear interpolation's gradients everywhere and lost the
            LiDAR patterns' advantage.
        prior_mix: the integration's prior and start are a per-pixel mix of the nearest fill and the linear
            interpolation, ``fill + beta (linear - fill)``, with ``beta`` in (0, 1) from a small head on detached
            inputs (decoder features, both priors, their difference, the support, the mask, the sparse density).
            Overrides ``linear_prior``. Meant for the two priors' complementary failures (the nearest fill on sparse
            random points and keypoints, linear interpolation where a LiDAR sees past near edges); off by default: in
            a 693-step run the head learned no pattern-wise choice (mean ``beta`` 0.55-0.57 on every pattern) and the
            model lost the same three sparsest inputs as without it (pipelines/depth/README.md).
        channels_last: run the 2D convolutions on channels-last (NHWC) tensors and weights: the same numbers to
            float rounding, 10-20 % faster at inference on this CPU (oneDNN's native layout); the integration
            works on contiguous single-channel maps either way.
    """

    base_channels: int = 16
    sparse_channels: int = 16
    obs_weight: float = 10.0
    linear_prior: bool = False
    linear_input: bool = False
    prior_mix: bool = False
    channels_last: bool = True


@dataclass(frozen=True)
class IntegrationSettings:
    """The integration layer's solver (:class:`~pipelines.depth.integration.MultiResIntegration`).

    Attributes:
        lam: Tikhonov weight of the integration towards its prior, the fill (keeps the system well posed).
        iters: conjugate-gradient iterations (each of the forward and the implicit backward solve).
        tol: CG relative-residual tolerance (training: the forward and the implicit backward solve).
        eval_tol: CG tolerance in eval mode (validation, prediction, ``geo3d complete``); None: ``tol``. 1e-3:
            against ``tol`` 1e-4 the KITTI frame's solve then takes 20 instead of 40 iterations (0.2 s less at
            352 x 1216) and the benchmark's RMSEs move by less than 1.5 mm (pipelines/depth/README.md).
        backward_tol: CG tolerance of the implicit backward solve in training; None: ``tol``.
    """

    lam: float = 1e-2
    iters: int = 100
    tol: float = 1e-4
    eval_tol: float | None = 1e-3
    backward_tol: float | None = None


@dataclass(frozen=True)
class BlendSettings:
    """The blend of the integrated log-depth with linear interpolation (step 5 of the module docstring).

    Attributes:
        enabled: blend the integrated log-depth with linear interpolation by a learned per-pixel weight; False:
            the output is the integration's.
        version: the blend head's design. 2: its inputs include the image's sparse density (``(log10(share of
            valid sparse pixels) + 2) / 2``, one value per image: scan lines and sparse random points want different
            weights) and its hidden layer is a leaky ReLU (plain ReLUs died at a higher learning rate); 1: without
            the density, ReLU (checkpoints of 2026-12-01). 3: version 2's inputs into :class:`ContextBlendHead`, which
            also sees a 120-pixel context; meant to be refitted on the trained network's outputs at the end of
            training (:class:`pipelines.depth.calibration.BlendHeadCalibration`).

    Raises:
        ValueError: a version other than 1, 2 or 3.
    """

    enabled: bool = True
    version: int = 2

    def __post_init__(self) -> None:
        if self.version not in (1, 2, 3):
            raise ValueError(f"blend version: expected 1, 2 or 3, got {self.version!r}")


# Checkpoints hold these in their hyper-parameters; torch.load(weights_only=True) rebuilds allow-listed classes only.
torch.serialization.add_safe_globals([NetworkSettings, IntegrationSettings, BlendSettings])


class DepthCompletionNet(nn.Module):
    """Image + sparse depth -> dense depth with uncertainty, through multi-resolution gradient integration.

    Args:
        network: its size and inputs (:class:`NetworkSettings`).
        integration: the integration layer's solver (:class:`IntegrationSettings`).
        blend: the blend with linear interpolation (:class:`BlendSettings`).

    Example:
        >>> net = DepthCompletionNet(NetworkSettings(base_channels=4, sparse_channels=4)).eval()
        >>> sparse = torch.zeros(1, 1, 32, 48)
        >>> sparse[0, 0, ::4, ::6] = 5.0
        >>> with torch.no_grad():
        ...     out = net(torch.rand(1, 3, 32, 48), sparse)
        >>> out["depth"].shape, round(float(out["depth"].mean()), 3)  # an untrained net: the samples' constant 5 m
        (torch.Size([1, 1, 32, 48]), 5.0)
    """

    def __init__(self, network: NetworkSettings = NetworkSettings(),
                 integration: IntegrationSettings = IntegrationSettings(), blend: BlendSettings = BlendSettings()):
        super().__init__()
        c = network.base_channels
        self.channels_last = network.channels_last
        self.obs_weight = network.obs_weight
        self.sparse = SparseBranch(network.sparse_channels)
        self.linear_prior = network.linear_prior
        self.linear_input = network.linear_input
        # image, sparse features, [mask, nearest fill, distance to the sample(, linear interpolation)]
        in_ch = 3 + network.sparse_channels + 3 + int(network.linear_input)
        self.enc0 = _block(in_ch, c)
        self.enc1 = _block(c, 2 * c, 2)
        self.enc2 = _block(2 * c, 4 * c, 2)
        self.enc3 = _block(4 * c, 8 * c, 2)
        self.enc4 = _block(8 * c, 8 * c, 2)
        self.dec3 = _block(16 * c, 8 * c)
        self.dec2 = _block(12 * c, 4 * c)
        self.dec1 = _block(6 * c, 2 * c)
        self.dec0 = _block(3 * c, c)
        # per scale (1/4, 1/2, 1): 2 gradient channels + 2 confidence logits
        self.head2 = nn.Conv2d(4 * c, 4, 3, 1, 1)
        self.head1 = nn.Conv2d(2 * c, 4, 3, 1, 1)
        self.head0 = nn.Conv2d(c, 4 + 2, 3, 1, 1)  # + Laplace log-scale, observation-weight logit
        for head in (self.head2, self.head1, self.head0):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.integration = MultiResIntegration(lam=integration.lam, iters=integration.iters, tol=integration.tol,
                                               eval_tol=integration.eval_tol, backward_tol=integration.backward_tol)
        self.blend_version = blend.version
        self.blend = None
        if blend.enabled:  # [decoder features, integrated, linear, difference, log b, support, mask(, density)]
            extra = 6 if blend.version == 1 else 7
            if blend.version == 3:
                self.blend = ContextBlendHead(c + extra, c)
            else:
                hidden = nn.ReLU(inplace=True) if blend.version == 1 else nn.LeakyReLU(0.1, inplace=True)
                self.blend = nn.Sequential(nn.Conv2d(c + extra, c, 3, 1, 1), hidden, nn.Conv2d(c, 1, 3, 1, 1))
                nn.init.zeros_(self.blend[2].weight)  # alpha = 0.5 at the start
                nn.init.zeros_(self.blend[2].bias)
        self.prior_head = None
        if network.prior_mix:  # [decoder features, fill, linear, difference, support, mask, density] -> logit of beta
            self.prior_head = nn.Sequential(nn.Conv2d(c + 6, c, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True),
                                            nn.Conv2d(c, 1, 3, 1, 1))
            nn.init.zeros_(self.prior_head[2].weight)  # beta = 0.5 at the start
            nn.init.zeros_(self.prior_head[2].bias)
        if network.channels_last:  # weights stored channels-last too (loading a state dict keeps the layout)
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)

    def fuse_batch_norm(self) -> DepthCompletionNet:
        """Fold every batch norm of the U-Net into the convolution before it, for inference: the same function in
        eval mode to float rounding, one pass over each feature map fewer (~5 % of a forward at 352 x 1216). The
        network is changed in place and can no longer be trained; call it after ``eval()``.

        Returns:
            self.
        """
        if self.training:
            raise RuntimeError("fuse_batch_norm folds the running statistics: call eval() first")
        for name, block in self.named_children():
            if not isinstance(block, nn.Sequential):
                continue
            layers = list(block)
            fused = []
            while layers:
                layer = layers.pop(0)
                if isinstance(layer, nn.Conv2d) and layers and isinstance(layers[0], nn.BatchNorm2d):
                    layer = fuse_conv_bn_eval(layer, layers.pop(0))  # keeps the weight's memory layout
                fused.append(layer)
            setattr(self, name, nn.Sequential(*fused))
        return self

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, image: torch.Tensor, sparse: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Complete depth.

        Args:
            image: (B, 3, H, W) float32 RGB in [0, 1].
            sparse: (B, 1, H, W) float32 metres, 0 = missing; every image needs at least one valid pixel.

        Returns:
            dict with ``depth`` (B, 1, H, W) float32 metres; ``log_depth`` (B, 1, H, W) ``log(depth / scale)``;
            ``scale`` (B,) metres (the median sparse depth); ``laplace_b`` (B, 1, H, W) Laplace scale of the
            log-depth (uncertainty; ``depth * laplace_b`` is roughly the metric scale); ``gradients`` and
            ``confidences``: lists of (B, 2, H_s, W_s) for s = full, 1/2, 1/4 (log-depth forward differences of the
            padded image, see :func:`pad_inputs`); ``obs_weight`` (B, 1, H, W); ``fill`` (B, 1, H, W) the
            nearest-sample fill of the sparse log-depth; ``log_depth_integrated`` (B, 1, H, W) the integration's
            log-depth; with the blend (``blend.enabled``) also ``linear`` (B, 1, H, W) the log of the linear
            interpolation, ``blend_weight`` (B, 1, H, W) ``alpha`` (``log_depth = alpha integrated + (1 - alpha)
            linear``) and ``blend_logit`` (B, 1, H, W) its logit; with ``prior_mix`` also ``prior`` (B, 1, H, W) the
            integration's prior (normalised log-depth), ``prior_weight`` (B, 1, H, W) ``beta`` and ``prior_logit`` its
            logit.
        """
        if image.dim() != 4 or image.shape[1] != 3 or sparse.dim() != 4 or sparse.shape[1] != 1 \
                or image.shape[-2:] != sparse.shape[-2:] or image.shape[0] != sparse.shape[0]:
            raise ValueError(f"expected image (B, 3, H, W) and sparse (B, 1, H, W) of one size, got "
                             f"{tuple(image.shape)} and {tuple(sparse.shape)}")
        h, w = sparse.shape[-2:]
        scale = median_scale(sparse)
        share = (sparse > 0).float().mean(dim=(1, 2, 3))  # (B,) of the unpadded image
        image, sparse = pad_inputs(image, sparse)
        needs_linear = self.linear_prior or self.linear_input or self.blend is not None or self.prior_head is not None
        pending_linear = _linear_in_background(sparse) if needs_linear else None
        mask = (sparse > 0).float()
        log_sparse = torch.where(sparse > 0, torch.log(sparse.clamp_min(1e-6) / scale[:, None, None, None]),
                                 torch.zeros_like(sparse))
        fill, distance = coarse_nearest_fill(log_sparse, mask)
        support = torch.log1p(distance) / 8.0  # ~1 at 3000 pixels
        inputs = [image, self.sparse(log_sparse, mask), mask, fill, support]
        density = ((torch.log10(share.clamp_min(1e-6)) + 2.0) / 2.0)[:, None, None, None].expand_as(mask)
        linear = None
        if self.linear_input:
            linear = torch.log(pending_linear.result() / scale[:, None, None, None])
            inputs.append(linear)
        x = cat_channels(inputs, self.channels_last)  # channels-last: so then is every conv of the U-Net and heads
        e0 = self.enc0(x)
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        d3 = self.dec3(cat_channels([self._up(e4, e3), e3], self.channels_last))
        d2 = self.dec2(cat_channels([self._up(d3, e2), e2], self.channels_last))
        d1 = self.dec1(cat_channels([self._up(d2, e1), e1], self.channels_last))
        d0 = self.dec0(cat_channels([self._up(d1, e0), e0], self.channels_last))
        outs = [self.head0(d0), self.head1(d1), self.head2(d2)]
        if pending_linear is not None and linear is None:
            linear = torch.log(pending_linear.result() / scale[:, None, None, None])
        gradients = [o[:, :2] for o in outs]
        confidences = [F.softplus(o[:, 2:4] + 1.0) + 1e-3 for o in outs]
        laplace_b = F.softplus(outs[0][:, 4:5] - 2.0) + 1e-3
        obs_weight = self.obs_weight * torch.sigmoid(outs[0][:, 5:6] + 2.0) * mask
        out = {}
        if self.prior_head is not None:
            fill_ = fill.detach()
            prior_logit = self.prior_head(cat_channels([d0.detach(), fill_, linear, linear - fill_, support, mask,
                                                        density], self.channels_last))
            beta = torch.sigmoid(prior_logit)
            prior = (fill_ + beta * (linear - fill_)).detach()  # beta learns from its own loss only
            out |= {"prior": prior, "prior_weight": beta, "prior_logit": prior_logit, "linear": linear}
        else:
            prior = linear if self.linear_prior else fill.detach()
        # CG starts from linear interpolation when there is one: closer to the solution than the nearest fill
        start = linear if linear is not None and self.prior_head is None else prior
        integrated = self.integration(gradients, confidences, log_sparse, obs_weight, prior, x_init=start)
        out |= {"log_depth_integrated": integrated, "laplace_b": laplace_b, "fill": fill, "obs_weight": obs_weight}
        log_depth = integrated
        if self.blend is not None:
            # the head sees detached inputs: it learns where to trust which, and the integration trains as without it
            integrated_ = integrated.detach()
            features = [d0.detach(), integrated_, linear, integrated_ - linear, torch.log(laplace_b.detach()), support,
                        mask]
            if self.blend_version >= 2:
                features.append(density)
            features = cat_channels(features, self.channels_last)
            logit = self.blend(features)
            alpha = torch.sigmoid(logit)
            log_depth = alpha * integrated_ + (1 - alpha) * linear
            out |= {"linear": linear, "blend_weight": alpha, "blend_logit": logit}
        out = {key: t[..., :h, :w] for key, t in out.items()}
        log_depth = log_depth[..., :h, :w]
        depth = scale[:, None, None, None] * torch.exp(log_depth)
        return {"depth": depth, "log_depth": log_depth, "scale": scale, "gradients": gradients,
                "confidences": confidences, **out}


def pad_inputs(image: torch.Tensor, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad the bottom and right to multiples of :data:`PAD_MULTIPLE` (image replicated, sparse with zeros).

    Args:
        image: (B, 3, H, W); sparse: (B, 1, H, W).

    Returns:
        The padded pair, (B, 3, H', W') and (B, 1, H', W'); outputs are cropped back to (H, W).
    """
    h, w = sparse.shape[-2:]
    ph, pw = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
    if ph == 0 and pw == 0:
        return image, sparse
    return F.pad(image, (0, pw, 0, ph), mode="replicate"), F.pad(sparse, (0, pw, 0, ph))
