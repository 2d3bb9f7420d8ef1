"""Viewers: Open3D scenes built from geo3d types, interactive windows, and headless PNG rendering.

Example (``render_png(scene, "frame.png", view="bev")`` then draws it headless; ``show(scene)`` in a window):
    >>> import torch
    >>> from geo3d.types import Boxes3D, PointCloud
    >>> from viewers import Scene
    >>> scene = Scene()
    >>> _ = scene.add_points(PointCloud(torch.rand(1000, 3) * 10), color_by="height")
    >>> _ = scene.add_boxes(Boxes3D(torch.tensor([[5.0, 5.0, 0.8, 3.9, 1.6, 1.56, 0.3]])), "green", "ground truth")
    >>> [item.kind for item in scene.items], scene.legend
    (['points', 'lines'], [('ground truth', (0.0, 1.0, 0.0))])
"""

from viewers.files import load_scene, view_files
from viewers.render import frame_camera, headless_available, render_image, render_png
from viewers.scene import Scene
from viewers.window import has_display, show

__all__ = [
    "Scene", "frame_camera", "has_display", "headless_available", "load_scene", "render_image", "render_png",
    "show", "view_files",
]
