"""Headless rendering: framing, meshes, points, boxes, overlay text, PNG writing, renderer reuse.

Images are small (320 x 240) to stay fast. "Object pixels" are the pixels that differ from the
background colour, which is known exactly (post-processing is off, so unlit colours are exact).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from geo3d.errors import InputError
from geo3d.types import Boxes3D, Mesh, PointCloud
from viewers import render
from viewers.colors import BACKGROUND, apply_colormap, colormap_table, parse_color
from viewers.render import draw_overlay, frame_camera, render_image, render_png
from viewers.scene import Scene

W, H = 320, 240
BG = np.round(np.array(BACKGROUND) * 255).astype(np.uint8)


@pytest.fixture(scope="module", autouse=True)
def _needs_renderer():
    if not render.headless_available():
        pytest.skip("Open3D headless rendering is not available here (needs mesa-vulkan-drivers or EGL)")


def object_mask(image: np.ndarray, tol: int = 6) -> np.ndarray:
    """(H, W) bool: pixels that differ from the background colour."""
    return np.abs(image.astype(np.int32) - BG).max(-1) > tol


def color_mask(image: np.ndarray, rgb: tuple[float, float, float], tol: int = 3) -> np.ndarray:
    """(H, W) bool: pixels of exactly this colour (within ``tol`` of 255)."""
    want = np.round(np.array(rgb) * 255).astype(np.int32)
    return np.abs(image.astype(np.int32) - want).max(-1) <= tol


def centre_of(mask: np.ndarray) -> tuple[float, float]:
    """Centre (x, y) of the bounding box of a mask, in pixels."""
    rows, cols = np.nonzero(mask)
    return (cols.min() + cols.max()) / 2, (rows.min() + rows.max()) / 2


def project(cam, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole projection written from the camera's definition: (N, 2) pixels (u right, v down), (N,) depth."""
    forward = (cam.target - cam.eye) / np.linalg.norm(cam.target - cam.eye)
    right = np.cross(forward, cam.up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rel = points - cam.eye
    depth = rel @ forward
    f = (H / 2) / math.tan(math.radians(cam.fov_deg) / 2)
    return np.stack([W / 2 + f * (rel @ right) / depth, H / 2 + f * (rel @ down) / depth], 1), depth


# --------------------------------------------------------------------------------------- colours

def test_parse_color_forms_and_errors():
    assert parse_color("green") == (0.0, 1.0, 0.0)
    assert parse_color("#ff8000") == (1.0, 128 / 255, 0.0)
    assert parse_color((0.1, 0.2, 0.3)) == (0.1, 0.2, 0.3)
    for bad in ("greenish", "#12345", (1.0, 2.0, 0.0), (0.1, 0.2)):
        with pytest.raises(ValueError, match="color"):
            parse_color(bad)


def test_colormap_ends_middle_and_percentile_clamp():
    table = colormap_table("turbo")
    assert table.shape == (256, 3)
    out = apply_colormap(np.array([0.0, 0.5, 1.0]), percentiles=(0, 100))
    np.testing.assert_allclose(out, table[[0, 128, 255]])  # round(0.5 * 255) = 128
    # One huge outlier must not flatten the others: with 1-99 percentiles it is clamped to the top.
    values = np.concatenate([np.linspace(0, 1, 999), [1000.0]])
    colors = apply_colormap(values)
    assert len({tuple(c) for c in colors[:999]}) > 100
    np.testing.assert_allclose(apply_colormap(np.full(5, 3.0)), np.tile(table[128], (5, 1)))
    # span: only part of the table is used.
    np.testing.assert_allclose(apply_colormap(np.array([0.0, 1.0]), span=(0.25, 0.75), percentiles=(0, 100)),
                               table[[round(0.25 * 255), round(0.75 * 255)]])


# ----------------------------------------------------------------------------------------- scene

def test_add_points_needs_what_color_by_names():
    cloud = PointCloud(torch.rand(10, 3))
    scene = Scene()
    with pytest.raises(ValueError, match="features"):
        scene.add_points(cloud, color_by="intensity")
    with pytest.raises(ValueError, match="colors"):
        scene.add_points(cloud, color_by="rgb")
    with pytest.raises(ValueError, match="color_by"):
        scene.add_points(cloud, color_by="loudness")
    item = scene.add_points(cloud, color_by="red")
    np.testing.assert_allclose(np.asarray(item.geometry.colors), np.tile([1.0, 0.0, 0.0], (10, 1)))


def test_add_boxes_edges_heading_tick_tags_and_legend():
    boxes = Boxes3D(torch.tensor([[1.0, 2.0, 0.5, 4.0, 2.0, 1.0, math.pi / 2]]), labels=torch.tensor([0]),
                    scores=torch.tensor([0.87]), class_names=("Car",))
    scene = Scene()
    item = scene.add_boxes(boxes, "red", "prediction")
    points = np.asarray(item.geometry.points)
    lines = np.asarray(item.geometry.lines)
    assert len(lines) == 13
    # The last segment is the heading tick: centre -> centre of the front face (yaw 90 deg: +y, dx / 2 = 2).
    np.testing.assert_allclose(points[lines[-1]], [[1.0, 2.0, 0.5], [1.0, 4.0, 0.5]], atol=1e-6)
    assert scene.legend == [("prediction", (1.0, 0.0, 0.0))]
    assert [t.text for t in scene.tags] == ["Car 0.87"]
    np.testing.assert_allclose(scene.tags[0].position, [1.0, 2.0, 1.0])  # top of the box


# --------------------------------------------------------------------------------------- framing

@pytest.mark.parametrize("view", ["auto", "bev", "front"])
def test_frame_camera_fits_the_box_tightly(view):
    """Independent pinhole projection of the scene's corners: all inside the image, some near its edge."""
    scene = Scene()
    lo, hi = np.array([3.0, -2.0, 0.0]), np.array([7.0, 1.0, 1.5])
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    scene.add_points(PointCloud(torch.tensor(corners, dtype=torch.float32)))
    cam = frame_camera(scene, view, W / H)
    uv, depth = project(cam, corners)
    assert (depth > cam.near).all() and (depth < cam.far).all()
    u, v = uv[:, 0] - W / 2, uv[:, 1] - H / 2
    assert np.abs(u).max() <= W / 2 and np.abs(v).max() <= H / 2
    assert max(np.abs(u).max() / (W / 2), np.abs(v).max() / (H / 2)) > 0.85


def test_frame_camera_lidar_looks_ahead_from_behind_and_above():
    scene = Scene()
    rng = np.random.default_rng(0)
    ring = rng.uniform(-60, 60, size=(5000, 3)).astype(np.float32)
    ring[:, 2] = rng.uniform(-2, 1, 5000)
    scene.add_points(PointCloud(ring), sensor=(0.0, 0.0, 0.0))
    cam = frame_camera(scene, "auto", W / H)
    assert cam.eye[2] > cam.target[2]
    assert cam.eye[0] < cam.target[0] and cam.target[0] > 10  # behind, looking ahead (+x)
    with pytest.raises(ValueError, match="view"):
        frame_camera(scene, "sideways")


# ------------------------------------------------------------------------------------- rendering

def sphere_scene(centre=(10.0, -5.0, 2.0)) -> Scene:
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    sphere.apply_translation(centre)
    scene = Scene()
    scene.add_mesh(Mesh.from_trimesh(sphere))
    return scene


def test_mesh_renders_lit_and_centred():
    image = render_image(sphere_scene(), W, H)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert (image[0, -1] == BG).all() and (image[-1, -1] == BG).all()
    mask = object_mask(image)
    assert mask.mean() > 0.05
    cx, cy = centre_of(mask)
    assert abs(cx - W / 2) < 0.08 * W and abs(cy - H / 2) < 0.08 * H
    rows, _ = np.nonzero(mask)
    assert rows.max() - rows.min() > 0.5 * H  # framed to fill the view, not a speck
    brightness = image[mask].astype(np.float32).mean(-1)
    assert brightness.max() - brightness.min() > 40  # shaded by the light, not a flat silhouette


@pytest.mark.parametrize("back", [0.0, 2.0])
def test_camera_from_pose_renders_what_the_posed_camera_sees(back):
    """An OpenCV camera at the origin looking along world +x (image down = world -z): a sphere lands where the
    pinhole model puts it, and the mirrored pose sees nothing."""
    pose = np.eye(4)
    pose[:3, :3] = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], float).T  # columns: right, down, forward
    centre = np.array([5.0, -1.0, 0.5])
    cam = render.camera_from_pose(pose, 50.0, back=back)
    image = render_image(sphere_scene(tuple(centre)), W, H, camera=cam)
    f = (H / 2) / math.tan(math.radians(50.0) / 2)
    x_c, y_c, z_c = 1.0, -0.5, 5.0 + back  # the centre in camera coordinates
    cx, cy = centre_of(object_mask(image))
    assert abs(cx - (W / 2 + f * x_c / z_c)) < 3 and abs(cy - (H / 2 + f * y_c / z_c)) < 3
    away = pose.copy()
    away[:3, 0], away[:3, 2] = -pose[:3, 0], -pose[:3, 2]
    assert not object_mask(render_image(sphere_scene(tuple(centre)), W, H, camera=render.camera_from_pose(
        away, 50.0))).any()
    with pytest.raises(ValueError, match="4, 4"):
        render.camera_from_pose(np.eye(3), 50.0)


