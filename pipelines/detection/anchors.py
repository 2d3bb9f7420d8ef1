"""Per-class anchor boxes on the BEV feature grid (SECOND / OpenPCDet ``AnchorGenerator``).

One anchor per (cell, class, rotation): centred on the cell centre in x, y, at the class's bottom
height plus half its height in z. Anchors are ordered ``(H, W, A)`` with ``A = classes x rotations``
(class-major), which is the order the head's 1x1 convolutions produce their outputs in.
"""

from __future__ import annotations

import torch


def generate_anchors(
    point_cloud_range: list[float],
    feature_size: tuple[int, int],
    sizes: list[list[float]],
    rotations: list[float],
    bottom_heights: list[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchors on a BEV grid.

    Args:
        point_cloud_range: ``[xmin, ymin, zmin, xmax, ymax, zmax]`` metres.
        feature_size: ``(H, W)`` cells of the BEV feature map along y and x.
        sizes: one ``[dx, dy, dz]`` (metres) per class.
        rotations: yaw angles (radians) used for every class, e.g. ``[0, pi / 2]``.
        bottom_heights: one bottom z (metres) per class.

    Returns:
        anchors: (H, W, A, 7) float32 ``x, y, z, dx, dy, dz, yaw`` with ``A = len(sizes) * len(rotations)``.
        anchor_class: (A,) int64 class index of each anchor slot.
    """
    if len(sizes) != len(bottom_heights):
        raise ValueError(
            f"anchor sizes and bottom_heights: expected one per class, got {len(sizes)} and {len(bottom_heights)}"
        )
    if any(len(s) != 3 or min(s) <= 0 for s in sizes):
        raise ValueError(f"anchor sizes: expected positive [dx, dy, dz] per class, got {sizes}")
    h, w = feature_size
    xmin, ymin, _, xmax, ymax, _ = point_cloud_range
    xs = xmin + (torch.arange(w, dtype=torch.float32) + 0.5) * (xmax - xmin) / w
    ys = ymin + (torch.arange(h, dtype=torch.float32) + 0.5) * (ymax - ymin) / h
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # (H, W)
    per_slot = []
    classes = []
    for cls, (size, bottom) in enumerate(zip(sizes, bottom_heights)):
        for yaw in rotations:
            per_slot.append([size[0], size[1], size[2], bottom + size[2] / 2, yaw])
            classes.append(cls)
    slots = torch.tensor(per_slot, dtype=torch.float32)  # (A, 5): dx, dy, dz, z, yaw
    a = slots.shape[0]
    anchors = torch.empty(h, w, a, 7)
    anchors[..., 0] = xx[..., None]
    anchors[..., 1] = yy[..., None]
    anchors[..., 2] = slots[:, 3]
    anchors[..., 3:6] = slots[:, 0:3]
    anchors[..., 6] = slots[:, 4]
    return anchors, torch.tensor(classes, dtype=torch.int64)
