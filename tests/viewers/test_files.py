"""view_files / load_scene: file types, KITTI boxes, errors, headless fallback, and the window path."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

import viewers.files as files
import viewers.window as window
from geo3d.errors import InputError
from geo3d.io import read_transforms, write_mesh, write_point_cloud
from geo3d.io.kitti import read_label, read_velodyne, write_label
from geo3d.types import Boxes3D, Mesh, PointCloud
from viewers import render
from viewers.colors import apply_colormap
from viewers.files import load_scene, view_files
from viewers.scene import Scene


@pytest.fixture
def mesh_files(tmp_path):
    """The same icosphere as a PLY and an OBJ mesh, and a coloured cloud as PLY, OBJ and PCD."""
    sphere = Mesh.from_trimesh(trimesh.creation.icosphere(subdivisions=2))
    rng = np.random.default_rng(0)
    cloud = PointCloud(rng.normal(size=(500, 3)).astype(np.float32),
                       colors=rng.uniform(size=(500, 3)).astype(np.float32))
    out = {}
    for suffix in ("ply", "obj"):
        write_mesh(tmp_path / f"mesh.{suffix}", sphere)
        out[f"mesh.{suffix}"] = tmp_path / f"mesh.{suffix}"
    for suffix in ("ply", "obj", "pcd"):
        write_point_cloud(tmp_path / f"cloud.{suffix}", cloud)
        out[f"cloud.{suffix}"] = tmp_path / f"cloud.{suffix}"
    return out, sphere, cloud


def test_mesh_or_cloud_decided_by_faces(mesh_files):
    paths, sphere, cloud = mesh_files
    for name, path in paths.items():
        scene, title = load_scene([path])
        (item,) = scene.items
        assert item.kind == ("mesh" if name.startswith("mesh") else "points"), name
        if item.kind == "mesh":
            assert len(item.geometry.triangles) == sphere.num_faces
            assert title == f"{name}: {sphere.num_faces:,} faces"
        else:
            assert len(item.geometry.points) == len(cloud)
            # The cloud has colours, so it is drawn in them (8-bit in the file).
            np.testing.assert_allclose(np.asarray(item.geometry.colors), cloud.colors.numpy(), atol=1 / 255 + 1e-6)


def test_xyz_and_intensity_clouds(tmp_path):
    rng = np.random.default_rng(2)
    points = rng.uniform(-5, 5, size=(200, 3))
    np.savetxt(tmp_path / "pts.xyz", points)
    scene, _ = load_scene(tmp_path / "pts.xyz")
    np.testing.assert_allclose(np.asarray(scene.items[0].geometry.points), points, atol=1e-5)
    # Height colouring: the highest point gets the colour at the top of the used span.
    np.testing.assert_allclose(np.asarray(scene.items[0].geometry.colors),
                               apply_colormap(points[:, 2], span=(0.1, 0.92)), atol=1e-9)
    intensity = rng.uniform(size=(200, 1)).astype(np.float32)
    write_point_cloud(tmp_path / "lidar.pcd", PointCloud(points.astype(np.float32), features=intensity))
    scene, _ = load_scene(tmp_path / "lidar.pcd")
    np.testing.assert_allclose(np.asarray(scene.items[0].geometry.colors),
                               apply_colormap(intensity[:, 0], span=(0.1, 0.92)), atol=1e-9)


def test_bad_inputs_name_the_file(tmp_path, mesh_files):
    paths, _, _ = mesh_files
    with pytest.raises(InputError, match="missing.ply: file not found"):
        load_scene([tmp_path / "missing.ply"])
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=r"notes.txt: unknown file type '.txt'"):
        load_scene([tmp_path / "notes.txt"])
    (tmp_path / "label.txt").write_text("Car 0 0 0 0 0 10 10 1.5 1.6 3.9 1 1.6 10 0\n")
    with pytest.raises(InputError, match="label.txt: .*calib"):
        load_scene([paths["cloud.ply"]], boxes=tmp_path / "label.txt")
    with pytest.raises(InputError, match="no files"):
        load_scene([])
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(InputError, match="empty.bin: the scan holds no points"):
        load_scene([tmp_path / "empty.bin"])


def kitti_paths(shared_data):
    root = shared_data / "kitti" / "training"
    return root / "velodyne" / "000001.bin", root / "label_2" / "000001.txt", root / "calib" / "000001.txt"


def test_kitti_scene_with_labels_and_predictions(shared_data, tmp_path):
    velodyne, label, calib = kitti_paths(shared_data)
    objects = [o for o in read_label(label) if o.type != "DontCare"]
    for obj, score in zip(objects, (0.9, 0.55, 0.31)):
        obj.score = score
    write_label(tmp_path / "pred.txt", objects)
    scene, title = load_scene([velodyne], boxes=label, calib=calib, pred=tmp_path / "pred.txt")
    n_points = len(read_velodyne(velodyne))
    assert title == f"000001.bin: {n_points:,} points, 3 boxes, 3 predictions"
    assert [label for label, _ in scene.legend] == ["ground truth (3)", "prediction (3)"]
    assert [t.text for t in scene.tags] == ["Truck", "Car", "Cyclist", "Truck 0.90", "Car 0.55", "Cyclist 0.31"]
    np.testing.assert_array_equal(scene.sensor, [0.0, 0.0, 0.0])
    lines = [item for item in scene.items if item.kind == "lines"]
    assert [len(item.geometry.lines) for item in lines] == [39, 39]  # 3 boxes x (12 edges + heading tick)


def test_kitti_png_shows_both_box_sets(shared_data, tmp_path):
    if not render.headless_available():
        pytest.skip("Open3D headless rendering is not available here")
    velodyne, label, calib = kitti_paths(shared_data)
    objects = [o for o in read_label(label) if o.type != "DontCare"]
    for obj in objects:  # predictions shifted 1.5 m sideways so both colours show
        obj.location = (obj.location[0] + 1.5, *obj.location[1:])
        obj.score = 0.8
    write_label(tmp_path / "pred.txt", objects)
    out = view_files([velodyne], boxes=label, calib=calib, pred=tmp_path / "pred.txt", out=tmp_path / "f.png",
                     width=320, height=240, view="bev")
    assert out == tmp_path / "f.png"
    image = np.asarray(Image.open(out).convert("RGB")).astype(np.int32)
    assert (np.abs(image - [0, 255, 0]).max(-1) <= 3).sum() > 50
    assert (np.abs(image - [255, 0, 0]).max(-1) <= 3).sum() > 50


def test_no_display_renders_next_to_cwd(tmp_path, monkeypatch, capsys, mesh_files):
    if not render.headless_available():
        pytest.skip("Open3D headless rendering is not available here")
    paths, _, _ = mesh_files
    monkeypatch.setattr(files, "has_display", lambda: False)
    monkeypatch.chdir(tmp_path)
    out = view_files([paths["mesh.ply"]], width=160, height=120)
    assert out == tmp_path / "mesh_view.png" and out.is_file()
    assert str(out) in capsys.readouterr().out


def test_display_opens_a_window(monkeypatch, mesh_files):
    paths, _, _ = mesh_files
    calls = []
    monkeypatch.setattr(files, "has_display", lambda: True)
    monkeypatch.setattr(files, "show", lambda *args: calls.append(args))
    assert view_files([paths["mesh.ply"]], width=640, height=480, view="front") is None
    (scene, title, width, height, view), = calls
    assert isinstance(scene, Scene) and title == "mesh.ply: 320 faces" and (width, height, view) == (640, 480, "front")


def test_populate_passes_geometry_materials_camera_and_coloured_labels(monkeypatch):
    """The window's set-up, on stand-ins for Open3D's SceneWidget (the real one is in test_window.py)."""
    scene = Scene()
    scene.add_points(PointCloud(torch.rand(50, 3)), point_size=4)
    scene.add_mesh(Mesh.from_trimesh(trimesh.creation.box()))
    scene.add_boxes(Boxes3D(torch.tensor([[0.0, 0, 0, 1, 1, 1, 0]]), torch.tensor([0]), class_names=("Car",)),
                    "green", "ground truth")
    seen = {"geoms": [], "labels": []}

    class FakeCamera:
        def set_projection(self, fov, aspect, near, far, fov_type):
            seen["projection"] = (fov, aspect, near, far)

    class FakeO3DScene:
        bounding_box = "bbox"
        camera = FakeCamera()

        def set_background(self, rgba):
            seen["background"] = rgba

        def show_skybox(self, show):
            seen["skybox"] = show

        def set_lighting(self, profile, sun):
            seen["sun"] = sun

        def add_geometry(self, name, geometry, material):
            seen["geoms"].append((name, material))

    class FakeWidget:
        scene = FakeO3DScene()

        def setup_camera(self, fov, bounds, centre):
            seen["setup"] = (fov, bounds, centre)

        def look_at(self, target, eye, up):
            seen["look_at"] = (target, eye, up)

        def add_3d_label(self, position, text):
            seen["labels"].append(types.SimpleNamespace(position=position, text=text, color=None))
            return seen["labels"][-1]

    camera = render.frame_camera(scene, "auto", 1280 / 720)
    labels = window.populate(FakeWidget(), scene, camera, 1280 / 720)
    shaders = [(name, mat.shader) for name, mat in seen["geoms"]]
    assert shaders == [("points_0", "defaultUnlit"), ("mesh_0", "defaultLit"), ("boxes_0", "unlitLine")]
    assert seen["geoms"][0][1].point_size == 4
    assert seen["skybox"] is False
    np.testing.assert_allclose(seen["look_at"][1], camera.eye, rtol=1e-6)
    np.testing.assert_allclose(seen["setup"][2], camera.target, rtol=1e-6)
    assert seen["projection"] == pytest.approx((camera.fov_deg, 1280 / 720, camera.near, camera.far))
    (label,) = labels
    assert label is seen["labels"][0] and label.text == "Car"
    np.testing.assert_allclose(label.position, [0.0, 0.0, 0.5])
    assert (label.color.red, label.color.green, label.color.blue) == (0.0, 1.0, 0.0)
    monkeypatch.setattr(window, "has_display", lambda: False)
    with pytest.raises(RuntimeError, match="no display"):
        window.show(scene)


def test_has_display(monkeypatch, tmp_path):
    monkeypatch.setattr(window.sys, "platform", "linux")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    assert not window.has_display()
    monkeypatch.setenv("DISPLAY", ":987")  # a local X server whose socket does not exist
    assert not window.has_display()
    monkeypatch.setenv("DISPLAY", "remote-host:10.0")
    assert window.has_display()
    monkeypatch.delenv("DISPLAY")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert window.has_display()


def test_transforms_json_draws_one_frustum_per_usable_frame(shared_data, tmp_path):
    fox = shared_data / "nvs" / "fox" / "transforms.json"
    if not fox.is_file():
        pytest.skip(f"{fox} is absent")
    scene, title = load_scene([fox])
    (item,) = scene.items
    assert item.kind == "lines" and title == "transforms.json: 50 cameras"
    points = np.asarray(item.geometry.points).reshape(50, 6, 3)
    # Each frustum apex is a camera centre: -R^T t of the file's world_to_cam.
    w2c = read_transforms(fox).cameras.world_to_cam.double()
    centres = -(w2c[:, :3, :3].transpose(1, 2) @ w2c[:, :3, 3:])[..., 0]
    np.testing.assert_allclose(points[:, 0], centres.numpy(), atol=1e-5)
    # The frustums look forward (+z of the camera): corners are in front of the apex.
    forward = w2c[:, 2, :3].numpy()
    depth = np.einsum("cpi,ci->cp", points[:, 1:5] - points[:, :1], forward)
    assert (depth > 0).all()
    out = view_files([fox], out=tmp_path / "fox.png", width=320, height=240)
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.std() > 5
