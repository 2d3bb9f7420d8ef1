"""Particle trajectories and rollouts: an animation in an Open3D window, or a GIF rendered headless.

``geo3d view FILE`` reads

* a rollout file (:mod:`geo3d.io.rollout`, written by ``geo3d predict`` with a simulation config): the ground
  truth and the prediction side by side (``--baseline`` adds the constant-velocity baseline);
* a LagrangeBench split (``train.h5`` / ``valid.h5`` / ``test.h5`` with ``metadata.json`` beside it) or a GNS
  ``.npz`` dataset: trajectory ``--trajectory i`` (default 0).

Each panel is the simulation box (grey outline) with its particles coloured by speed (turbo, one scale for
every frame and panel: 0 to the 99.5th percentile of the first panel's speeds) or by particle type. 2D data is
drawn in the x-z plane seen from the front (gravity points down the page); 3D data from the front, above and to
the left.

The window (:func:`show_animation`) hands Open3D's ``draw`` one geometry per frame and panel, tagged with its
time, and starts playing: Open3D's own animation controls (play/pause, time slider, step) work on it.
:func:`render_gif` renders each frame with :func:`viewers.render.render_image` (about 0.03-0.1 s per
640-pixel frame here) and writes an animated GIF with PIL; ``--out X.png`` writes the last frame.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import open3d as o3d
from PIL import Image

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_path
from geo3d.io.particles import read_gns_npz, read_lagrangebench
from geo3d.io.rollout import is_rollout_file, read_rollout
from viewers.colors import colormap_table
from viewers.render import CameraView, render_image
from viewers.scene import Scene, SceneItem, Tag

PathLike = str | os.PathLike
PARTICLE_SUFFIXES = (".h5", ".hdf5", ".npz")
"""Files :func:`load_animation` reads (``geo3d view`` sends them here)."""
TYPE_NAMES = {3: "kinematic", 5: "fluid", 6: "sand", 7: "plasticine", 8: "elastic"}
"""GNS particle type ids (as ``geo3d synth particles`` writes them) and their names."""
_TYPE_COLORS = [(0.30, 0.60, 1.00), (1.00, 0.75, 0.20), (0.35, 0.85, 0.40), (0.95, 0.35, 0.35),
                (0.75, 0.50, 1.00), (0.30, 0.90, 0.90), (0.95, 0.55, 0.85), (0.70, 0.70, 0.70)]
_WALL_COLOR = (0.55, 0.55, 0.55)
_PANEL_GAP = 0.12  # gap between panels, as a fraction of the box width
COLOR_MODES = ("speed", "type")


@dataclass
class ParticleAnimation:
    """Trajectories to play side by side.

    Attributes:
        panels: ``(label, positions (T, N, D) float32 metres)`` per panel, all of the same shape.
        particle_types: (N,) int64 type ids.
        bounds: (D, 2) float64 box ``[min, max]`` per axis, metres.
        dt: seconds between frames.
        history: frames at the start that are a model's input (0 for a plain trajectory).
        name: what to call it in titles (the file name).
    """

    panels: list[tuple[str, np.ndarray]]
    particle_types: np.ndarray
    bounds: np.ndarray
    dt: float
    history: int
    name: str

    @property
    def num_frames(self) -> int:
        return self.panels[0][1].shape[0]

    @property
    def dim(self) -> int:
        return self.panels[0][1].shape[2]


def load_animation(path: PathLike, trajectory: int = 0, baseline: bool = False) -> ParticleAnimation:
    """Read a rollout file, a LagrangeBench split or a GNS ``.npz`` for :func:`render_gif` / :func:`show_animation`.

    Args:
        path: the file (see the module docstring).
        trajectory: which trajectory of a dataset file (ignored for a rollout file).
        baseline: for a rollout file, add its constant-velocity baseline as a third panel.

    Returns:
        The animation; a rollout's panels are ``ground truth`` (when stored) and ``prediction (<model>)``.

    Raises:
        InputError: naming the file: unreadable, not a particle file, no such trajectory, no bounds.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.suffix.lower() not in PARTICLE_SUFFIXES:
        raise InputError(path, f"not a particle file (expected {', '.join(PARTICLE_SUFFIXES)})")
    if path.suffix.lower() != ".npz" and not h5py.is_hdf5(path):
        raise InputError(path, "not an HDF5 file")
    if path.suffix.lower() != ".npz" and is_rollout_file(path):
        r = read_rollout(path)
        _check_dim(path, r.predicted.shape[-1])
        panels = [("ground truth", r.ground_truth)] if r.ground_truth is not None else []
        panels.append((f"prediction ({r.model})" if r.model else "prediction", r.predicted))
        if baseline:
            if r.baseline is None:
                raise InputError(path, "--baseline: the file holds no 'baseline' dataset")
            panels.append(("constant velocity", r.baseline))
        return ParticleAnimation([(label, p.numpy()) for label, p in panels], r.particle_types.numpy(),
                                 r.bounds.double().numpy(), r.dt, r.history, path.name)
    if baseline:
        raise InputError(path, "--baseline: only rollout files hold a baseline")
    trajectories = read_gns_npz(path) if path.suffix.lower() == ".npz" else read_lagrangebench(path)
    if not 0 <= trajectory < len(trajectories):
        raise InputError(path, f"--trajectory {trajectory}: the file holds {len(trajectories)} trajectories "
                               f"(0-{len(trajectories) - 1})")
    t = trajectories[trajectory]
    positions = t.positions.numpy()
    _check_dim(path, positions.shape[-1])
    if t.bounds is None:
        raise InputError(path, "no 'bounds' in the metadata: the box cannot be drawn")
    if not np.isfinite(positions).all():
        raise InputError(path, f"trajectory {trajectory}: NaN or infinite positions")
    return ParticleAnimation([(f"trajectory {trajectory}", positions)], t.particle_types.numpy(),
                             t.bounds.double().numpy(), t.dt, 0, path.name)


