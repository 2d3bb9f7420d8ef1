"""Interactive Open3D windows for a :class:`~viewers.scene.Scene`.

:func:`show` opens a Filament window (``open3d.visualization.gui``: a ``SceneWidget`` in a window; mouse
to orbit around the framed target, wheel to zoom), with each geometry's own point size and line width.
The window starts at the same camera as the headless render (:func:`viewers.render.frame_camera`);
meshes use the lit shader, points and lines are unlit. The legend goes into the window title; box tags
become 3D text labels in the box colour.

Why a ``SceneWidget`` and not ``open3d.visualization.draw``: its ``O3DVisualizer.add_3d_label`` returns
None (Open3D 0.20; the C++ side drops the ``Label3D``), so its labels keep the default colour, black,
which is invisible on the dark background, and setting a colour raised ``AttributeError`` (a crash on
every labelled KITTI frame). ``SceneWidget.add_3d_label`` returns the ``Label3D``, whose colour can be
set. It needs a display: check :func:`has_display` (or render a PNG with
:func:`viewers.render.render_png`).
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import open3d as o3d

from viewers.colors import BACKGROUND
from viewers.render import CameraView, frame_camera, item_material
from viewers.scene import Scene


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


def populate(widget, scene: Scene, camera: CameraView, aspect: float) -> list:
    """Fill a ``gui.SceneWidget`` (whose ``scene`` is an ``Open3DScene``) with a scene: background, light,
    geometries, camera, and one coloured 3D label per tag.

    Args:
        widget: the ``open3d.visualization.gui.SceneWidget``.
        scene: what to draw.
        camera: the starting camera (eye, target, up in metres; vertical field of view in degrees).
        aspect: width / height of the widget.

    Returns:
        The ``gui.Label3D`` labels, one per ``scene.tags`` entry, in order.
    """
    gui, rendering = o3d.visualization.gui, o3d.visualization.rendering
    widget.scene.set_background(np.array([*BACKGROUND, 1.0], np.float32))
    widget.scene.show_skybox(False)
    sun = np.asarray(camera.target, np.float64) - np.asarray(camera.eye, np.float64)
    widget.scene.set_lighting(rendering.Open3DScene.LightingProfile.NO_SHADOWS,
                              (sun / max(np.linalg.norm(sun), 1e-9)).astype(np.float32))
    for item in scene.items:
        widget.scene.add_geometry(item.name, item.geometry, item_material(item))
    target = np.asarray(camera.target, np.float32)
    widget.setup_camera(float(camera.fov_deg), widget.scene.bounding_box, target)  # orbits around the target
    widget.look_at(target, np.asarray(camera.eye, np.float32), np.asarray(camera.up, np.float32))
    widget.scene.camera.set_projection(float(camera.fov_deg), aspect, float(camera.near), float(camera.far),
                                       rendering.Camera.FovType.Vertical)
    labels = []
    for tag in scene.tags:
        label = widget.add_3d_label(np.asarray(tag.position, np.float32), tag.text)
        label.color = gui.Color(*tag.color)  # the default, black, is lost on the dark background
        labels.append(label)
    return labels


def show(scene: Scene, title: str = "geo3d", width: int = 1280, height: int = 720, view: str = "auto",
         close_after: float | None = None) -> None:
    """Open an interactive window on the scene; returns when it is closed.

    Args:
        scene: what to draw.
        title: window title; the legend labels are appended.
        width: window width in pixels.
        height: window height in pixels.
        view: the starting camera, ``"auto"``, ``"bev"`` or ``"front"``.
        close_after: close the window by itself after this many seconds (scripted screenshots, tests);
            None keeps it open until the user closes it.

    Raises:
        RuntimeError: there is no display (see :func:`has_display`).
    """
    if not has_display():
        raise RuntimeError("show: no display (DISPLAY/WAYLAND_DISPLAY unset); render a PNG with "
                           "viewers.render.render_png or `geo3d view ... --out file.png`")
    camera = frame_camera(scene, view, width / height)
    if scene.legend:
        title = f"{title}  |  " + ", ".join(label for label, _ in scene.legend)
    gui, rendering = o3d.visualization.gui, o3d.visualization.rendering
    app = gui.Application.instance
    app.initialize()
    window = app.create_window(title, width, height)
    widget = gui.SceneWidget()
    widget.scene = rendering.Open3DScene(window.renderer)
    window.add_child(widget)
    populate(widget, scene, camera, width / height)

    def on_layout(_context) -> None:
        widget.frame = window.content_rect

    window.set_on_layout(on_layout)
    timer = None
    if close_after is not None:  # closed from the main thread (closing inside a tick callback segfaults)
        timer = threading.Timer(float(close_after), app.post_to_main_thread, (window, window.close))
        timer.daemon = True
        timer.start()
    try:
        app.run()
    finally:
        if timer is not None:
            timer.cancel()
