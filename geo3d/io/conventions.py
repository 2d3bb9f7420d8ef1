"""Camera pose conventions: the project's one OpenGL <-> OpenCV conversion, and rigid inversion.

geo3d cameras are OpenCV (x right, y down, z forward). NeRF / instant-ngp ``transforms.json`` poses are
OpenGL / Blender camera-to-world matrices (x right, y up, z backward: the camera looks along -z). The two
camera frames differ by a rotation of pi about the camera x axis, so converting a camera-to-world pose
negates its y and z columns. The map is its own inverse. Everything that reads or writes OpenGL poses
goes through :func:`opengl_to_opencv` / :func:`opencv_to_opengl`; nothing else converts conventions.
"""

from __future__ import annotations

import torch

_FLIP_YZ = (1.0, -1.0, -1.0, 1.0)


def _check_pose(name: str, pose: torch.Tensor) -> None:
    if not isinstance(pose, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(pose).__name__}")
    if pose.dim() < 2 or tuple(pose.shape[-2:]) != (4, 4):
        raise ValueError(f"{name}: expected shape (..., 4, 4), got {tuple(pose.shape)}")


def opengl_to_opencv(cam_to_world: torch.Tensor) -> torch.Tensor:
    """Convert OpenGL/NeRF camera-to-world poses to OpenCV camera-to-world poses.

    Flips the camera's y and z axes (negates columns 1 and 2 of the rotation); the camera centre is
    unchanged.

    Args:
        cam_to_world: (..., 4, 4) float camera-to-world transforms, OpenGL camera frame
            (x right, y up, looking along -z), metres.

    Returns:
        (..., 4, 4) same dtype and device, OpenCV camera frame (x right, y down, looking along +z).

    Example:
        >>> pose = torch.eye(4)
        >>> opengl_to_opencv(pose).diagonal().tolist()
        [1.0, -1.0, -1.0, 1.0]
    """
    _check_pose("opengl_to_opencv: cam_to_world", cam_to_world)
    flip = torch.tensor(_FLIP_YZ, dtype=cam_to_world.dtype, device=cam_to_world.device)
    return cam_to_world * flip


def opencv_to_opengl(cam_to_world: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`opengl_to_opencv` (the same flip: it is its own inverse).

    Args:
        cam_to_world: (..., 4, 4) float camera-to-world transforms, OpenCV camera frame, metres.

    Returns:
        (..., 4, 4) same dtype and device, OpenGL camera frame.
    """
    _check_pose("opencv_to_opengl: cam_to_world", cam_to_world)
    return opengl_to_opencv(cam_to_world)


def invert_rigid(transform: torch.Tensor) -> torch.Tensor:
    """Invert rigid transforms exactly (``R^T``, ``-R^T t``), e.g. camera-to-world <-> world-to-camera.

    Args:
        transform: (..., 4, 4) float rigid transforms (rotation + translation in metres).

    Returns:
        (..., 4, 4) same dtype and device.
    """
    _check_pose("invert_rigid: transform", transform)
    rot_t = transform[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(transform)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ transform[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1
    return out