def _check_dim(path: Path, dim: int) -> None:
    """Particles are drawn in 2D or 3D only (a 4D file was drawn as its first two axes before)."""
    if dim not in (2, 3):
        raise InputError(path, f"positions have {dim} coordinates; expected 2 (2D) or 3 (3D)")


def _to_3d(points: np.ndarray) -> np.ndarray:
    """(..., D) positions -> (..., 3): 2D ``(x, y)`` becomes ``(x, 0, y)`` (y is up in the 2D data)."""
    if points.shape[-1] == 3:
        return points
    out = np.zeros((*points.shape[:-1], 3), dtype=np.float64)
    out[..., 0], out[..., 2] = points[..., 0], points[..., 1]
    return out


def _panel_offset(anim: ParticleAnimation, index: int) -> np.ndarray:
    width = anim.bounds[0, 1] - anim.bounds[0, 0]
    return np.array([index * width * (1.0 + _PANEL_GAP), 0.0, 0.0])


def speeds(positions: np.ndarray, dt: float) -> np.ndarray:
    """Per-frame particle speeds, metres/second.

    Args:
        positions: (T, N, D) metres.
        dt: seconds between frames.

    Returns:
        (T, N) float64: ``|x_t - x_{t-1}| / dt``, frame 0 taking frame 1's value (0 for a single frame).
    """
    if positions.shape[0] < 2:
        return np.zeros(positions.shape[:2])
    v = np.linalg.norm(np.diff(positions.astype(np.float64), axis=0), axis=-1) / dt
    return np.concatenate([v[:1], v])


def _speed_limit(anim: ParticleAnimation) -> float:
    """The speed drawn red, m/s: the 99.5th percentile of the first panel's speeds (the ground truth of a
    rollout, so that a prediction that goes wrong shows up red rather than rescaling the colours)."""
    first = speeds(anim.panels[0][1], anim.dt).ravel()
    limit = float(np.percentile(first, 99.5)) if first.size else 0.0
    return limit if limit > 0 else 1.0


def _turbo(t: np.ndarray) -> np.ndarray:
    """(N,) values in [0, 1] -> (N, 3) float64 turbo RGB (a fixed scale, unlike ``apply_colormap``'s percentiles)."""
    table = colormap_table("turbo")
    return table[np.round(np.clip(t, 0.0, 1.0) * (len(table) - 1)).astype(np.int64)]


def _type_color(type_id: int, order: list[int]) -> tuple[float, float, float]:
    return _TYPE_COLORS[order.index(type_id) % len(_TYPE_COLORS)]


def _box_lines(lo: np.ndarray, hi: np.ndarray) -> o3d.geometry.LineSet:
    """The 12 edges of an axis-aligned box (a rectangle in the x-z plane when ``lo[1] == hi[1]``)."""
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    edges = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]
    lines = o3d.geometry.LineSet(o3d.utility.Vector3dVector(corners), o3d.utility.Vector2iVector(edges))
    lines.paint_uniform_color(_WALL_COLOR)
    return lines


