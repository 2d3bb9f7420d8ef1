"""What an RGB-D folder's own depth says about its scene: the depth range and the observed extent.

``geo3d reconstruct`` sizes its fusion from these when the folder records nothing better, so any RGB-D folder
(``geo3d render --depth`` of a splat scene about 4 m away, the depth-completion pipeline's output, a real sensor's
frames) reconstructs without ``--depth-max`` or ``--voxel-size``:

* depth range: every valid depth is fused (the largest valid depth of all frames, plus 1 %, is the cut-off);
* extent: the bounding-box diagonal of the valid depth pixels back-projected into the world (every
  ``stride``-th pixel per row and column; per axis the 1st to 99th percentile, so a few flying pixels do not
  inflate it).

Example (one frame of a flat wall 4 m in front of the camera):
    >>> import tempfile, torch
    >>> from geo3d.io import RGBDFrame, read_rgbd_sequence, write_intrinsics, write_rgbd_frame
    >>> from geo3d.types import DepthMap
    >>> folder = tempfile.mkdtemp()
    >>> K = torch.tensor([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]])
    >>> frame = RGBDFrame(torch.zeros(48, 64, 3, dtype=torch.uint8), DepthMap(torch.full((48, 64), 4.0), K=K),
    ...                   torch.eye(4))
    >>> write_intrinsics(folder, K); write_rgbd_frame(folder, 0, frame)
    >>> extent = observed_extent(read_rgbd_sequence(folder))
    >>> round(extent.depth_max, 3), round(extent.diagonal, 2)  # 6.4 m x 4.8 m in view (8 m): 4th pixels, 1-99 %
    (4.04, 7.44)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from geo3d.errors import InputError
from geo3d.io import RGBDSequence
from geo3d.io.depth_png import read_depth_png
from geo3d.io.rgbd import INVALID_CODES, read_pose

DEPTH_MARGIN = 0.01
"""The inferred depth cut-off is the largest valid depth times ``1 + DEPTH_MARGIN``."""
EXTENT_PERCENTILES = (1.0, 99.0)
"""Per-axis percentiles of the back-projected points that bound the observed extent."""


@dataclass(frozen=True)
class DepthExtent:
    """The depth range and observed size of an RGB-D folder.

    Attributes:
        depth_max: the largest valid depth of all frames times ``1 + DEPTH_MARGIN``, metres (every valid pixel
            is below it).
        diagonal: the bounding-box diagonal (per-axis 1st-99th percentile) of the valid depth pixels within
            the depth cut-off, back-projected into the world, metres.
    """

    depth_max: float
    diagonal: float


def observed_extent(sequence: RGBDSequence, depth_max: float | None = None, stride: int = 4) -> DepthExtent:
    """Read every frame's depth and pose (not the colour) and measure the depth range and the observed extent.

    Args:
        sequence: the RGB-D folder (:func:`geo3d.io.read_rgbd_sequence`, its depth scale applied).
        depth_max: a given depth cut-off, metres: the extent counts only the depths within it and it is returned
            as the ``depth_max``; None infers it (the largest valid depth plus :data:`DEPTH_MARGIN`).
        stride: back-project every ``stride``-th pixel per row and column for the extent.

    Returns:
        :class:`DepthExtent`.

    Raises:
        InputError: naming the folder, when no frame has a valid depth (within ``depth_max``), or the valid
            depths back-project to a single point (no extent to size voxels from).
    """
    largest = 0.0
    chunks = []
    for i in range(len(sequence)):
        _, depth_path, pose_path = sequence.paths(i)
        depth = read_depth_png(depth_path, sequence.depth_scale, sequence.K, INVALID_CODES)
        if depth_max is not None:
            depth.valid &= depth.depth <= depth_max
        if not bool(depth.valid.any()):
            continue
        largest = max(largest, float(depth.depth[depth.valid].max()))
        every = torch.zeros_like(depth.valid)
        every[::stride, ::stride] = True
        depth.valid &= every
        chunks.append(depth.to_points(read_pose(pose_path)).numpy())
    within = "" if depth_max is None else f" within {depth_max:g} m"
    if largest == 0.0:
        raise InputError(sequence.root, f"no valid depth pixel{within} in any of its {len(sequence)} frames: "
                                        "nothing to reconstruct (wrong --depth-scale?)")
    points = np.concatenate(chunks)
    low, high = np.percentile(points, EXTENT_PERCENTILES, axis=0)
    diagonal = float(np.linalg.norm(high - low))
    if not diagonal > 0:
        raise InputError(sequence.root, "its valid depths back-project to a single point: no extent to size the "
                                        "voxels from (pass --voxel-size)")
    return DepthExtent(depth_max if depth_max is not None else largest * (1 + DEPTH_MARGIN), diagonal)
