"""3DGS PLY files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geo3d.errors import InputError
from geo3d.io.gaussian_ply import read_gaussian_ply, write_gaussian_ply
from geo3d.types import Gaussians


def _gaussians(n: int, degree: int, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        torch.randn(n, 3, generator=g), torch.randn(n, 4, generator=g), torch.randn(n, 3, generator=g) - 3,
        torch.randn(n, generator=g), torch.randn(n, (degree + 1) ** 2, 3, generator=g),
    )


def _split_header(data: bytes) -> tuple[list[str], bytes]:
    head, body = data.split(b"end_header\n", 1)
    return head.decode("ascii").splitlines(), body


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_is_exact(tmp_path, degree):
    gaussians = _gaussians(23, degree)
    write_gaussian_ply(tmp_path / "g.ply", gaussians)
    back = read_gaussian_ply(tmp_path / "g.ply")
    assert back.sh_degree == degree
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        assert torch.equal(getattr(back, name), getattr(gaussians, name)), name


def test_layout_matches_the_original_3dgs_writer(tmp_path):
    n, k = 5, 16
    gaussians = _gaussians(n, 3)
    write_gaussian_ply(tmp_path / "g.ply", gaussians)
    lines, body = _split_header((tmp_path / "g.ply").read_bytes())
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * (k - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert lines[:3] == ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    assert lines[3:] == [f"property float {name}" for name in names]
    table = np.frombuffer(body, dtype="<f4").reshape(n, len(names))
    column = {name: table[:, i] for i, name in enumerate(names)}
    sh = gaussians.sh.numpy()
    # f_rest is channel-major: the 15 red coefficients, then the 15 green, then the 15 blue.
    for c in range(3):
        for j in range(k - 1):
            np.testing.assert_array_equal(column[f"f_rest_{c * (k - 1) + j}"], sh[:, 1 + j, c])
        np.testing.assert_array_equal(column[f"f_dc_{c}"], sh[:, 0, c])
    np.testing.assert_array_equal(column["rot_0"], gaussians.quats[:, 0].numpy())  # w first
    np.testing.assert_array_equal(column["opacity"], gaussians.opacity_logits.numpy())  # logit, not sigmoid
    np.testing.assert_array_equal(column["scale_2"], gaussians.log_scales[:, 2].numpy())  # log scale
    np.testing.assert_array_equal(column["nx"], np.zeros(n, np.float32))


def test_open3d_reads_and_writes_the_same_gaussians(tmp_path):
    """Open3D's own 3DGS PLY support (tensor I/O) is an independent reader and writer."""
    o3d = pytest.importorskip("open3d")
    gaussians = _gaussians(7, 3)
    write_gaussian_ply(tmp_path / "ours.ply", gaussians)
    cloud = o3d.t.io.read_point_cloud(str(tmp_path / "ours.ply"))
    attr = {key: torch.from_numpy(cloud.point[key].numpy()) for key in cloud.point}
    assert torch.equal(attr["positions"], gaussians.means)
    assert torch.equal(attr["f_dc"], gaussians.sh[:, 0])
    assert torch.equal(attr["f_rest"], gaussians.sh[:, 1:])  # Open3D: (N, K - 1, 3)
    assert torch.equal(attr["rot"], gaussians.quats)
    assert torch.equal(attr["opacity"][:, 0], gaussians.opacity_logits)
    assert torch.allclose(attr["scale"], gaussians.log_scales.exp())  # Open3D keeps scales activated
    assert o3d.t.io.write_point_cloud(str(tmp_path / "open3d.ply"), cloud)
    back = read_gaussian_ply(tmp_path / "open3d.ply")
    for name in ("means", "quats", "opacity_logits", "sh"):
        assert torch.equal(getattr(back, name), getattr(gaussians, name)), name
    assert torch.allclose(back.log_scales, gaussians.log_scales, atol=1e-6)