def frame_colors(anim: ParticleAnimation, panel: int, frame: int, color_by: str = "speed",
                 speed_limit: float | None = None) -> np.ndarray:
    """(N, 3) float64 RGB in [0, 1] of one panel's particles at one frame.

    Args:
        anim: the animation.
        panel: panel index.
        frame: frame index.
        color_by: ``"speed"`` (turbo, 0 to ``speed_limit`` m/s) or ``"type"`` (one colour per type id).
        speed_limit: speed drawn red, m/s (None: the 99.5th percentile of all speeds).
    """
    if color_by == "type":
        order = sorted(int(t) for t in np.unique(anim.particle_types))
        table = np.array([_type_color(t, order) for t in order])
        return table[np.searchsorted(order, anim.particle_types)]
    if color_by != "speed":
        raise ValueError(f"frame_colors: color_by must be one of {COLOR_MODES}, got {color_by!r}")
    limit = _speed_limit(anim) if speed_limit is None else speed_limit
    positions = anim.panels[panel][1]
    lo = max(frame - 1, 0)
    v = speeds(positions[lo:frame + 1], anim.dt)[-1]
    return _turbo(v / limit)


def frame_scene(anim: ParticleAnimation, frame: int, color_by: str = "speed", point_size: float | None = None,
                speed_limit: float | None = None) -> Scene:
    """One frame of every panel as a :class:`~viewers.scene.Scene`: boxes, particles, panel tags, legend.

    Args:
        anim: the animation.
        frame: frame index in ``[0, anim.num_frames)``.
        color_by: ``"speed"`` or ``"type"`` (see :func:`frame_colors`).
        point_size: point diameter in pixels (None: 3 for up to 5k particles, 2 above).
        speed_limit: see :func:`frame_colors`.
    """
    if not 0 <= frame < anim.num_frames:
        raise ValueError(f"frame_scene: frame {frame} outside [0, {anim.num_frames})")
    limit = _speed_limit(anim) if speed_limit is None and color_by == "speed" else speed_limit
    n = anim.particle_types.shape[0]
    size = point_size if point_size is not None else (3.0 if n <= 5000 else 2.0)
    lo3, hi3 = _to_3d(anim.bounds[:, 0]), _to_3d(anim.bounds[:, 1])
    scene = Scene()
    for i, (label, positions) in enumerate(anim.panels):
        shift = _panel_offset(anim, i)
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(_to_3d(positions[frame]) + shift))
        cloud.colors = o3d.utility.Vector3dVector(frame_colors(anim, i, frame, color_by, limit))
        scene.items.append(SceneItem(f"particles_{i}", cloud, "points", point_size=size))
        scene.items.append(SceneItem(f"box_{i}", _box_lines(lo3 + shift, hi3 + shift), "lines", line_width=1.5))
        scene.tags.append(Tag(np.array([lo3[0], lo3[1], hi3[2]]) + shift, label, (1.0, 1.0, 1.0)))
    if color_by == "speed":
        scene.legend.extend([("speed 0 m/s", tuple(_turbo(np.zeros(1))[0])),
                             (f"speed {limit / 2:.3g} m/s", tuple(_turbo(np.full(1, 0.5))[0])),
                             (f"speed {limit:.3g} m/s and more", tuple(_turbo(np.ones(1))[0]))])
    else:
        order = sorted(int(t) for t in np.unique(anim.particle_types))
        scene.legend.extend((TYPE_NAMES.get(t, f"type {t}"), _type_color(t, order)) for t in order)
    return scene


def animation_camera(anim: ParticleAnimation, aspect: float) -> CameraView:
    """A fixed camera that frames every panel's box: front view for 2D, oblique for 3D.

    Args:
        anim: the animation.
        aspect: image width / height.
    """
    lo, hi = _to_3d(anim.bounds[:, 0]), _to_3d(anim.bounds[:, 1]) + _panel_offset(anim, len(anim.panels) - 1)
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    fov = 20.0
    tan_v = math.tan(math.radians(fov) / 2)
    if anim.dim == 2:
        direction = np.array([0.0, -1.0, 0.0])
        extent = max(half[2] * 1.25, half[0] * 1.1 / aspect)  # title above, legend below
        distance = extent / tan_v
    else:
        direction = np.array([-0.35, -1.0, 0.55]) / np.linalg.norm([-0.35, -1.0, 0.55])
        radius = float(np.linalg.norm(half))
        distance = radius * 1.15 / (tan_v * min(1.0, aspect))
    eye = centre + direction * distance  # direction: from the target towards the eye
    return CameraView(eye=eye, target=centre, up=np.array([0.0, 0.0, 1.0]), fov_deg=fov,
                      near=distance / 100, far=distance * 10)


