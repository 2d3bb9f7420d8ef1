"""Headless rendering of a :class:`~viewers.scene.Scene` to a PNG with Open3D's ``OffscreenRenderer``.

How it runs without a GPU or a display (measured here: Debian 12, Open3D 0.20, Mesa 22.3 llvmpipe, 2 cores):

* Open3D finds Mesa's software Vulkan device (``mesa-vulkan-drivers`` + ``libvulkan1``) and runs
  Filament's Vulkan backend on it, headless: no ``DISPLAY``, Xvfb or environment variable is needed.
  ``EGL_PLATFORM=surfaceless`` is set (unless already set, and only without a display) before the first
  renderer is created, for machines where Open3D takes its EGL path instead. With no Vulkan driver and
  no EGL, Filament aborts the whole process; :func:`headless_available` tries it in a child process.
* Speed. Geometries are handed over as tensor geometries (``open3d.t.geometry``): legacy meshes
  created after the renderer made frames cost 1-20 s of CPU instead of 0.05 s (the cause is inside
  Open3D/Filament; the tensor path does not have it). Multisampling and post-processing are off: they
  cost 1.4-1.7x, and without post-processing (tone mapping) unlit pixels keep the exact scene colours.
  A 1280 x 720 frame of the 120k-point KITTI scan with boxes takes 0.14 s (0.18 s of CPU), the lit
  16k-face bunny 0.18 s (0.32 s of CPU); the first frame of a process, with the renderer's start-up,
  0.5 s. At 320 x 240: 0.05-0.12 s.
* Colours: with post-processing off, unlit vertex colours come out exact, but the background colour
  is sRGB-decoded and not re-encoded, so it is passed encoded (:func:`_srgb_encode`). Open3D's wide
  lines are drawn 1/tan(fov/2)-proportionally too wide below 60 degrees; widths are scaled back.
* One renderer per process, created lazily and re-created only when the image size changes:
  creating renderers repeatedly leaks memory. Filament prints its start-up log on stdout; that is
  silenced while it starts (its errors go to stderr and stay visible).

Points and box lines are unlit; meshes use Open3D's lit shader with the sun over the camera's shoulder.
Titles, legends and box tags are drawn afterwards with PIL (the offscreen renderer has no text).
Camera framing is written here: Open3D's ``setup_camera`` fits a bounding sphere from one given
direction, which leaves LiDAR scans (80 m around, objects of interest ahead) far too small.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open3d as o3d
from PIL import Image, ImageDraw, ImageFont

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_path
from viewers.colors import BACKGROUND, RGB, TEXT
from viewers.scene import Scene, SceneItem

VIEWS = ("auto", "bev", "front")
FOV_DEG = 50.0
"""Vertical field of view of the perspective views, degrees."""
_MARGIN = 1.06  # framing slack around the region of interest
_CONTEXT_M = 8.0  # metres of surroundings kept around the boxes of a LiDAR scene
BEV_FOV_DEG = 30.0
"""Field of view of the top-down view, degrees: narrow, so box sides barely show (Open3D's wide lines do
not draw with an orthographic camera, so the view stays perspective)."""
# Unit vectors from the look-at target towards the eye (z up): elevation and azimuth per view.
_AUTO_SENSOR = (-math.cos(math.radians(40)), 0.0, math.sin(math.radians(40)))  # behind and above the sensor
_AUTO_OBJECT = tuple(np.array([-0.55, -0.75, 0.55]) / np.linalg.norm([-0.55, -0.75, 0.55]))
_FRONT = (-math.cos(math.radians(15)), 0.0, math.sin(math.radians(15)))  # looking along +x, from above

_SUN_LUX = 100000.0  # Filament sun intensity for lit meshes
# Geometries go to the renderer as tensor geometries (module docstring: the legacy ones are slow).
_TENSOR_TYPES = {
    "points": o3d.t.geometry.PointCloud, "mesh": o3d.t.geometry.TriangleMesh, "lines": o3d.t.geometry.LineSet,
}
_renderer = None
_renderer_size: tuple[int, int] | None = None


@dataclass
class CameraView:
    """A camera for :func:`render_image` and :func:`viewers.window.show`.

    Attributes:
        eye: (3,) float64 camera position, metres.
        target: (3,) float64 look-at point, metres.
        up: (3,) float64 up direction.
        fov_deg: vertical field of view, degrees.
        near: near clipping distance, metres.
        far: far clipping distance, metres.
    """

    eye: np.ndarray
    target: np.ndarray
    up: np.ndarray
    fov_deg: float
    near: float
    far: float


def _region_of_interest(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Bounds to frame: the whole scene, or for a LiDAR scan the part that matters.

    A scan reaches 80 m and more all around; framing all of it makes cars a few pixels wide. With a
    sensor, the region is the boxes grown by ``_CONTEXT_M`` metres sideways (when the scene has boxes),
    else the 2nd-98th percentile box of the points ahead of the sensor (+x, where KITTI labels
    objects); its height spans the 2nd-98th percentile of all point heights, so the ground is in it.
    """
    if scene.sensor is None:
        return scene.bounds()
    points = [np.asarray(item.geometry.points) for item in scene.items if item.kind == "points"]
    points = np.concatenate(points) if points else np.zeros((0, 3))
    others = [item.geometry.get_axis_aligned_bounding_box() for item in scene.items if item.kind != "points"]
    others = [bb for bb in others if not bb.is_empty()]
    if others:
        lo = np.min([bb.get_min_bound() for bb in others], 0) - [_CONTEXT_M, _CONTEXT_M, 0.0]
        hi = np.max([bb.get_max_bound() for bb in others], 0) + [_CONTEXT_M, _CONTEXT_M, 0.0]
    else:
        ahead = points[points[:, 0] > scene.sensor[0]]
        if len(ahead) < 10:
            return scene.bounds()
        lo, hi = np.percentile(ahead, [2.0, 98.0], axis=0)
    if len(points) >= 10:
        z_lo, z_hi = np.percentile(points[:, 2], [2.0, 98.0])
        lo[2], hi[2] = min(lo[2], z_lo), max(hi[2], z_hi)
    return lo, hi