def test_point_cloud_renders_centred():
    rng = np.random.default_rng(1)
    points = rng.uniform([100.0, 0.0, 0.0], [104.0, 3.0, 1.0], size=(3000, 3)).astype(np.float32)
    scene = Scene()
    scene.add_points(PointCloud(points), color_by="height")
    image = render_image(scene, W, H, view="bev")
    mask = object_mask(image)
    assert mask.mean() > 0.01
    cx, cy = centre_of(mask)
    assert abs(cx - W / 2) < 0.08 * W and abs(cy - H / 2) < 0.08 * H
    # Colours come from the colormap: every object pixel is close to some table entry.
    table = np.round(colormap_table("turbo") * 255)
    pixels = image[mask].astype(np.float64)[::7]
    nearest = np.abs(pixels[:, None, :] - table[None]).max(-1).min(1)
    assert np.median(nearest) <= 3


@pytest.mark.parametrize("yaw, tick_up", [(0.0, True), (math.pi, False)])
def test_box_draws_in_its_colour_with_heading_tick(yaw, tick_up):
    """Top-down, +x is up in the image: the tick runs from the centre towards the front face."""
    scene = Scene()
    scene.add_boxes(Boxes3D(torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, yaw]])), "red", tag_boxes=False)
    image = render_image(scene, W, H, view="bev")
    red = color_mask(image, (1.0, 0.0, 0.0))
    assert red.sum() > 200
    rows, cols = np.nonzero(red)
    top, bottom, mid_col = rows.min(), rows.max(), W // 2
    mid_row, skip = (top + bottom) // 2, (bottom - top) // 6  # skip: the end edges (top and bottom face)
    column = red[:, mid_col - 2 : mid_col + 3].any(1)
    upper = column[top + skip : mid_row - 2].mean()  # between the end edges and the centre
    lower = column[mid_row + 3 : bottom - skip].mean()
    if not tick_up:
        upper, lower = lower, upper
    assert upper > 0.9 and lower == 0.0