def _frames(anim: ParticleAnimation, max_frames: int | None) -> list[int]:
    """Frame indices to show: every frame, or about ``max_frames`` evenly spaced ones, always with the last."""
    t = anim.num_frames
    if max_frames is None or t <= max_frames:
        return list(range(t))
    stride = math.ceil(t / max_frames)
    frames = list(range(0, t, stride))
    return frames if frames[-1] == t - 1 else [*frames, t - 1]


def _frame_title(anim: ParticleAnimation, frame: int) -> str:
    stage = "input" if frame < anim.history else "rollout"
    step = frame - anim.history + 1 if frame >= anim.history else frame + 1
    total = anim.num_frames - anim.history
    what = f"step {step}/{total}" if stage == "rollout" else f"input frame {step}/{anim.history}"
    return f"{anim.name}   {what}   t = {frame * anim.dt:.3f} s"


def render_frames(anim: ParticleAnimation, frames: list[int], width: int = 960, height: int | None = None,
                  color_by: str = "speed", point_size: float | None = None) -> list[np.ndarray]:
    """Render frames headless with a fixed camera and colour scale.

    Args:
        anim: the animation.
        frames: frame indices.
        width: image width in pixels.
        height: image height in pixels (None: from the panels' layout).
        color_by: ``"speed"`` or ``"type"``.
        point_size: point diameter in pixels (None: see :func:`frame_scene`).

    Returns:
        One (height, width, 3) uint8 RGB image per frame.
    """
    if height is None:
        box = anim.bounds[:, 1] - anim.bounds[:, 0]
        up = box[-1] if anim.dim == 2 else float(np.linalg.norm(box))
        across = box[0] * (len(anim.panels) * (1 + _PANEL_GAP))
        height = int(round(min(max(width * up * 1.35 / across, width * 0.3), width * 1.2) / 2)) * 2
    camera = animation_camera(anim, width / height)
    limit = _speed_limit(anim) if color_by == "speed" else None
    return [render_image(frame_scene(anim, f, color_by, point_size, limit), width, height,
                         title=_frame_title(anim, f), camera=camera) for f in frames]


