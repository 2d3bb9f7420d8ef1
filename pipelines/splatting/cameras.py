"""Camera geometry of a capture: where the cameras look, which way is up, how big the scene is, turntables.

:func:`center_from_cameras` (the point nearest to all optical axes) and :func:`up_from_cameras` (the mean camera
up) read a capture's layout off its cameras alone; :func:`scene_center_and_scale` turns them into the scene size
that the training scales its learning rates and densification thresholds by; :func:`turntable_cameras` places
cameras on a circle, as ``geo3d render --turntable`` does. Cameras are OpenCV ``world_to_cam`` (x right, y down,
z forward), metres.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from geo3d.errors import InputError
from geo3d.types import Cameras


def _look_at(eyes: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(C, 4, 4) OpenCV world-to-camera transforms of cameras at ``eyes`` (C, 3) looking at ``target``
    (3,), image up along world ``up`` (3,)."""
    forward = target - eyes
    forward /= np.linalg.norm(forward, axis=1, keepdims=True)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward], 1)  # rows: the camera axes in world coordinates
    w2c = np.tile(np.eye(4), (len(eyes), 1, 1))
    w2c[:, :3, :3] = rot
    w2c[:, :3, 3] = -np.einsum("cij,cj->ci", rot, eyes)
    return w2c


def turntable_cameras(
    n: int,
    center: np.ndarray | torch.Tensor,
    radius: float,
    elevation_deg: float,
    up: np.ndarray | torch.Tensor,
    K: np.ndarray | torch.Tensor,
    width: int,
    height: int,
) -> Cameras:
    """``n`` cameras evenly spaced on a circle around the ``up`` axis through ``center``, looking at it.

    Camera i sits at azimuth ``360 i / n`` degrees, measured in the plane normal to ``up`` from the
    projection of world x (world y when ``up`` is along x), counter-clockwise seen from above, and
    ``elevation_deg`` above that plane, ``radius`` from ``center``. Image up is world ``up``.

    Args:
        n: number of cameras, >= 1.
        center: (3,) looked-at point, metres.
        radius: camera distance from ``center``, metres, > 0.
        elevation_deg: angle above the plane normal to ``up``, degrees, in (-90, 90).
        up: (3,) world up direction (any length > 0).
        K: (3, 3) intrinsics, pixels, shared by all cameras.
        width: image width, pixels.
        height: image height, pixels.

    Returns:
        Cameras: world_to_cam (n, 4, 4) float32 OpenCV, K (n, 3, 3) float32.

    Raises:
        InputError: ``n < 1``, ``radius <= 0``, elevation outside (-90, 90) or a zero ``up``.
    """
    if int(n) != n or n < 1:
        raise InputError(None, f"turntable: expected at least 1 view, got {n!r}")
    if not (math.isfinite(radius) and radius > 0):
        raise InputError(None, f"turntable: radius must be a positive number of metres, got {radius!r}")
    if not -90 < elevation_deg < 90:
        raise InputError(None, f"turntable: elevation must be in (-90, 90) degrees, got {elevation_deg!r}")
    center = np.asarray(center, dtype=np.float64).reshape(3)
    up = np.asarray(up, dtype=np.float64).reshape(3)
    if not np.linalg.norm(up) > 1e-12:
        raise InputError(None, "turntable: the up vector is zero")
    up = up / np.linalg.norm(up)
    ref = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = ref - (ref @ up) * up
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    azimuth = 2 * np.pi * np.arange(int(n)) / int(n)
    elevation = math.radians(elevation_deg)
    directions = (math.cos(elevation) * (np.cos(azimuth)[:, None] * e1 + np.sin(azimuth)[:, None] * e2)
                  + math.sin(elevation) * up)
    w2c = _look_at(center + radius * directions, center, up)
    K = torch.as_tensor(np.asarray(K, dtype=np.float32)).reshape(3, 3)
    return Cameras(K.expand(int(n), 3, 3).clone(), torch.from_numpy(w2c).float(), width, height)


def up_from_cameras(cameras: Cameras) -> torch.Tensor:
    """The capture's up direction: the mean of the cameras' up vectors, normalised (as nerfstudio orients).

    A camera's up vector is its -y axis (OpenCV: y points down in the image) in world coordinates.

    Args:
        cameras: C cameras, OpenCV ``world_to_cam`` (C, 4, 4).

    Returns:
        (3,) float32 unit vector, world frame.

    Raises:
        InputError: the up vectors cancel out (mean of length < 1e-6).
    """
    ups = -cameras.world_to_cam[:, 1, :3].double()  # row 1 of R = the camera y axis in world coordinates
    mean = ups.mean(0)
    if not mean.norm() > 1e-6:
        raise InputError(None, "cameras: their up vectors cancel out; no common up direction")
    return (mean / mean.norm()).float()


def center_from_cameras(cameras: Cameras) -> torch.Tensor:
    """The point nearest to all optical axes, in the least-squares sense: what the cameras look at.

    Minimises ``sum_c |(I - d_c d_c^T)(p - o_c)|^2`` over p (o_c: centre, d_c: viewing direction). Two
    cameras with crossing axes give the crossing point exactly. Directions that the axes do not fix
    (one camera, or parallel axes) are resolved to the point nearest the cameras' mean centre
    (minimum-norm solution about it).

    Args:
        cameras: C cameras, OpenCV ``world_to_cam`` (C, 4, 4).

    Returns:
        (3,) float32 point, world frame, metres.
    """
    w2c = cameras.world_to_cam.double().cpu().numpy()
    dirs = w2c[:, 2, :3]  # row 2 of R = the optical axis in world coordinates
    centres = -np.einsum("cji,cj->ci", w2c[:, :3, :3], w2c[:, :3, 3])
    projectors = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]  # (C, 3, 3)
    mean = centres.mean(0)
    A = projectors.sum(0)
    b = np.einsum("cij,cj->i", projectors, centres - mean)
    offset = np.linalg.lstsq(A, b, rcond=1e-6)[0]
    return torch.from_numpy(mean + offset).float()



def scene_center_and_scale(cameras: Cameras) -> tuple[torch.Tensor, float]:
    """A scene centre and size from cameras alone, robust with 2-4 cameras.

    The centre is the point nearest (least squares) to all optical axes
    (:func:`center_from_cameras`). The scale is 1.1 x the median camera-to-centre
    distance, in the role of 3DGS's "cameras extent" (1.1 x the largest distance of a camera from the mean
    camera centre: with 2 cameras that is half the baseline, far too small for a turntable of 2-4 views,
    whereas the distance to the look-at point is what the scene's size scales with).

    Args:
        cameras: C >= 1 cameras.

    Returns:
        center: (3,) float32 metres; scale: metres.
    """
    center = center_from_cameras(cameras).double()
    dist = (cameras.centers.double() - center).norm(dim=1)
    scale = 1.1 * float(dist.median())
    if not math.isfinite(scale) or scale <= 0:
        raise InputError(None, "cameras: could not derive a scene scale (all cameras at one point?)")
    return center.float(), scale
