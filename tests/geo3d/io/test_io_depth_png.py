"""16-bit depth PNGs (KITTI depth completion encoding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from geo3d.errors import InputError
from geo3d.io.depth_png import read_depth_png, write_depth_png
from geo3d.types import DepthMap


def test_kitti_depth_completion_pngs(shared_data):
    for name in ("gt_depth.png", "sparse_depth.png"):
        path = shared_data / "depth" / "kitti_dc" / name
        raw = np.asarray(Image.open(path)).astype(np.int64)  # independent decode of the codes
        depth = read_depth_png(path)
        assert depth.depth.shape == (352, 1216)
        assert depth.depth.dtype == torch.float32
        assert depth.K is None
        assert torch.equal(depth.valid, torch.from_numpy(raw > 0))
        np.testing.assert_array_equal(depth.depth.numpy(), (raw / 256.0).astype(np.float32))
        assert 0 < depth.valid.float().mean() < 0.2  # KITTI DC depth is sparse
        assert 1.0 < float(depth.depth[depth.valid].median()) < 80.0  # metres, a street scene


def test_round_trip_is_exact_on_the_code_grid(tmp_path):
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 65536, (17, 23), generator=g)
    depth = codes.double() / 256.0
    K = torch.tensor([[700.0, 0, 11.5], [0, 700.0, 8.5], [0, 0, 1]])
    write_depth_png(tmp_path / "d.png", depth.float())
    back = read_depth_png(tmp_path / "d.png", K=K)
    assert torch.equal(back.depth, depth.float())
    assert torch.equal(back.valid, codes > 0)
    assert torch.equal(back.K, K)
    assert torch.equal(torch.from_numpy(np.asarray(Image.open(tmp_path / "d.png")).astype(np.int64)), codes)
    assert [p.name for p in tmp_path.iterdir()] == ["d.png"]  # no temp file left behind


def test_round_trip_rounds_to_nearest_code_and_keeps_invalid_as_zero(tmp_path):
    depth = torch.tensor([[1.0, 2.0011, float("nan")], [0.0, -1.0, 3.3]])
    write_depth_png(tmp_path / "d.png", depth, scale=1000.0)
    back = read_depth_png(tmp_path / "d.png", scale=1000.0)
    expected = torch.tensor([[1.0, 2.001, 0.0], [0.0, 0.0, 3.3]])
    assert torch.allclose(back.depth, expected, atol=1e-6)
    assert back.valid.tolist() == [[True, True, False], [False, False, True]]


def test_depth_map_mask_is_respected(tmp_path):
    dm = DepthMap(torch.full((2, 2), 5.0), valid=torch.tensor([[True, False], [False, True]]))
    write_depth_png(tmp_path / "d.png", dm)
    assert np.asarray(Image.open(tmp_path / "d.png")).tolist() == [[1280, 0], [0, 1280]]


def test_invalid_codes_are_configurable(tmp_path):
    Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.uint16)).save(tmp_path / "d.png")
    kitti = read_depth_png(tmp_path / "d.png", scale=1000.0)
    rgbd = read_depth_png(tmp_path / "d.png", scale=1000.0, invalid_values=(0, 65535))
    assert kitti.valid.tolist() == [[False, True, True]]
    assert rgbd.valid.tolist() == [[False, True, False]]
    assert rgbd.depth.tolist() == [[0.0, 1.0, 0.0]]


def test_depth_beyond_the_range_raises(tmp_path):
    with pytest.raises(ValueError, match=r"d\.png.*256\.0.*exceeds.*255\.99"):
        write_depth_png(tmp_path / "d.png", torch.tensor([[1.0, 256.0]]))
    assert not (tmp_path / "d.png").exists()


@pytest.mark.parametrize(
    ("mode", "array", "fmt", "match"),
    [
        ("L", np.zeros((4, 4), np.uint8), "PNG", "8-bit greyscale"),
        ("RGB", np.zeros((4, 4, 3), np.uint8), "PNG", "RGB"),
        ("RGB", np.zeros((4, 4, 3), np.uint8), "JPEG", "JPEG"),
    ],
)
def test_non_depth_images_are_rejected(tmp_path, mode, array, fmt, match):
    path = tmp_path / "bad.png"
    Image.fromarray(array, mode=mode).save(path, format=fmt)
    with pytest.raises(InputError, match=match) as info:
        read_depth_png(path)
    assert str(path) in str(info.value) and "16-bit" in str(info.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_depth_png(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="junk.png: not a readable image"):
        read_depth_png(tmp_path / "junk.png")
