"""Interactive Open3D windows for a :class:`~viewers.scene.Scene`.

:func:`show` opens ``open3d.visualization.draw`` (the Filament GUI: mouse to orbit, per-geometry
point size and line width, 3D text labels). The window starts at the same camera as the headless
render (:func:`viewers.render.frame_camera`); on a real GPU, meshes use the lit shader. The legend
goes into the window title, box tags become 3D labels. It needs a display: check :func:`has_display`
(or render a PNG with :func:`viewers.render.render_png`).
"""

from __future__ import annotations

import os
import sys

import open3d as o3d

from viewers.colors import BACKGROUND
from viewers.render import frame_camera
from viewers.scene import Scene, SceneItem


def has_display() -> bool:
    """Whether a window can be opened: always on macOS and Windows, on Linux when DISPLAY (an X server
    whose local socket exists, or a remote one) or WAYLAND_DISPLAY is set.

    Returns:
        True when a display is available.
    """
    if not sys.platform.startswith("linux"):
        return True
    if os.environ.get("WAYLAND_DISPLAY"):
        return True
    display = os.environ.get("DISPLAY", "")
    if not display:
        return False
    host, _, number = display.partition(":")
    if host in ("", "unix"):  # a local X server: its socket must exist
        return os.path.exists(f"/tmp/.X11-unix/X{number.split('.')[0]}")
    return True


def _draw_dict(item: SceneItem) -> dict:
    """The ``{"name", "geometry", "material"}`` entry ``open3d.visualization.draw`` takes."""
    mat = o3d.visualization.rendering.MaterialRecord()
    if item.kind == "lines":
        mat.shader = "unlitLine"
        mat.line_width = float(item.line_width)
    elif item.kind == "mesh":
        mat.shader = "defaultLit"
    else:
        mat.shader = "defaultUnlit"
        mat.point_size = float(item.point_size)
    return {"name": item.name, "geometry": item.geometry, "material": mat}


def show(scene: Scene, title: str = "geo3d", width: int = 1280, height: int = 720, view: str = "auto") -> None:
    """Open an interactive window on the scene; returns when it is closed.

    Args:
        scene: what to draw.
        title: window title; the legend labels are appended.
        width: window width in pixels.
        height: window height in pixels.
        view: the starting camera, ``"auto"``, ``"bev"`` or ``"front"``.

    Raises:
        RuntimeError: there is no display (see :func:`has_display`).
    """
    if not has_display():
        raise RuntimeError("show: no display (DISPLAY/WAYLAND_DISPLAY unset); render a PNG with "
                           "viewers.render.render_png or `geo3d view ... --out file.png`")
    camera = frame_camera(scene, view, width / height)
    if scene.legend:
        title = f"{title}  |  " + ", ".join(label for label, _ in scene.legend)

    def add_labels(window) -> None:
        for tag in scene.tags:
            label = window.add_3d_label(tag.position, tag.text)
            label.color = o3d.visualization.gui.Color(*tag.color)  # default black is lost on the dark background

    o3d.visualization.draw(
        [_draw_dict(item) for item in scene.items], title=title, width=width, height=height,
        lookat=camera.target, eye=camera.eye, up=camera.up, field_of_view=camera.fov_deg,
        bg_color=(*BACKGROUND, 1.0), show_skybox=False, on_init=add_labels,
    )