def test_overlay_draws_title_legend_and_tags():
    blank = np.full((H, W, 3), BG, np.uint8)
    legend = [("ground truth", (0.0, 1.0, 0.0)), ("prediction", (1.0, 0.0, 0.0))]
    out = draw_overlay(blank, "frame 000001", legend, [((200.0, 150.0), "Car 0.87", (1.0, 0.5, 0.0))])
    changed = object_mask(out)
    assert changed[: H // 6, : W // 2].sum() > 50  # title text, top left
    assert color_mask(out[H // 2 :, : W // 4], (0.0, 1.0, 0.0)).sum() > 20  # legend squares
    assert color_mask(out[H // 2 :, : W // 4], (1.0, 0.0, 0.0)).sum() > 20
    text = color_mask(out, (0.95, 0.95, 0.95), tol=20)
    assert text[H // 2 :, W // 12 : W // 2].sum() > 50  # legend labels right of the squares
    tag = out[120:160, 195:290].astype(np.int32)  # small antialiased text: orange hue, not exact pixels
    r, g, b = tag[..., 0], tag[..., 1], tag[..., 2]
    assert ((r > 60) & (np.abs(r - 2 * g) < 20) & (b < 15)).sum() > 20
    assert not changed[H // 6 : H // 2, W // 2 :].any()  # nothing drawn elsewhere
    assert not object_mask(draw_overlay(blank, None, [])).any()


def test_render_png_writes_atomically_and_checks_suffix(tmp_path):
    out = render_png(sphere_scene(), tmp_path / "sub" / "sphere.png", W, H, title="sphere")
    assert out == tmp_path / "sub" / "sphere.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (W, H)
    assert sorted(p.name for p in out.parent.iterdir()) == ["sphere.png"]  # no temp file left
    with pytest.raises(InputError, match="png"):
        render_png(sphere_scene(), tmp_path / "sphere.jpg", W, H)
    with pytest.raises(ValueError, match="width"):
        render_image(sphere_scene(), 0, H)


def test_renderer_reused_and_recreated_on_resize():
    render_image(sphere_scene(), W, H)
    first = id(render._renderer)  # an id, not a reference: a second live renderer aborts Filament on exit
    render_image(sphere_scene(), W, H)
    assert id(render._renderer) == first
    small = render_image(sphere_scene(), 160, 120)
    assert small.shape == (120, 160, 3) and render._renderer_size == (160, 120)
    assert object_mask(small).mean() > 0.05


def test_empty_scene_is_an_error():
    with pytest.raises(ValueError, match="nothing to draw"):
        render_image(Scene(), W, H)


# ----------------------------------------------------------------------------------- real KITTI

def test_real_kitti_frame_with_label_boxes(shared_data):
    from geo3d.io.kitti import objects_to_boxes_lidar, read_calib, read_label, read_velodyne

    root = shared_data / "kitti" / "training"
    scan = read_velodyne(root / "velodyne" / "000001.bin")
    objects = read_label(root / "label_2" / "000001.txt")
    boxes = objects_to_boxes_lidar(objects, read_calib(root / "calib" / "000001.txt"), ("Car", "Truck", "Cyclist"))
    assert len(boxes) == 3
    scene = Scene()
    scene.add_points(PointCloud(scan[:, :3], features=scan[:, 3:4]), color_by="intensity", sensor=(0, 0, 0))
    scene.add_boxes(boxes, "green", "ground truth")
    for view in ("auto", "bev"):
        image = render_image(scene, W, H, view=view)
        assert object_mask(image).mean() > 0.02
        green = color_mask(image, (0.0, 1.0, 0.0))
        assert green.sum() > 100, view
        # Every box is drawn where it belongs: green pixels within a few pixels of its projected centre.
        uv, _ = project(frame_camera(scene, view, W / H), boxes.boxes[:, :3].numpy().astype(np.float64))
        ys, xs = np.nonzero(green)
        for u, v in uv:
            assert 0 < u < W and 0 < v < H, (view, u, v)
            assert np.hypot(xs - u, ys - v).min() < 12, (view, u, v)
