"""The depth-completion network: image + sparse depth -> multi-resolution log-depth gradients -> integrated depth.

OMNI-DC's recipe at a CPU-trainable size:

1. **Scale normalisation.** Depths are divided by the median valid sparse depth ``s`` of each image and the network
   works in ``log(depth / s)``: the prediction is equivariant to the scene's scale (metres or millimetres, a room or
   a street), and a gradient of log-depth is a relative depth change.
2. **Inputs.** The RGB image; the sparse points through a sparse branch on the op layer (``ops.SubMConv2d`` over the
   valid pixels only, so its cost follows the number of points, not the image size), densified; and a coarse-to-fine
   fill of the sparse log-depth (:func:`pyramid_fill`: mask-normalised average pooling, coarse levels filling the
   fine levels' holes) with its support, which hands the encoder where the samples are at any sparsity.
3. **Encoder-decoder** (a small U-Net with strided convolutions to 1/16) with heads at 1/4, 1/2 and full resolution:
   log-depth gradients (x and y forward differences) and their confidences; at full resolution also a per-pixel
   Laplace scale (uncertainty of the log-depth) and a weight per sparse observation (so outliers can be discounted).
4. **Integration** (:class:`pipelines.depth.integration.MultiResIntegration`): the log-depth that best agrees, in
   weighted least squares, with the gradients at all three resolutions and with the sparse observations, solved by
   conjugate gradients and differentiated implicitly. The fill of step 2 is its starting point.

Every operation is a torch op (or an op-layer sparse conv), so the network runs on CPU and CUDA unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import ops
from pipelines.depth.integration import MultiResIntegration

PAD_MULTIPLE = 16  # the encoder's total stride


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


def pyramid_fill(values: torch.Tensor, mask: torch.Tensor, levels: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill the holes of a sparse map coarse-to-fine with mask-normalised average pooling.

    Level ``k`` averages the valid values in ``2^k x 2^k`` cells; a pixel takes the finest level whose cell holds a
    sample (bilinearly upsampled), so dense regions keep detail and empty ones take a wide average.

    Args:
        values: (B, C, H, W) float, meaningful where ``mask``.
        mask: (B, 1, H, W) float 0/1.
        levels: pooling levels (the coarsest cell is ``2^(levels-1)`` pixels wide).

    Returns:
        ``(filled (B, C, H, W), support (B, 1, H, W))``: support is the level used, divided by ``levels``
        (0: a sample at the pixel).
    """
    h, w = values.shape[-2:]
    pyramid = [(values * mask, mask)]
    for _ in range(1, levels):
        v, m = pyramid[-1]
        if min(v.shape[-2:]) < 2:
            break
        pyramid.append((F.avg_pool2d(v, 2, ceil_mode=True), F.avg_pool2d(m, 2, ceil_mode=True)))
    filled = torch.zeros_like(values[:, :, :1, :1])
    level = torch.full_like(mask[:, :, :1, :1], float(len(pyramid)))
    for k in range(len(pyramid) - 1, -1, -1):
        v, m = pyramid[k]
        size = v.shape[-2:]
        filled = F.interpolate(filled, size=size, mode="bilinear", align_corners=False)
        level = F.interpolate(level, size=size, mode="nearest")
        here = m > 1e-6
        mean = v / m.clamp_min(1e-6)
        filled = torch.where(here, mean, filled)
        level = torch.where(here, torch.full_like(level, float(k)), level)
    return filled[..., :h, :w], (level[..., :h, :w] / levels)


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


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


class DepthCompletionNet(nn.Module):
    """Image + sparse depth -> dense depth with uncertainty, through multi-resolution gradient integration.

    Args:
        base_channels: channels at full resolution (doubling per level to 8x at 1/8 and 1/16).
        sparse_channels: channels of the sparse branch.
        lam: Tikhonov weight of the integration towards the fill (keeps the system well posed).
        iters: conjugate-gradient iterations (each of the forward and the implicit backward solve).
        tol: CG relative-residual tolerance.
        obs_weight: scale of the learned sparse-observation weights (relative to gradient confidences ~1).
    """

    def __init__(self, base_channels: int = 16, sparse_channels: int = 16, lam: float = 1e-2, iters: int = 100,
                 tol: float = 1e-4, obs_weight: float = 10.0):
        super().__init__()
        c = base_channels
        self.obs_weight = obs_weight
        self.sparse = SparseBranch(sparse_channels)
        in_ch = 3 + sparse_channels + 3  # image, sparse features, [mask, filled log-depth, support]
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
        self.integration = MultiResIntegration(lam=lam, iters=iters, tol=tol)

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
            coarse-to-fine fill of the sparse log-depth.
        """
        if image.dim() != 4 or image.shape[1] != 3 or sparse.dim() != 4 or sparse.shape[1] != 1 \
                or image.shape[-2:] != sparse.shape[-2:] or image.shape[0] != sparse.shape[0]:
            raise ValueError(f"expected image (B, 3, H, W) and sparse (B, 1, H, W) of one size, got "
                             f"{tuple(image.shape)} and {tuple(sparse.shape)}")
        h, w = sparse.shape[-2:]
        scale = median_scale(sparse)
        image, sparse = pad_inputs(image, sparse)
        mask = (sparse > 0).float()
        log_sparse = torch.where(sparse > 0, torch.log(sparse.clamp_min(1e-6) / scale[:, None, None, None]),
                                 torch.zeros_like(sparse))
        fill, support = pyramid_fill(log_sparse, mask)
        x = torch.cat([image, self.sparse(log_sparse, mask), mask, fill, support], 1)
        e0 = self.enc0(x)
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        d3 = self.dec3(torch.cat([self._up(e4, e3), e3], 1))
        d2 = self.dec2(torch.cat([self._up(d3, e2), e2], 1))
        d1 = self.dec1(torch.cat([self._up(d2, e1), e1], 1))
        d0 = self.dec0(torch.cat([self._up(d1, e0), e0], 1))
        outs = [self.head0(d0), self.head1(d1), self.head2(d2)]
        gradients = [o[:, :2] for o in outs]
        confidences = [F.softplus(o[:, 2:4] + 1.0) + 1e-3 for o in outs]
        laplace_b = F.softplus(outs[0][:, 4:5] - 2.0) + 1e-3
        obs_weight = self.obs_weight * torch.sigmoid(outs[0][:, 5:6] + 2.0) * mask
        log_depth = self.integration(gradients, confidences, log_sparse, obs_weight, fill.detach(),
                                     x_init=fill.detach())
        log_depth, laplace_b, fill, obs_weight = (t[..., :h, :w] for t in (log_depth, laplace_b, fill, obs_weight))
        depth = scale[:, None, None, None] * torch.exp(log_depth)
        return {"depth": depth, "log_depth": log_depth, "scale": scale, "laplace_b": laplace_b,
                "gradients": gradients, "confidences": confidences, "obs_weight": obs_weight, "fill": fill}


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
