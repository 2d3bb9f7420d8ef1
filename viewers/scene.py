"""A small scene description shared by headless rendering and interactive windows.

A :class:`Scene` is a list of named Open3D geometries (points, meshes, box line sets) with their
drawing style, a legend ``(label, colour)`` list, and text tags anchored at 3D points (box names and
scores). It only describes what to draw; :mod:`viewers.render` and :mod:`viewers.window` draw it.
Builders take the geo3d types (:class:`PointCloud`, :class:`Mesh`, :class:`Boxes3D`, :class:`Cameras`,
:class:`Gaussians`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import open3d as o3d
import torch
import trimesh
from kornia.geometry.conversions import quaternion_to_rotation_matrix

from geo3d.types import Boxes3D, Cameras, Gaussians, Mesh, PointCloud
from viewers.colors import MESH_DEFAULT, POINT_SPAN, RGB, apply_colormap, parse_color

Kind = Literal["points", "mesh", "lines"]
GaussianMode = Literal["centres", "ellipsoids"]
ELLIPSOID_SIGMAS = 2.0
"""Gaussians drawn as ellipsoids reach this many standard deviations along each axis."""
ELLIPSOID_MIN_OPACITY = 0.5
"""Only Gaussians at least this opaque are candidates for ellipsoids (faint large ones would hide the rest)."""
# Box edges over Boxes3D corner order (bottom face 0-3, top face 4-7), then the heading tick.
_BOX_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6],
                       [3, 7], [8, 9]])
# Camera frustum edges over (centre, 4 image corners, "up" tick tip): 4 rays, the image rectangle, the tick.
_FRUSTUM_EDGES = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1], [1, 5]])


@dataclass
class SceneItem:
    """One geometry to draw.

    Attributes:
        name: unique name in the scene.
        geometry: ``open3d.geometry.PointCloud``, ``TriangleMesh`` (vertex colours set) or ``LineSet``.
        kind: ``"points"``, ``"mesh"`` or ``"lines"``.
        point_size: point diameter in pixels (points only).
        line_width: line width in pixels (lines only).
    """

    name: str
    geometry: object
    kind: Kind
    point_size: float = 2.0
    line_width: float = 2.0


@dataclass
class Tag:
    """Text drawn next to a 3D point (e.g. ``"Car 0.87"`` above a box).

    Attributes:
        position: (3,) float64 anchor, metres.
        text: the text.
        color: RGB in [0, 1].
    """

    position: np.ndarray
    text: str
    color: RGB


@dataclass
class Scene:
    """Geometries, a legend and text tags.

    Attributes:
        items: geometries in drawing order.
        legend: ``(label, colour)`` entries, drawn as coloured squares with text.
        tags: text anchored at 3D points.
        sensor: (3,) float64 position of a LiDAR sensor in the scene (metres), or None. When set, the
            automatic camera looks over the sensor's shoulder instead of framing the whole scene.
    """

    items: list[SceneItem] = field(default_factory=list)
    legend: list[tuple[str, RGB]] = field(default_factory=list)
    tags: list[Tag] = field(default_factory=list)
    sensor: np.ndarray | None = None

    def _name(self, name: str | None, prefix: str) -> str:
        taken = {item.name for item in self.items}
        if name is not None:
            if name in taken:
                raise ValueError(f"Scene: the name {name!r} is already used")
            return name
        i = 0
        while f"{prefix}_{i}" in taken:
            i += 1
        return f"{prefix}_{i}"

    def add_points(
        self,
        cloud: PointCloud,
        color_by: str | tuple[float, float, float] = "height",
        point_size: float = 2.0,
        colormap: str = "turbo",
        name: str | None = None,
        sensor: tuple[float, float, float] | None = None,
    ) -> SceneItem:
        """Add a point cloud.

        Args:
            cloud: points (N, 3) float32 metres; ``features[:, 0]`` is the intensity, ``colors`` (N, 3)
                in [0, 1] the RGB.
            color_by: ``"height"`` (z, colormapped), ``"intensity"`` (``features[:, 0]``, colormapped),
                ``"rgb"`` (the cloud's own colours) or one fixed colour (name, ``"#rrggbb"`` or RGB).
                Colormapped values are normalised between their 1st and 99th percentiles.
            point_size: point diameter in pixels.
            colormap: colormap for height and intensity (see :func:`viewers.colors.colormap_table`).
            name: geometry name; default ``points_<i>``.
            sensor: (3,) position of the LiDAR that captured the cloud, metres (``(0, 0, 0)`` for a
                scan in its own frame), or None. Sets :attr:`Scene.sensor`.

        Returns:
            The new item.

        Raises:
            ValueError: the cloud lacks what ``color_by`` asks for, or ``color_by`` is not understood.
        """
        points = cloud.points.detach().cpu().double().numpy()
        if color_by == "height":
            colors = apply_colormap(points[:, 2], colormap, span=POINT_SPAN)
        elif color_by == "intensity":
            if cloud.features is None or cloud.features.shape[1] == 0:
                raise ValueError("add_points: color_by='intensity' needs PointCloud.features (N, >=1), got None")
            colors = apply_colormap(cloud.features[:, 0], colormap, span=POINT_SPAN)
        elif color_by == "rgb":
            if cloud.colors is None:
                raise ValueError("add_points: color_by='rgb' needs PointCloud.colors (N, 3), got None")
            colors = cloud.colors.detach().cpu().double().numpy()
        else:
            colors = np.tile(parse_color(color_by, "add_points: color_by"), (len(points), 1))
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
        pcd.colors = o3d.utility.Vector3dVector(colors)
        if sensor is not None:
            self.sensor = np.asarray(sensor, dtype=np.float64).reshape(3)
        item = SceneItem(self._name(name, "points"), pcd, "points", point_size=float(point_size))
        self.items.append(item)
        return item

    def add_mesh(self, mesh: Mesh, color: str | tuple[float, float, float] | None = None,
                 name: str | None = None) -> SceneItem:
        """Add a triangle mesh, drawn lit (shaded by its normals).

        Args:
            mesh: vertices (V, 3) float32 metres, faces (F, 3) int64, optional vertex colours.
            color: one colour for the whole mesh; None uses the vertex colours, or a light grey.
            name: geometry name; default ``mesh_<i>``.

        Returns:
            The new item (an ``open3d.geometry.TriangleMesh`` with vertex normals and colours).
        """
        tm = mesh.to_open3d()
        if color is not None or not tm.has_vertex_colors():
            tm.paint_uniform_color(MESH_DEFAULT if color is None else parse_color(color, "add_mesh: color"))
        item = SceneItem(self._name(name, "mesh"), tm, "mesh")
        self.items.append(item)
        return item

    def add_gaussians(
        self,
        gaussians: Gaussians,
        mode: GaussianMode = "centres",
        max_ellipsoids: int = 2000,
        min_opacity: float = 0.1,
        name: str | None = None,
        label: str | None = None,
        point_size: float = 2.0,
    ) -> list[SceneItem]:
        """Add 3D Gaussians, coloured by their view-independent (DC) colour; fainter ones are skipped.

        ``"centres"``: one point per Gaussian at its mean. ``"ellipsoids"``: the ``max_ellipsoids``
        largest Gaussians by volume among those at least :data:`ELLIPSOID_MIN_OPACITY` opaque, as low-poly
        ellipsoids (a 42-vertex icosphere per Gaussian, rotated by its quaternion and reaching
        :data:`ELLIPSOID_SIGMAS` = 2 standard deviations along each axis) merged into one lit mesh, and
        the other Gaussians as centres.

        Args:
            gaussians: N Gaussians (means (N, 3) metres, quats (N, 4) ``w, x, y, z``, scales (N, 3) metres).
            mode: ``"centres"`` or ``"ellipsoids"``.
            max_ellipsoids: most ellipsoids drawn (``"ellipsoids"`` mode).
            min_opacity: Gaussians below this opacity are not drawn.
            name: name prefix; items are ``<name>`` (centres) and ``<name>_ellipsoids``; default
                ``gaussians_<i>``.
            label: legend text; None adds no legend entry. Its square has the median DC colour.
            point_size: point diameter in pixels for the centres.

        Returns:
            The new items: the ellipsoid mesh (when any), then the centres point cloud (when any).

        Raises:
            ValueError: an unknown ``mode``, or no Gaussian reaches ``min_opacity``.
        """
        if mode not in ("centres", "ellipsoids"):
            raise ValueError(f"add_gaussians: mode must be 'centres' or 'ellipsoids', got {mode!r}")
        opacities = gaussians.opacities.detach().cpu().double().numpy()
        visible = np.flatnonzero(opacities >= min_opacity)
        if len(visible) == 0:
            raise ValueError(f"add_gaussians: no Gaussian has opacity >= {min_opacity} "
                             f"(max {opacities.max() if len(opacities) else 0:.3g})")
        means = gaussians.means.detach().cpu().double().numpy()
        colors = gaussians.base_colors().detach().cpu().double().numpy()
        taken = {item.name for item in self.items}
        if name is None:  # both ``gaussians_<i>`` and ``gaussians_<i>_ellipsoids`` must be free
            i = 0
            while {f"gaussians_{i}", f"gaussians_{i}_ellipsoids"} & taken:
                i += 1
            name = f"gaussians_{i}"
        base = self._name(name, "gaussians")
        chosen = np.zeros(0, dtype=np.int64)
        if mode == "ellipsoids":
            scales = gaussians.scales.detach().cpu().double().numpy()
            candidates = visible[opacities[visible] >= ELLIPSOID_MIN_OPACITY]
            volume = scales[candidates].prod(1)
            chosen = candidates[np.argsort(-volume, kind="stable")[:max(int(max_ellipsoids), 0)]]
        items = []
        if len(chosen):
            rot = quaternion_to_rotation_matrix(gaussians.unit_quats[chosen].detach().cpu().double()).numpy()
            sphere = trimesh.creation.icosphere(subdivisions=1)
            unit, faces = np.asarray(sphere.vertices), np.asarray(sphere.faces)
            # vertex = mean + R diag(k sigma) u, for every chosen Gaussian and icosphere vertex at once
            axes = rot * (ELLIPSOID_SIGMAS * scales[chosen])[:, None, :]  # (M, 3, 3): R diag(k sigma)
            vertices = means[chosen, None, :] + np.einsum("mij,vj->mvi", axes, unit)  # (M, V, 3)
            all_faces = faces[None] + len(unit) * np.arange(len(chosen))[:, None, None]
            tm = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices.reshape(-1, 3)),
                                           o3d.utility.Vector3iVector(all_faces.reshape(-1, 3).astype(np.int32)))
            tm.vertex_colors = o3d.utility.Vector3dVector(np.repeat(colors[chosen], len(unit), axis=0))
            tm.compute_vertex_normals()
            items.append(SceneItem(self._name(f"{base}_ellipsoids", "gaussians"), tm, "mesh"))
        rest = np.setdiff1d(visible, chosen)
        if len(rest):
            pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(means[rest]))
            pcd.colors = o3d.utility.Vector3dVector(colors[rest])
            items.append(SceneItem(base, pcd, "points", point_size=float(point_size)))
        self.items.extend(items)
        if label is not None:
            self.legend.append((label, tuple(float(c) for c in np.median(colors[visible], 0))))
        return items

    def add_boxes(
        self,
        boxes: Boxes3D,
        color: str | tuple[float, float, float] = "green",
        label: str | None = None,
        line_width: float = 2.0,
        tag_boxes: bool = True,
        name: str | None = None,
    ) -> SceneItem:
        """Add oriented boxes as one line set: 12 edges per box plus a heading tick.

        The tick runs from the box centre to the centre of its front face (the face the yaw points
        to), so the heading is visible.

        Args:
            boxes: (N, 7) ``x, y, z, dx, dy, dz, yaw`` boxes (metres, radians, z at the centre), with
                optional labels/class names and scores.
            color: line colour (name, ``"#rrggbb"`` or RGB in [0, 1]).
            label: legend text, e.g. ``"ground truth"``; None adds no legend entry.
            line_width: line width in pixels.
            tag_boxes: put a text tag above each box: its class name (when known) and score (when
                present), e.g. ``"Car 0.87"``.
            name: geometry name; default ``boxes_<i>``.

        Returns:
            The new item (an ``open3d.geometry.LineSet`` with 13 N segments).
        """
        rgb = parse_color(color, "add_boxes: color")
        b = boxes.boxes.detach().cpu().double()
        corners = boxes.corners().detach().cpu().double().numpy()  # (N, 8, 3)
        centre = b[:, :3].numpy()
        heading = torch.stack([torch.cos(b[:, 6]), torch.sin(b[:, 6])], 1).numpy()
        front = centre.copy()
        front[:, :2] += heading * b[:, 3:4].numpy() / 2
        vertices = np.concatenate([corners, centre[:, None], front[:, None]], 1)  # (N, 10, 3)
        item = self._add_lines(vertices, _BOX_EDGES, rgb, label, line_width, self._name(name, "boxes"))
        if tag_boxes:
            names = boxes.names() if boxes.labels is not None else [""] * len(boxes)
            scores = [None] * len(boxes) if boxes.scores is None else boxes.scores.tolist()
            for i, (cls, score) in enumerate(zip(names, scores)):
                text = " ".join(t for t in (cls, None if score is None else f"{score:.2f}") if t)
                if text:
                    top = centre[i] + np.array([0.0, 0.0, float(b[i, 5]) / 2])
                    self.tags.append(Tag(top, text, rgb))
        return item

    def add_cameras(
        self,
        cameras: Cameras,
        color: str | tuple[float, float, float] = "orange",
        label: str | None = None,
        size: float | None = None,
        line_width: float = 1.5,
        name: str | None = None,
    ) -> SceneItem:
        """Add camera frustums as one line set: 4 rays from the centre, the image rectangle, an "up" tick.

        Args:
            cameras: C pinhole cameras (OpenCV frame: x right, y down, z forward; ``world_to_cam``).
            color: line colour (name, ``"#rrggbb"`` or RGB in [0, 1]).
            label: legend text, e.g. ``"cameras (50)"``; None adds no legend entry.
            size: frustum depth in scene units; None uses 10 % of the median distance between camera
                centres and their mean (so a rig of any scale draws legibly).
            line_width: line width in pixels.
            name: geometry name; default ``cameras_<i>``.

        Returns:
            The new item (an ``open3d.geometry.LineSet`` with 9 C segments).
        """
        rgb = parse_color(color, "add_cameras: color")
        cam_to_world = torch.linalg.inv(cameras.world_to_cam.detach().cpu().double()).numpy()  # (C, 4, 4)
        centres = cam_to_world[:, :3, 3]
        if size is None:
            spread = np.median(np.linalg.norm(centres - centres.mean(0), axis=1)) if len(centres) > 1 else 0.0
            size = 0.1 * spread if spread > 0 else 0.1
        K = cameras.K.detach().cpu().double().numpy()
        w, h = cameras.width, cameras.height
        pixels = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1], [w / 2, -0.15 * h, 1]], np.float64)
        rays = np.einsum("cij,pj->cpi", np.linalg.inv(K), pixels)  # (C, 5, 3) at depth 1, camera frame
        local = np.concatenate([np.zeros((len(K), 1, 3)), rays * size], 1)  # centre, 4 corners, up tick
        world = np.einsum("cij,cpj->cpi", cam_to_world[:, :3, :3], local) + centres[:, None]
        return self._add_lines(world, _FRUSTUM_EDGES, rgb, label, line_width, self._name(name, "cameras"))

    def _add_lines(self, vertices: np.ndarray, edges: np.ndarray, rgb: RGB, label: str | None, line_width: float,
                   name: str) -> SceneItem:
        """Add one line set drawing the same ``edges`` (E, 2) over each object's vertices (N, P, 3), metres."""
        lines = (edges[None] + vertices.shape[1] * np.arange(len(vertices))[:, None, None]).reshape(-1, 2)
        ls = o3d.geometry.LineSet(o3d.utility.Vector3dVector(vertices.reshape(-1, 3)),
                                  o3d.utility.Vector2iVector(lines.astype(np.int32)))
        ls.paint_uniform_color(rgb)
        item = SceneItem(name, ls, "lines", line_width=float(line_width))
        self.items.append(item)
        if label is not None:
            self.legend.append((label, rgb))
        return item

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds of every geometry.

        Returns:
            ``(lo, hi)``: (3,) float64 metres each.

        Raises:
            ValueError: the scene is empty.
        """
        boxes = [item.geometry.get_axis_aligned_bounding_box() for item in self.items
                 if _num_vertices(item) > 0]
        if not boxes:
            raise ValueError("Scene: nothing to draw (no geometry with points)")
        lo = np.min([bb.get_min_bound() for bb in boxes], 0)
        hi = np.max([bb.get_max_bound() for bb in boxes], 0)
        return lo, hi


def _num_vertices(item: SceneItem) -> int:
    return len(item.geometry.vertices if item.kind == "mesh" else item.geometry.points)
