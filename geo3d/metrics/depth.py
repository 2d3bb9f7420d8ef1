"""Depth-map error metrics in the KITTI depth-completion convention.

Every metric is computed per image over the pixels that have ground truth (``gt > min_depth``, and
``gt <= max_depth`` when a maximum is given, inside the optional crop), then averaged over the images, as the
KITTI depth-completion devkit does: a frame with few ground-truth pixels weighs as much as a dense one. The
prediction is clamped to ``[min_depth, max_depth]`` (or ``>= min_depth``) first, so the inverse-depth metrics
stay finite. Everything is computed in float64 on the inputs' device and returned as Python floats:

* ``rmse_mm``, ``mae_mm``: root-mean-square and mean absolute depth error, millimetres;
* ``irmse_1km``, ``imae_1km``: the same on inverse depth, 1/km (``1000 / depth_in_metres``);
* ``rel``: mean absolute relative error ``|pred - gt| / gt``;
* ``delta1``, ``delta2``, ``delta3``: fraction of pixels with ``max(pred / gt, gt / pred) < 1.25 ** k``;
* ``pixels``: the number of evaluated pixels over all images (a count, not averaged).
"""

from __future__ import annotations

import torch

DEPTH_METRIC_KEYS = (
    "rmse_mm", "mae_mm", "irmse_1km", "imae_1km", "rel", "delta1", "delta2", "delta3", "pixels",
)


def _as_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    """(H, W), (B, H, W) or (B, 1, H, W) -> (B, H, W)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"depth_metrics: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 2:
        return x[None]
    if x.dim() == 3:
        return x
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    raise ValueError(f"depth_metrics: {name} must be (H, W), (B, H, W) or (B, 1, H, W), got shape {tuple(x.shape)}")


def depth_metrics(
    pred: torch.Tensor,
    gt: torch.Tensor,
    max_depth: float | None = None,
    min_depth: float = 1e-3,
    crop: tuple[int, int, int, int] | None = None,
) -> dict[str, float]:
    """Depth errors of ``pred`` against ``gt``, averaged per image then over images (KITTI-DC convention).

    Args:
        pred: (H, W), (B, H, W) or (B, 1, H, W) float, predicted depth in metres.
        gt: same shape as ``pred``, float metres; 0 (or anything ``<= min_depth``) = missing.
        max_depth: metres; when given, only pixels with ``gt <= max_depth`` are evaluated and ``pred`` is clamped
            to ``[min_depth, max_depth]``. When None, ``pred`` is only clamped to ``>= min_depth``.
        min_depth: metres; pixels with ``gt <= min_depth`` are not evaluated.
        crop: ``(top, bottom, left, right)`` pixel bounds (bottom and right exclusive) of the evaluated region,
            or None for the whole image.

    Returns:
        ``{"rmse_mm", "mae_mm", "irmse_1km", "imae_1km", "rel", "delta1", "delta2", "delta3"}``: the mean over
        images of each image's metric (units in the names; ``rel`` and the deltas are fractions), and
        ``"pixels"``: the total number of evaluated pixels.

    Raises:
        ValueError: on a shape mismatch or unsupported shape, an invalid crop, or an image with no valid
            ground-truth pixel (in the crop and depth range).
    """
    if isinstance(pred, torch.Tensor) and isinstance(gt, torch.Tensor) and pred.shape != gt.shape:
        raise ValueError(
            f"depth_metrics: pred and gt shapes differ: pred {tuple(pred.shape)} vs gt {tuple(gt.shape)}"
        )
    p = _as_batch(pred, "pred").detach().to(torch.float64)
    g = _as_batch(gt, "gt").detach().to(device=p.device, dtype=torch.float64)
    if max_depth is not None and not max_depth > min_depth:
        raise ValueError(f"depth_metrics: max_depth ({max_depth}) must exceed min_depth ({min_depth})")
    height, width = g.shape[-2:]
    if crop is not None:
        if len(crop) != 4:
            raise ValueError(f"depth_metrics: crop must be (top, bottom, left, right), got {crop!r}")
        top, bottom, left, right = (int(c) for c in crop)
        if not (0 <= top < bottom <= height and 0 <= left < right <= width):
            raise ValueError(
                f"depth_metrics: crop (top, bottom, left, right) = {tuple(crop)} is empty or outside the "
                f"{height}x{width} image"
            )
        p, g = p[:, top:bottom, left:right], g[:, top:bottom, left:right]

    valid = g > min_depth
    if max_depth is not None:
        valid &= g <= max_depth
    counts = valid.flatten(1).sum(1)
    if bool((counts == 0).any()):
        empty = [i for i, c in enumerate(counts.tolist()) if c == 0]
        raise ValueError(
            f"depth_metrics: image(s) {empty} have no valid ground-truth pixel (gt > {min_depth}"
            + (f" and <= {max_depth}" if max_depth is not None else "")
            + (f" inside crop {tuple(crop)}" if crop is not None else "")
            + ")"
        )
    p = p.clamp(min=min_depth, max=max_depth)
    # invalid pixels get gt = pred = 1 so they contribute exact zeros, then are masked out of the sums
    g = torch.where(valid, g, torch.ones_like(g))
    p = torch.where(valid, p, torch.ones_like(p))
    n = counts.to(torch.float64)

    def per_image_mean(values: torch.Tensor) -> torch.Tensor:
        return torch.where(valid, values, torch.zeros_like(values)).flatten(1).sum(1) / n

    err = p - g
    ierr = 1000.0 / p - 1000.0 / g  # 1/km
    ratio = torch.maximum(p / g, g / p)
    per_image = {
        "rmse_mm": per_image_mean(err**2).sqrt() * 1000.0,
        "mae_mm": per_image_mean(err.abs()) * 1000.0,
        "irmse_1km": per_image_mean(ierr**2).sqrt(),
        "imae_1km": per_image_mean(ierr.abs()),
        "rel": per_image_mean(err.abs() / g),
        "delta1": per_image_mean((ratio < 1.25).to(torch.float64)),
        "delta2": per_image_mean((ratio < 1.25**2).to(torch.float64)),
        "delta3": per_image_mean((ratio < 1.25**3).to(torch.float64)),
    }
    out = {k: float(v.mean()) for k, v in per_image.items()}
    out["pixels"] = int(counts.sum())
    return out


def format_depth_metrics(m: dict[str, float]) -> str:
    """One line for logs, e.g. ``RMSE 1234.5 mm | MAE 321.0 mm | iRMSE 3.21 1/km | ... | 18000 px``."""
    parts = []
    if "rmse_mm" in m:
        parts.append(f"RMSE {m['rmse_mm']:.1f} mm")
    if "mae_mm" in m:
        parts.append(f"MAE {m['mae_mm']:.1f} mm")
    if "irmse_1km" in m:
        parts.append(f"iRMSE {m['irmse_1km']:.2f} 1/km")
    if "imae_1km" in m:
        parts.append(f"iMAE {m['imae_1km']:.2f} 1/km")
    if "rel" in m:
        parts.append(f"REL {m['rel']:.4f}")
    for k in ("delta1", "delta2", "delta3"):
        if k in m:
            parts.append(f"d{k[-1]} {m[k]:.4f}")
    if "pixels" in m:
        parts.append(f"{int(m['pixels'])} px")
    return " | ".join(parts)