def _corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(8, 3) corners of an axis-aligned box."""
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def frame_camera(scene: Scene, view: str = "auto", aspect: float = 16 / 9) -> CameraView:
    """Choose a camera that fits the scene in the image.

    ``"auto"``: a 3/4 perspective view (for a scene with a LiDAR sensor: from behind and above the
    sensor, looking ahead); ``"bev"``: straight down with a narrow field of view (nearly
    orthographic), +x (forward) up in the image;
    ``"front"``: perspective, looking along +x from 15 degrees above. Perspective distances are the
    smallest that keep every corner of the region of interest inside both fields of view.

    Args:
        scene: the scene (z up, metres).
        view: ``"auto"``, ``"bev"`` or ``"front"``.
        aspect: image width / height.

    Returns:
        The :class:`CameraView`.
    """
    if view not in VIEWS:
        raise ValueError(f"view: expected one of {', '.join(VIEWS)}, got {view!r}")
    lo, hi = _region_of_interest(scene)
    all_corners = _corners(*scene.bounds())
    target = (lo + hi) / 2
    size = float(np.linalg.norm(hi - lo)) or 1.0
    fov, up = FOV_DEG, np.array([0.0, 0.0, 1.0])
    if view == "bev":
        direction, up, fov = np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]), BEV_FOV_DEG
    elif view == "front":
        direction = np.array(_FRONT)
    else:
        direction = np.array(_AUTO_SENSOR if scene.sensor is not None else _AUTO_OBJECT)
    right = np.cross(-direction, up)
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, -direction)
    tan_v = math.tan(math.radians(fov) / 2) / _MARGIN
    tan_h = tan_v * aspect
    rel = _corners(lo, hi) - target
    along, x, y = rel @ direction, rel @ right, rel @ cam_up
    distance = float(max(np.max(along + np.abs(x) / tan_h), np.max(along + np.abs(y) / tan_v), 1e-3 * size))
    eye = target + direction * distance
    depth = (all_corners - eye) @ -direction
    far = float(depth.max()) * 1.05 + 1e-3
    near = max(0.01 * distance, 0.9 * float(depth.min()))
    return CameraView(eye, target, up, fov, near, far)


def camera_from_pose(cam_to_world: np.ndarray, fov_deg: float, near: float = 0.05, far: float = 50.0,
                     back: float = 0.0) -> CameraView:
    """The :class:`CameraView` of a posed camera (OpenCV axes: x right, y down, z forward), e.g. an RGB-D frame's.

    Args:
        cam_to_world: (4, 4) camera-to-world transform, metres.
        fov_deg: vertical field of view, degrees (``2 atan(H / (2 fy))`` for intrinsics K).
        near: near clipping distance, metres.
        far: far clipping distance, metres.
        back: move the eye this far backwards along the optical axis, metres (more context in the frame).

    Returns:
        The camera at the pose, looking along its +z, image up = its -y.
    """
    pose = np.asarray(cam_to_world, dtype=np.float64)
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        raise ValueError(f"cam_to_world: expected a finite (4, 4) matrix, got shape {pose.shape}")
    forward, down = pose[:3, 2], pose[:3, 1]
    eye = pose[:3, 3] - back * forward
    return CameraView(eye, eye + forward, -down, float(fov_deg), near, far)


def _srgb_encode(rgb: RGB) -> list[float]:
    """Inverse of the sRGB decoding Filament applies to the background colour.

    With post-processing off nothing re-encodes the output, so the background would come out darker
    (0.06 -> 1/255); encoding it first makes its pixels exactly ``rgb``. Unlit vertex colours come out
    exact without this.
    """
    c = np.asarray(rgb, dtype=np.float64)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055).tolist()


def _sun_direction(camera: CameraView) -> np.ndarray:
    """(3,) unit direction the sunlight travels: from over the camera's left shoulder onto the target."""
    to_eye = camera.eye - camera.target
    to_eye /= np.linalg.norm(to_eye)
    right = np.cross(-to_eye, camera.up)
    right = right / np.linalg.norm(right) if np.linalg.norm(right) > 1e-9 else np.zeros(3)
    towards_light = to_eye + 0.6 * camera.up / np.linalg.norm(camera.up) - 0.4 * right
    return -towards_light / np.linalg.norm(towards_light)