def render_gif(anim: ParticleAnimation, out: PathLike, width: int = 960, height: int | None = None,
               color_by: str = "speed", max_frames: int | None = 120, fps: float = 20.0,
               point_size: float | None = None, progress: bool = True) -> Path:
    """Render the animation headless to an animated GIF (``.gif``) or its last frame (``.png``), atomically.

    Args:
        anim: the animation.
        out: ``.gif`` or ``.png`` path (folders are created).
        width: image width in pixels.
        height: image height in pixels (None: from the layout).
        color_by: ``"speed"`` or ``"type"``.
        max_frames: at most about this many frames, evenly spaced (None: all).
        fps: GIF frames per second.
        point_size: point diameter in pixels (None: see :func:`frame_scene`).
        progress: show a progress bar.

    Returns:
        ``out`` as a Path.

    Raises:
        InputError: ``out`` is not a ``.gif`` or ``.png`` path.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".gif", ".png"):
        raise InputError(out, f"expected a .gif (animation) or .png (last frame) output, got {suffix or '(none)'!r}")
    frames = [anim.num_frames - 1] if suffix == ".png" else _frames(anim, max_frames)
    if progress and len(frames) > 1:
        from tqdm import tqdm

        images = [render_frames(anim, [f], width, height, color_by, point_size)[0]
                  for f in tqdm(frames, desc=f"rendering {out.name}", unit="frame")]
    else:
        images = render_frames(anim, frames, width, height, color_by, point_size)
    pictures = [Image.fromarray(image) for image in images]
    with atomic_path(out) as tmp:
        if suffix == ".png":
            pictures[0].save(tmp, format="PNG")
        else:
            palette = [p.convert("P", palette=Image.ADAPTIVE, colors=255) for p in pictures]
            palette[0].save(tmp, format="GIF", save_all=True, append_images=palette[1:], loop=0,
                            duration=max(20, round(1000 / fps)), disposal=1)
    return out


def show_animation(anim: ParticleAnimation, width: int = 1280, height: int = 720, color_by: str = "speed",
                   max_frames: int | None = 400, point_size: float | None = None) -> None:
    """Play the animation in an Open3D window (returns when it is closed).

    Every shown frame of every panel becomes one time-tagged geometry; Open3D's animation controls play,
    pause and scrub them. Playback starts at once, one stored frame per ``anim.dt`` seconds.

    Args:
        anim: the animation.
        width, height: window size in pixels.
        color_by: ``"speed"`` or ``"type"``.
        max_frames: at most about this many frames (memory: each is a geometry per panel).
        point_size: point diameter in pixels (None: see :func:`frame_scene`).

    Raises:
        RuntimeError: there is no display (see :func:`viewers.window.has_display`).
    """
    from viewers.window import has_display

    if not has_display():
        raise RuntimeError("show_animation: no display (DISPLAY/WAYLAND_DISPLAY unset); render a GIF with "
                           "`geo3d view FILE --out rollout.gif`")
    frames = _frames(anim, max_frames)
    camera = animation_camera(anim, width / height)
    limit = _speed_limit(anim) if color_by == "speed" else None
    entries, first = [], frame_scene(anim, frames[0], color_by, point_size, limit)
    step = anim.dt * (frames[1] - frames[0]) if len(frames) > 1 else anim.dt
    for k, f in enumerate(frames):
        scene = first if k == 0 else frame_scene(anim, f, color_by, point_size, limit)
        for item in scene.items:
            if item.kind == "lines" and k > 0:
                continue  # the boxes do not move: drawn once
            mat = o3d.visualization.rendering.MaterialRecord()
            mat.shader = "unlitLine" if item.kind == "lines" else "defaultUnlit"
            mat.line_width, mat.point_size = float(item.line_width), float(item.point_size)
            entry = {"name": f"{item.name}_t{f:05d}" if item.kind == "points" else item.name,
                     "geometry": item.geometry, "material": mat}
            if item.kind == "points":
                entry["time"] = k * step
            entries.append(entry)
    title = f"geo3d  |  {anim.name}  |  " + ", ".join(label for label, _ in first.legend)

    def start(window) -> None:
        for tag in first.tags:
            label = window.add_3d_label(tag.position, tag.text)
            if label is not None:  # some Open3D builds return no handle
                label.color = o3d.visualization.gui.Color(*tag.color)
        window.is_animating = True

    from viewers.colors import BACKGROUND

    o3d.visualization.draw(entries, title=title, width=width, height=height, lookat=camera.target, eye=camera.eye,
                           up=camera.up, field_of_view=camera.fov_deg, bg_color=(*BACKGROUND, 1.0),
                           show_skybox=False, animation_time_step=step, animation_duration=len(frames) * step,
                           on_init=start)


def view_particles(path: PathLike, out: PathLike | None = None, trajectory: int = 0, baseline: bool = False,
                   color_by: str = "speed", width: int | None = None, height: int | None = None,
                   max_frames: int | None = None, fps: float = 20.0) -> Path | None:
    """``geo3d view`` for particle files: play in a window, or render a GIF / last-frame PNG headless.

    Args:
        path: rollout file, LagrangeBench split or GNS ``.npz`` (see :func:`load_animation`).
        out: ``.gif`` or ``.png`` to write instead of opening a window. Without ``out`` and without a display,
            the GIF goes to ``<file stem>.gif`` in the current folder (printed).
        trajectory, baseline: see :func:`load_animation`.
        color_by: ``"speed"`` or ``"type"``.
        width, height: image or window size in pixels (None: 960 wide for images, 1280 x 720 for the window).
        max_frames: at most about this many frames (None: 120 for a GIF, 400 in the window).
        fps: GIF frames per second.

    Returns:
        The written file, or None when a window was shown.
    """
    from viewers.window import has_display

    anim = load_animation(path, trajectory, baseline)
    if out is None and has_display():
        show_animation(anim, width or 1280, height or 720, color_by, 400 if max_frames is None else max_frames)
        return None
    if out is None:
        out = Path.cwd() / f"{Path(path).stem}.gif"
        print(f"no display found: rendering headless to {out} (choose the file with --out)")
    return render_gif(anim, out, width or 960, height, color_by, 120 if max_frames is None else max_frames, fps)