def test_reads_other_property_orders_types_and_extras(tmp_path):
    # Same content as a degree-1 3DGS file, but doubles, shuffled order, an extra property and a face element.
    rng = np.random.default_rng(0)
    names = ["rot_3", "rot_2", "rot_1", "rot_0", "opacity", "x", "y", "z", "scale_0", "scale_1", "scale_2",
             "f_dc_0", "f_dc_1", "f_dc_2", "extra"] + [f"f_rest_{i}" for i in range(9)]
    table = np.zeros(4, dtype=[(name, "<f8") for name in names])
    for name in names:
        table[name] = rng.normal(size=4)
    header = ["ply", "format binary_little_endian 1.0", "comment made by hand", "element vertex 4"]
    header += [f"property double {name}" for name in names]
    header += ["element face 0", "property list uchar int vertex_indices", "end_header"]
    (tmp_path / "g.ply").write_bytes(("\n".join(header) + "\n").encode() + table.tobytes())
    g = read_gaussian_ply(tmp_path / "g.ply")
    assert g.sh.shape == (4, 4, 3)
    quats = np.stack([table[f"rot_{i}"] for i in range(4)], 1).astype(np.float32)
    np.testing.assert_array_equal(g.quats.numpy(), quats)
    np.testing.assert_array_equal(g.sh[:, 2, 1].numpy(), table["f_rest_4"].astype(np.float32))  # green, 2nd rest
    np.testing.assert_array_equal(g.opacity_logits.numpy(), table["opacity"].astype(np.float32))


def test_bad_files_raise_input_error(tmp_path):
    write_gaussian_ply(tmp_path / "ok.ply", _gaussians(3, 1))
    lines, body = _split_header((tmp_path / "ok.ply").read_bytes())

    def variant(name: str, header: list[str], payload: bytes) -> str:
        path = tmp_path / name
        path.write_bytes(("\n".join(header) + "\nend_header\n").encode() + payload)
        return str(path)

    missing = variant("missing.ply", [ln.replace("rot_3", "other") for ln in lines], body)
    with pytest.raises(InputError, match=r"missing\.ply: not a 3DGS PLY: missing vertex properties rot_3"):
        read_gaussian_ply(missing)
    with pytest.raises(InputError, match=r"short\.ply: truncated: 3 vertices need"):
        read_gaussian_ply(variant("short.ply", lines, body[:-4]))
    ascii_header = [ln.replace("binary_little_endian", "ascii") for ln in lines]
    with pytest.raises(InputError, match="expected a binary PLY"):
        read_gaussian_ply(variant("ascii.ply", ascii_header, b""))
    odd_rest = [ln for ln in lines if ln != "property float f_rest_8"]
    with pytest.raises(InputError, match="8 f_rest_"):
        read_gaussian_ply(variant("rest.ply", odd_rest, body))
    (tmp_path / "text.ply").write_text("hello")
    with pytest.raises(InputError, match="not a PLY file"):
        read_gaussian_ply(tmp_path / "text.ply")
    with pytest.raises(InputError, match="file not found"):
        read_gaussian_ply(tmp_path / "absent.ply")


def test_ascii_body_under_a_binary_header_and_no_gaussians_are_errors(tmp_path, capsys):
    """A binary header over an ASCII body was read as garbage (centres about 1e-10) and an empty file failed with
    numpy's "cannot reshape" and no file name: both are one-line errors naming the file now. Trailing whitespace
    after the vertices stays fine."""
    from geo3d.cli import main

    g = _gaussians(3, 0)
    write_gaussian_ply(tmp_path / "ok.ply", g)
    lines, body = _split_header((tmp_path / "ok.ply").read_bytes())
    values = np.frombuffer(body, dtype="<f4").reshape(3, -1)
    text_body = "".join(" ".join(f"{v:.6f}" for v in row) + "\n" for row in values).encode()
    assert len(text_body) > len(body)  # what made the old reader accept it
    (tmp_path / "text_body.ply").write_bytes(("\n".join(lines) + "\nend_header\n").encode() + text_body)
    with pytest.raises(InputError, match=r"text_body\.ply: \d+ bytes more than the 3 binary vertices the header "
                                         r"declares \(the body is ASCII text"):
        read_gaussian_ply(tmp_path / "text_body.ply")
    (tmp_path / "trailing.ply").write_bytes(("\n".join(lines) + "\nend_header\n").encode() + body + b"\n")
    assert torch.equal(read_gaussian_ply(tmp_path / "trailing.ply").means, g.means)

    empty = [ln.replace("element vertex 3", "element vertex 0") for ln in lines]
    (tmp_path / "empty.ply").write_bytes(("\n".join(empty) + "\nend_header\n").encode())
    with pytest.raises(InputError, match=r"empty\.ply: holds no Gaussians \(element vertex 0\)"):
        read_gaussian_ply(tmp_path / "empty.ply")
    for args in (("view", tmp_path / "empty.ply", "--out", tmp_path / "v.png"),
                 ("render", tmp_path / "text_body.ply", "--turntable", "2", "--out", tmp_path / "r")):
        code = main([str(a) for a in args])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and str(args[1]) in err, err