@contextlib.contextmanager
def _quiet_stdout():
    """Send file descriptor 1 to /dev/null (Filament prints its start-up log there, not via Python)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _get_renderer(width: int, height: int):
    """The process-wide ``OffscreenRenderer``, (re)created when the size changes.

    Never keep a reference to it elsewhere: renderers share one Filament engine, and destroying an old
    one while a new one lives aborts the process ("destroying MaterialInstance ... still in use").
    """
    global _renderer, _renderer_size
    if _renderer is not None and _renderer_size == (width, height):
        return _renderer
    if _renderer is not None:
        _renderer = None
        gc.collect()
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("EGL_PLATFORM", "surfaceless")
    with _quiet_stdout(), o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        renderer = o3d.visualization.rendering.OffscreenRenderer(width, height)
    renderer.scene.view.set_sample_count(1)
    renderer.scene.view.set_post_processing(False)
    _renderer, _renderer_size = renderer, (width, height)
    return renderer


def item_material(item: SceneItem, line_scale: float = 1.0):
    """The Open3D material of an item: unlit points (their size) and lines (their width x ``line_scale``), lit
    meshes. Used by headless rendering and by the window."""
    mat = o3d.visualization.rendering.MaterialRecord()
    if item.kind == "lines":
        mat.shader = "unlitLine"
        mat.line_width = float(item.line_width) * line_scale
    elif item.kind == "mesh":
        mat.shader = "defaultLit"
    else:
        mat.shader = "defaultUnlit"
        mat.point_size = float(item.point_size)
    return mat


def _line_scale(fov_deg: float) -> float:
    """Open3D's offscreen wide-line shader scales widths by tan(30 deg) / tan(fov / 2) (measured: 2 px at 60 deg,
    4 px at 30 deg, 6 px at 20 deg); this factor scales them back to pixels."""
    return math.tan(math.radians(fov_deg) / 2) / math.tan(math.radians(30))


def _set_camera(renderer, camera: CameraView, width: int, height: int) -> None:
    cam = renderer.scene.camera
    fov_type = o3d.visualization.rendering.Camera.FovType.Vertical
    cam.set_projection(camera.fov_deg, width / height, camera.near, camera.far, fov_type)
    cam.look_at(camera.target, camera.eye, camera.up)


def _check_size(width: int, height: int) -> tuple[int, int]:
    for name, value in (("width", width), ("height", height)):
        if int(value) != value or not 16 <= value <= 8192:
            raise ValueError(f"{name}: expected an integer number of pixels in [16, 8192], got {value!r}")
    return int(width), int(height)


def render_image(scene: Scene, width: int = 1280, height: int = 720, view: str = "auto",
                 title: str | None = None, camera: CameraView | None = None) -> np.ndarray:
    """Render a scene headless, with its title, legend and box tags drawn on top.

    Args:
        scene: what to draw (see :class:`viewers.scene.Scene`).
        width: image width in pixels.
        height: image height in pixels.
        view: ``"auto"``, ``"bev"`` or ``"front"`` (see :func:`frame_camera`).
        title: text for the top-left corner, or None.
        camera: render from this camera instead of framing the scene with ``view`` (e.g.
            :func:`camera_from_pose`).

    Returns:
        (height, width, 3) uint8 RGB image.
    """
    width, height = _check_size(width, height)
    camera = camera if camera is not None else frame_camera(scene, view, width / height)
    renderer = _get_renderer(width, height)
    renderer.scene.set_background([*_srgb_encode(BACKGROUND), 1.0])
    renderer.scene.scene.set_sun_light(_sun_direction(camera), [1.0, 1.0, 1.0], _SUN_LUX)
    renderer.scene.scene.enable_sun_light(True)
    try:
        for item in scene.items:
            geometry = _TENSOR_TYPES[item.kind].from_legacy(item.geometry)
            renderer.scene.add_geometry(item.name, geometry, item_material(item, _line_scale(camera.fov_deg)))
        _set_camera(renderer, camera, width, height)
        image = np.asarray(renderer.render_to_image())[..., :3].copy()
        tags = [(p, t.text, t.color) for t in scene.tags if (p := _project(renderer, t.position, width, height))]
    finally:
        renderer.scene.clear_geometry()
    return draw_overlay(image, title, scene.legend, tags)


def _project(renderer, point: np.ndarray, width: int, height: int) -> tuple[float, float] | None:
    """Pixel (u, v) of a 3D point with the renderer's current camera, or None when off-screen."""
    cam = renderer.scene.camera
    clip = np.asarray(cam.get_projection_matrix()) @ np.asarray(cam.get_view_matrix()) @ np.append(point, 1.0)
    if clip[3] <= 1e-9:
        return None
    ndc = clip[:2] / clip[3]
    if np.any(np.abs(ndc) > 1):
        return None
    return (ndc[0] + 1) / 2 * width, (1 - ndc[1]) / 2 * height


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _rgb255(color: RGB) -> tuple[int, int, int]:
    return tuple(int(round(c * 255)) for c in color)  # type: ignore[return-value]


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two (left, top, right, bottom) rectangles intersect."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_overlay(image: np.ndarray, title: str | None, legend: list[tuple[str, RGB]],
                 tags: list[tuple[tuple[float, float], str, RGB]] = ()) -> np.ndarray:
    """Draw a title (top left), a legend (bottom left) and text tags onto an image.

    Text size follows the image height (1/36 of it, at least 10 px). Tags are drawn in their colour with
    a black outline, just above and right of their anchor pixel, moved down when they would cover an
    earlier tag.

    Args:
        image: (H, W, 3) uint8 RGB.
        title: title text or None.
        legend: ``(label, colour)`` entries: a filled square of the colour, then the label.
        tags: ``((u, v) pixel, text, colour)`` entries.

    Returns:
        (H, W, 3) uint8 RGB, a new array.
    """
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    draw = ImageDraw.Draw(pil)
    h = pil.height
    size = max(10, round(h / 36))
    font, small = _font(size), _font(max(9, round(size * 0.8)))
    pad, stroke = max(4, size // 2), max(1, size // 16)
    placed: list[tuple[float, float, float, float]] = []
    for (u, v), text, color in tags:
        xy = (u + 3, v - small.size - 2)
        box = draw.textbbox(xy, text, font=small, stroke_width=stroke)
        while any(_overlap(box, other) for other in placed):  # move down below tags already drawn
            shift = box[3] - box[1] + 1
            xy, box = (xy[0], xy[1] + shift), (box[0], box[1] + shift, box[2], box[3] + shift)
        placed.append(box)
        draw.text(xy, text, fill=_rgb255(color), font=small, stroke_width=stroke, stroke_fill=(0, 0, 0))
    if title:
        draw.text((pad, pad), title, fill=_rgb255(TEXT), font=font, stroke_width=stroke, stroke_fill=(0, 0, 0))
    row = round(size * 1.4)
    y = h - pad - row * len(legend)
    for label, color in legend:
        draw.rectangle([pad, y + 2, pad + size - 2, y + size], fill=_rgb255(color))
        draw.text((pad + size + pad, y), label, fill=_rgb255(TEXT), font=font, stroke_width=stroke,
                  stroke_fill=(0, 0, 0))
        y += row
    return np.asarray(pil).copy()


def render_png(scene: Scene, out_path: str | os.PathLike, width: int = 1280, height: int = 720,
               view: str = "auto", title: str | None = None, camera: CameraView | None = None) -> Path:
    """Render a scene headless and write it as a PNG (atomically).

    Args:
        scene: what to draw.
        out_path: the ``.png`` file to write (folders are created).
        width: image width in pixels.
        height: image height in pixels.
        view: ``"auto"``, ``"bev"`` or ``"front"`` (see :func:`frame_camera`).
        title: text for the top-left corner, or None.
        camera: render from this camera instead of framing the scene with ``view``.

    Returns:
        ``out_path`` as a Path.

    Raises:
        InputError: ``out_path`` does not end in ``.png``.
    """
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".png":
        raise InputError(out_path, f"expected a .png output file, got suffix {out_path.suffix or '(none)'!r}")
    image = render_image(scene, width, height, view, title, camera)
    with atomic_path(out_path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return out_path


_PROBE = """
import numpy as np, open3d as o3d
from viewers.render import render_image
from viewers.scene import Scene
from geo3d.types import PointCloud
s = Scene(); s.add_points(PointCloud(np.random.default_rng(0).normal(size=(100, 3)).astype("float32")))
assert render_image(s, 32, 32).std() > 0
"""


@functools.lru_cache(maxsize=1)
def headless_available() -> bool:
    """Whether headless rendering works here, tried once in a child process (Filament aborts on failure).

    Returns:
        True when a tiny scene renders to a non-uniform image.
    """
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
