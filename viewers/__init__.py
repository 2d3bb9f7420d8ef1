"""Viewers: Open3D scenes built from geo3d types, interactive windows, and headless PNG rendering.

Example:
    >>> from viewers import Scene, render_png  # doctest: +SKIP
    >>> scene = Scene()
    >>> scene.add_points(cloud, color_by="height")
    >>> scene.add_boxes(boxes, "green", "ground truth")
    >>> render_png(scene, "out/frame.png", view="bev")
"""

from viewers.files import load_scene, view_files
from viewers.render import frame_camera, headless_available, render_image, render_png
from viewers.scene import Scene
from viewers.window import has_display, show

__all__ = [
    "Scene", "frame_camera", "has_display", "headless_available", "load_scene", "render_image", "render_png",
    "show", "view_files",
]
