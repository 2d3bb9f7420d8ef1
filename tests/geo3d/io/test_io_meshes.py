"""Meshes and point clouds: PLY / OBJ / PCD (+ OFF, STL, GLB meshes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from geo3d.errors import InputError
from geo3d.io.meshes import read_mesh, read_point_cloud, write_mesh, write_point_cloud
from geo3d.types import Mesh, PointCloud

COLOR_TOL = 0.5 / 255 + 1e-6  # colours are stored as 8-bit


def _sphere(colors: bool = True) -> Mesh:
    s = trimesh.creation.icosphere(subdivisions=1)
    rgb = torch.rand(len(s.vertices), 3, generator=torch.Generator().manual_seed(0)) if colors else None
    return Mesh(torch.tensor(s.vertices, dtype=torch.float32), torch.tensor(s.faces), rgb)


def _cloud(n: int = 40, features: int = 1) -> PointCloud:
    g = torch.Generator().manual_seed(1)
    return PointCloud(
        torch.randn(n, 3, generator=g) * 10,
        torch.rand(n, features, generator=g) if features else None,
        torch.rand(n, 3, generator=g),
        torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1),
    )


def test_bunny_mesh_and_points(shared_data):
    path = shared_data / "surface" / "bunny.ply"
    # Independent reference: the ASCII vertex lines "x y z confidence intensity" after the 12 header lines.
    ref = np.loadtxt(path, skiprows=12, max_rows=8171, dtype=np.float32)
    mesh = read_mesh(path)
    assert mesh.num_vertices == 8171 and mesh.num_faces == 16301
    assert torch.equal(mesh.vertices, torch.from_numpy(ref[:, :3]))
    assert int(mesh.faces.min()) == 0 and int(mesh.faces.max()) == 8170
    cloud = read_point_cloud(path)
    assert len(cloud) == 8171
    assert torch.equal(cloud.points, torch.from_numpy(ref[:, :3]))
    # The file has `confidence` and `intensity` scalars: only intensity becomes a feature by default.
    assert torch.equal(cloud.features, torch.from_numpy(ref[:, 4:5]))
    assert cloud.colors is None and cloud.normals is None
    both = read_point_cloud(path, feature_names=["confidence", "intensity"]).features
    assert torch.equal(both, torch.from_numpy(ref[:, 3:5]))


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".glb"])
def test_mesh_round_trip_with_colours(tmp_path, suffix):
    mesh = _sphere()
    write_mesh(tmp_path / f"m{suffix}", mesh)
    back = read_mesh(tmp_path / f"m{suffix}")
    assert torch.equal(back.vertices, mesh.vertices)
    assert torch.equal(back.faces, mesh.faces)
    assert (back.vertex_colors - mesh.vertex_colors).abs().max() <= COLOR_TOL


def test_off_and_stl_meshes(tmp_path):
    mesh = _sphere(colors=False)
    write_mesh(tmp_path / "m.off", mesh)
    back = read_mesh(tmp_path / "m.off")
    assert torch.equal(back.vertices, mesh.vertices) and torch.equal(back.faces, mesh.faces)
    write_mesh(tmp_path / "m.stl", mesh)
    soup = read_mesh(tmp_path / "m.stl")  # STL keeps three unshared vertices per face
    assert soup.num_faces == mesh.num_faces and soup.num_vertices == 3 * mesh.num_faces
    assert torch.equal(soup.vertices[soup.faces], mesh.vertices[mesh.faces])


@pytest.mark.parametrize("suffix", [".ply", ".pcd"])
def test_point_cloud_round_trip(tmp_path, suffix):
    cloud = _cloud()
    write_point_cloud(tmp_path / f"c{suffix}", cloud)
    back = read_point_cloud(tmp_path / f"c{suffix}")
    assert torch.equal(back.points, cloud.points)
    assert torch.equal(back.normals, cloud.normals)
    assert torch.equal(back.features, cloud.features)
    assert (back.colors - cloud.colors).abs().max() <= COLOR_TOL


def test_several_feature_columns_and_reflectance(tmp_path):
    cloud = _cloud(features=3)
    write_point_cloud(tmp_path / "c.ply", cloud)
    assert torch.equal(read_point_cloud(tmp_path / "c.ply").features, cloud.features)
    write_point_cloud(tmp_path / "r.pcd", _cloud(features=0))
    plain = read_point_cloud(tmp_path / "r.pcd")
    assert plain.features is None
    lidar = PointCloud(cloud.points, cloud.features[:, :1])
    write_point_cloud(tmp_path / "l.ply", lidar, feature_names=["reflectance"])
    back = read_point_cloud(tmp_path / "l.ply")
    assert torch.equal(back.features, lidar.features) and back.colors is None and back.normals is None


def test_obj_point_cloud_keeps_positions_and_colours(tmp_path):
    cloud = _cloud()
    with pytest.warns(UserWarning, match="dropping normals and features"):
        write_point_cloud(tmp_path / "c.obj", cloud)
    back = read_point_cloud(tmp_path / "c.obj")
    assert torch.allclose(back.points, cloud.points, atol=1e-6)
    assert (back.colors - cloud.colors).abs().max() <= COLOR_TOL
    assert back.normals is None and back.features is None


def test_mesh_file_read_as_point_cloud_gives_vertices(tmp_path):
    mesh = _sphere()
    write_mesh(tmp_path / "m.ply", mesh)
    cloud = read_point_cloud(tmp_path / "m.ply")
    assert torch.equal(cloud.points, mesh.vertices)
    assert (cloud.colors - mesh.vertex_colors).abs().max() <= COLOR_TOL


def test_bad_files_raise_input_error_naming_the_file(tmp_path):
    empty = tmp_path / "empty.ply"
    empty.write_bytes(b"")
    for reader in (read_mesh, read_point_cloud):
        with pytest.raises(InputError, match="empty.ply: file is empty"):
            reader(empty)
        with pytest.raises(InputError, match="missing.ply: file not found"):
            reader(tmp_path / "missing.ply")
    # A binary PLY cut short: both readers must notice rather than return garbage.
    write_mesh(tmp_path / "full.ply", _sphere())
    data = (tmp_path / "full.ply").read_bytes()
    (tmp_path / "cut.ply").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.ply"):
        read_mesh(tmp_path / "cut.ply")
    write_point_cloud(tmp_path / "full_cloud.ply", _cloud())
    data = (tmp_path / "full_cloud.ply").read_bytes()
    (tmp_path / "cut_cloud.ply").write_bytes(data[: len(data) - 100])
    with pytest.raises(InputError, match="cut_cloud.ply: corrupt"):
        read_point_cloud(tmp_path / "cut_cloud.ply")
    (tmp_path / "junk.pcd").write_text("hello world\n")
    with pytest.raises(InputError, match="junk.pcd"):
        read_point_cloud(tmp_path / "junk.pcd")
    header_only = tmp_path / "none.ply"
    header_only.write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                           "property float z\nend_header\n")
    with pytest.raises(InputError, match="none.ply: no points"):
        read_point_cloud(header_only)


def test_point_cloud_file_is_not_a_mesh_and_suffixes_are_checked(tmp_path):
    write_point_cloud(tmp_path / "c.obj", PointCloud(torch.rand(5, 3)))
    with pytest.raises(InputError, match="c.obj: file has no faces"):
        read_mesh(tmp_path / "c.obj")
    (tmp_path / "m.xyz").write_text("0 0 0\n")
    with pytest.raises(InputError, match="unsupported mesh format '.xyz'"):
        read_mesh(tmp_path / "m.xyz")
    with pytest.raises(InputError, match="unsupported point cloud format"):
        write_point_cloud(tmp_path / "c.stl", PointCloud(torch.rand(5, 3)))
    assert not np.any([p.name.startswith(".") for p in tmp_path.iterdir()])  # no temp files left
