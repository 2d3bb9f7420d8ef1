"""Depth maps in the viewers: back-projection, colour mapping, panels, ``geo3d view --depth`` and its window.

Back-projection is checked against the pinhole formula written out here; renders use a synthetic
fronto-parallel plane, whose image from the pulled-back camera is a rectangle computed in the test.
Headless images are small; the window test runs under Xvfb (skipped when it is not installed).
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import viewers.depth as vd
from geo3d.cli import main
from geo3d.errors import InputError
from geo3d.io.depth_png import write_depth_png
from geo3d.types import DepthMap
from viewers import render
from viewers.colors import BACKGROUND, POINT_SPAN, TEXT, colormap_table
from viewers.depth import (
    colorize_depth,
    default_K,
    depth_comparison_png,
    depth_panel,
    depth_to_points,
    dilate_for_display,
    load_depth,
    panel_title_height,
    parse_intrinsics,
)
from viewers.scene import Scene

MAGENTA = (255, 0, 255)
PLANE_Z = 5.0
PLANE_W, PLANE_H = 80, 60
PLANE_K = "60,60,40,30"  # fx, fy, cx, cy


def random_depth(h: int = 6, w: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 7.5, (h, w))
    depth[rng.uniform(size=(h, w)) < 0.3] = 0.0
    return depth.astype(np.float32)


# ---------------------------------------------------------------------------------------- back-projection

def test_back_projection_matches_the_pinhole_formula():
    depth = random_depth()
    K = torch.tensor([[50.0, 0, 3.7], [0, 42.0, 2.2], [0, 0, 1]])
    image = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    cloud = depth_to_points(torch.from_numpy(depth), K, image)
    v, u = np.nonzero(depth > 0)  # row-major order
    z = depth[v, u].astype(np.float64)
    expected = np.stack([(u - 3.7) * z / 50.0, (v - 2.2) * z / 42.0, z], 1)
    assert cloud.points.dtype == torch.float32 and cloud.points.shape == (len(z), 3)
    np.testing.assert_allclose(cloud.points.numpy(), expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(cloud.colors.numpy(), image[v, u] / 255.0, atol=1e-7)
    # max_depth drops the deeper pixels; a DepthMap brings its own K.
    near = depth_to_points(DepthMap(torch.from_numpy(depth), K=K), max_depth=4.0)
    keep = z <= 4.0
    np.testing.assert_allclose(near.points.numpy(), expected[keep], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="intrinsics K are needed"):
        depth_to_points(torch.from_numpy(depth))


def test_points_without_image_take_the_depth_colours_of_the_panel():
    depth = random_depth(seed=3)
    cloud = depth_to_points(depth, default_K(6, 8), vmin=1.0, vmax=7.0)
    v, u = np.nonzero(depth > 0)
    np.testing.assert_array_equal(np.round(cloud.colors.numpy() * 255), colorize_depth(depth, 1.0, 7.0)[v, u])


def test_default_and_parsed_intrinsics(tmp_path):
    K = default_K(352, 1216)
    f = 721.5 * 1216 / 1242
    np.testing.assert_allclose(K.numpy(), [[f, 0, 608], [0, f, 176], [0, 0, 1]])
    np.testing.assert_allclose(parse_intrinsics("700,710.5,600,170").numpy(),
                               [[700, 0, 600], [0, 710.5, 170], [0, 0, 1]])
    np.savetxt(tmp_path / "K.txt", K.numpy())
    np.testing.assert_allclose(parse_intrinsics(tmp_path / "K.txt").numpy(), K.numpy())
    (tmp_path / "K9.txt").write_text(" ".join(str(x) for x in K.numpy().ravel()))  # 9 numbers on one line
    np.testing.assert_allclose(parse_intrinsics(str(tmp_path / "K9.txt")).numpy(), K.numpy())


# ------------------------------------------------------------------------------------------ colours

def table_index(colors: np.ndarray, cmap: str = "turbo") -> np.ndarray:
    """Index of the nearest colormap entry of each (N, 3) uint8 colour."""
    table = np.round(colormap_table(cmap) * 255)
    return np.abs(colors[:, None, :].astype(np.float64) - table[None]).sum(-1).argmin(1)


def test_colorize_depth_near_warm_far_cold_missing_black():
    ramp = np.linspace(1.0, 50.0, 200, dtype=np.float32)[None].repeat(3, 0)
    ramp[0, ::7] = 0.0
    ramp[1, 5] = np.nan
    ramp[2, 9] = -3.0
    rgb = colorize_depth(ramp, vmin=1.0, vmax=50.0)
    assert rgb.shape == (3, 200, 3) and rgb.dtype == np.uint8
    missing = ~(np.isfinite(ramp) & (ramp > 0))
    assert (rgb[missing] == 0).all() and (rgb[~missing].max(-1) > 40).all()  # no valid pixel is near-black
    index = table_index(rgb[1][np.isfinite(ramp[1])])
    assert (np.diff(index) <= 0).all()  # deeper = further down the colormap
    assert index[0] == round(POINT_SPAN[1] * 255) and index[-1] == round(POINT_SPAN[0] * 255)
    near, far = rgb[1, 0].astype(int), rgb[1, -1].astype(int)
    assert near[0] > near[2] + 100 and far[2] > far[0] + 100  # turbo: near red, far blue
    # Same vmin/vmax: the same depth gets the same colour in any map; beyond the range it is clamped.
    other = np.full((2, 2), 25.0, np.float32)
    other[0, 0] = 500.0
    both = colorize_depth(other, 1.0, 50.0)
    single = colorize_depth(np.array([[25.0]]), 1.0, 50.0)
    np.testing.assert_array_equal(both[1, 1], single[0, 0])
    np.testing.assert_array_equal(both[0, 0], rgb[1, -1])


def test_colorize_default_range_ignores_outliers():
    depth = np.tile(np.linspace(2.0, 20.0, 100), (10, 1))
    depth[0, 0] = 900.0  # one outlier must not squash the colours of the rest
    index = table_index(colorize_depth(depth).reshape(-1, 3)).reshape(depth.shape)
    assert index[5, 3] > index[5, 50] > index[5, 96]
    assert (index[5, 3] - index[5, 96]) > 0.9 * (POINT_SPAN[1] - POINT_SPAN[0]) * 255
    assert (colorize_depth(np.zeros((4, 4))) == 0).all()


def test_dilate_for_display_grows_points_only_for_display():
    depth = np.zeros((7, 7))
    depth[3, 3] = 4.0
    depth[0, 6] = 9.0
    grown = dilate_for_display(depth)
    assert (grown[2:5, 2:5] == 4.0).all() and (grown[0:2, 5:7] == 9.0).all()
    assert (grown > 0).sum() == 9 + 4
    assert depth[2, 2] == 0.0  # the input is untouched


# ------------------------------------------------------------------------------------------- panels

def text_pixels(region: np.ndarray) -> int:
    """Pixels of a title bar that are lighter than the bar (anti-aliased text in the TEXT colour)."""
    bg = np.round(np.array(BACKGROUND) * 255)
    return int((np.abs(region.astype(np.int32) - bg).max(-1) > 60).sum())


def test_panel_stacks_images_under_their_titles(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 200, 3), dtype=np.uint8)
    grey = np.full((30, 150), 200, np.uint8)
    out = depth_panel([("input RGB", rgb), ("a much longer title for the second panel", grey)], tmp_path / "p.png")
    image = np.asarray(Image.open(out).convert("RGB"))
    bar = panel_title_height(200)
    assert image.shape == (40 + 30 + 2 * bar, 200, 3)
    np.testing.assert_array_equal(image[bar:bar + 40], rgb)  # pixel-exact copies
    np.testing.assert_array_equal(image[2 * bar + 40:, :150], 200)
    assert (image[2 * bar + 40:, 150:] == np.round(np.array(BACKGROUND) * 255)).all()  # padding
    first, second = text_pixels(image[:bar]), text_pixels(image[bar + 40:2 * bar + 40])
    assert first > 20 and second > 2 * first  # both titles drawn, the longer one wider
    lightest = image[:bar].reshape(-1, 3)[image[:bar].sum(-1).argmax()]
    assert np.abs(lightest.astype(int) - np.round(np.array(TEXT) * 255)).max() <= 30
    out = depth_panel([("t", rgb)], tmp_path / "q.png", title_height=25)
    assert Image.open(out).size == (200, 65)
    with pytest.raises(InputError, match=r"p\.jpg: expected a \.png"):
        depth_panel([("t", rgb)], tmp_path / "p.jpg")
    with pytest.raises(ValueError, match="uint8"):
        depth_panel([("t", rgb.astype(np.float32))], tmp_path / "p.png")


def test_comparison_panel_shares_one_depth_range(tmp_path):
    h, w = 24, 64
    rng = np.random.default_rng(0)
    gt = np.tile(np.linspace(3.0, 30.0, w), (h, 1))
    sparse = np.where(rng.uniform(size=(h, w)) < 0.05, gt, 0.0)
    pred = gt.copy()
    pred[:, :8] += 2.0  # a wrong strip: the error panel lights up there
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = depth_comparison_png(image, sparse, pred, tmp_path / "cmp.png", gt=gt, uncertainty=rng.uniform(size=(h, w)))
    panel = np.asarray(Image.open(out).convert("RGB"))
    bar = panel_title_height(w)
    assert panel.shape == (6 * (h + bar), w, 3)
    rows = [panel[i * (h + bar) + bar:(i + 1) * (h + bar)] for i in range(6)]
    np.testing.assert_array_equal(rows[0], image)
    vmin, vmax = np.percentile(gt, [2, 98])  # the range comes from the ground truth
    np.testing.assert_array_equal(rows[3], colorize_depth(gt, vmin, vmax))
    np.testing.assert_array_equal(rows[2][:, 8:], rows[3][:, 8:])  # same depth, same colour across panels
    sparse_valid = rows[1].max(-1) > 0
    assert sparse_valid.sum() > 3 * (sparse > 0).sum()  # drawn dilated
    error = rows[4].astype(int)
    assert error[:, :8].mean() > error[:, 8:].mean() + 30  # the wrong strip is bright
    assert all(text_pixels(panel[i * (h + bar):i * (h + bar) + bar]) > 10 for i in range(6))
    with pytest.raises(ValueError, match="gt has shape"):
        depth_comparison_png(image, sparse, pred, tmp_path / "x.png", gt=gt[:-1])


# -------------------------------------------------------------------------------------------- files

def test_load_depth_reads_png_and_npy(tmp_path):
    depth = random_depth()
    write_depth_png(tmp_path / "d.png", depth)
    np.testing.assert_allclose(load_depth(tmp_path / "d.png"), depth, atol=0.5 / 256)
    np.testing.assert_allclose(load_depth(tmp_path / "d.png", scale=1000.0), depth * 256 / 1000, atol=0.5 / 1000)
    depth[0, 0], depth[0, 1] = np.nan, -1.0
    np.save(tmp_path / "d.npy", depth)
    loaded = load_depth(tmp_path / "d.npy")
    assert loaded[0, 0] == 0 and loaded[0, 1] == 0
    np.testing.assert_allclose(loaded[1:], depth[1:], atol=1e-6)


@pytest.fixture
def plane_files(tmp_path):
    """A fronto-parallel plane at PLANE_Z metres as a KITTI depth PNG, and a magenta image of the same size."""
    write_depth_png(tmp_path / "plane.png", np.full((PLANE_H, PLANE_W), PLANE_Z, np.float32))
    Image.fromarray(np.full((PLANE_H, PLANE_W, 3), MAGENTA, np.uint8)).save(tmp_path / "magenta.png")
    return tmp_path / "plane.png", tmp_path / "magenta.png"


def test_view_depth_writes_panel_and_point_render(plane_files, tmp_path, capsys):
    if not render.headless_available():
        pytest.skip("Open3D headless rendering is not available here")
    plane, rgb = plane_files
    out = tmp_path / "view.png"
    code = main(["view", "--depth", str(plane), "--image", str(rgb), "--K", PLANE_K, "--out", str(out)])
    printed = capsys.readouterr().out
    points = tmp_path / "view_points.png"
    assert code == 0 and f"wrote {out}" in printed and f"wrote {points}" in printed
    assert "note" not in printed  # K was given
    panel = np.asarray(Image.open(out).convert("RGB"))
    bar = panel_title_height(PLANE_W)
    assert panel.shape == (2 * (PLANE_H + bar), PLANE_W, 3)
    assert (panel[bar:bar + PLANE_H] == MAGENTA).all()
    assert (panel[2 * bar + PLANE_H:].max(-1) > 40).all()  # a dense map: every pixel coloured
    image = np.asarray(Image.open(points).convert("RGB"))
    assert image.shape == (480, 640, 3)  # the depth map's 4:3 aspect, 640 wide
    magenta = (np.abs(image.astype(np.int32) - MAGENTA).max(-1) <= 3)
    # Where the plane must appear: its corner pixels projected into the camera pulled back along its axis.
    back = vd.PULL_BACK * PLANE_Z
    f = 240 / math.tan(math.atan(PLANE_H / (2 * 60)))  # render focal from the vertical field of view
    x = (np.array([0, PLANE_W - 1]) - 40) * PLANE_Z / 60
    y = (np.array([0, PLANE_H - 1]) - 30) * PLANE_Z / 60
    u, v = 320 + f * x / (PLANE_Z + back), 240 + f * y / (PLANE_Z + back)
    rows, cols = np.nonzero(magenta)
    slack = 8  # points are drawn ~10 px wide
    assert u[0] - slack <= cols.min() <= u[0] + 2 and u[1] - 2 <= cols.max() <= u[1] + slack
    assert v[0] - slack <= rows.min() <= v[0] + 2 and v[1] - 2 <= rows.max() <= v[1] + slack
    inside = magenta[int(v[0]) + 2:int(v[1]) - 2, int(u[0]) + 2:int(u[1]) - 2]
    assert inside.mean() > 0.95  # filled, not a scatter of specks
    assert not magenta[:, :int(u[0]) - slack].any() and not magenta[int(v[1]) + slack:].any()


def test_view_depth_without_display_writes_to_cwd(plane_files, tmp_path, monkeypatch, capsys):
    if not render.headless_available():
        pytest.skip("Open3D headless rendering is not available here")
    plane, _ = plane_files
    monkeypatch.setattr(vd, "has_display", lambda: False)
    monkeypatch.chdir(tmp_path)
    written = vd.view_depth(plane, width=160)
    assert written == [tmp_path / "plane_view.png", tmp_path / "plane_view_points.png"]
    assert Image.open(written[1]).size == (160, 120)
    printed = capsys.readouterr().out
    assert "no display found" in printed and "note: no K given" in printed and "721.5 * 80 / 1242" in printed


def test_view_depth_with_display_opens_a_window(plane_files, monkeypatch):
    plane, rgb = plane_files
    calls = []
    monkeypatch.setattr(vd, "has_display", lambda: True)
    monkeypatch.setattr(vd, "show", lambda *args: calls.append(args))
    assert vd.view_depth([plane], image=rgb, K=PLANE_K, view="front") == []
    (scene, title, width, height, view), = calls
    assert isinstance(scene, Scene) and title == f"plane.png: {PLANE_W * PLANE_H:,} points"
    assert (width, height, view) == (640, 480, "front")
    points = np.asarray(scene.items[0].geometry.points)
    # The viewer frame is z up, x forward: the plane is 5 m ahead, the image's top row is the highest.
    np.testing.assert_allclose(points[:, 0], PLANE_Z, atol=1e-5)
    np.testing.assert_allclose(points[0], [PLANE_Z, 40 * PLANE_Z / 60, 30 * PLANE_Z / 60], atol=1e-5)
    np.testing.assert_array_equal(scene.sensor, [0.0, 0.0, 0.0])
    np.testing.assert_allclose(np.asarray(scene.items[0].geometry.colors), np.tile([1.0, 0, 1.0], (len(points), 1)))


# ------------------------------------------------------------------------------------------ bad input

def write_bad(tmp_path, kind: str):
    """Write a bad input; returns (argv, text that must be in the error line)."""
    good = tmp_path / "good.png"
    write_depth_png(good, np.full((20, 30), 3.0, np.float32))
    base = ["view", "--depth"]
    if kind == "8bit":
        Image.fromarray(np.full((20, 30), 9, np.uint8)).save(tmp_path / "grey.png")
        return [*base, str(tmp_path / "grey.png")], "grey.png: expected a 16-bit"
    if kind == "rgb":
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "colour.png")
        return [*base, str(tmp_path / "colour.png")], "colour.png: expected a 16-bit"
    if kind == "npy_shape":
        np.save(tmp_path / "cube.npy", np.ones((2, 3, 4), np.float32))
        return [*base, str(tmp_path / "cube.npy")], "cube.npy: expected an (H, W) float array"
    if kind == "npy_garbage":
        (tmp_path / "junk.npy").write_bytes(b"not numpy")
        return [*base, str(tmp_path / "junk.npy")], "junk.npy: not a readable .npy"
    if kind == "zeros":
        write_depth_png(tmp_path / "empty.png", np.zeros((20, 30), np.float32))
        return [*base, str(tmp_path / "empty.png")], "empty.png: no valid depth"
    if kind == "missing":
        return [*base, str(tmp_path / "nope.png")], "nope.png: file not found"
    if kind == "suffix":
        (tmp_path / "scan.bin").write_bytes(b"\0" * 16)
        return [*base, str(tmp_path / "scan.bin")], "scan.bin: unknown depth file type '.bin'"
    if kind == "K_text":
        (tmp_path / "K.txt").write_text("fx fy\ncx cy\n")
        return [*base, str(good), "--K", str(tmp_path / "K.txt")], "K.txt: malformed intrinsics"
    if kind == "K_shape":
        (tmp_path / "K2.txt").write_text("1 0\n0 1\n")
        return [*base, str(good), "--K", str(tmp_path / "K2.txt")], "K2.txt: malformed intrinsics"
    if kind == "K_values":
        (tmp_path / "K3.txt").write_text("-5 0 1\n0 5 1\n0 0 1\n")
        return [*base, str(good), "--K", str(tmp_path / "K3.txt")], "K3.txt: intrinsics: expected"
    if kind == "K_numbers":
        return [*base, str(good), "--K", "1,2,3"], "K '1,2,3': expected 'fx,fy,cx,cy'"
    if kind == "image_size":
        Image.fromarray(np.zeros((21, 30, 3), np.uint8)).save(tmp_path / "rgb.png")
        return [*base, str(good), "--image", str(tmp_path / "rgb.png")], "rgb.png: the image is 30x21"
    if kind == "out_suffix":
        return [*base, str(good), "--out", str(tmp_path / "x.jpg")], "x.jpg: expected a .png output file"
    if kind == "no_depth_flag":
        return ["view", str(good), "--image", str(good)], "--image: only for depth maps; add --depth"
    if kind == "npy_without_flag":
        np.save(tmp_path / "d.npy", np.ones((4, 4), np.float32))
        return ["view", str(tmp_path / "d.npy")], "d.npy: .npy files are read as depth maps only with --depth"
    if kind == "boxes":
        return [*base, str(good), "--boxes", str(good)], "--boxes: not used with --depth"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["8bit", "rgb", "npy_shape", "npy_garbage", "zeros", "missing", "suffix", "K_text",
                                  "K_shape", "K_values", "K_numbers", "image_size", "out_suffix", "no_depth_flag",
                                  "npy_without_flag", "boxes"])
def test_bad_depth_input_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch, kind):
    monkeypatch.setattr(vd, "has_display", lambda: False)
    monkeypatch.setattr(vd, "render_png", lambda *a, **k: pytest.fail("bad input must fail before rendering"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GEO3D_DEBUG", raising=False)
    argv, expected = write_bad(tmp_path, kind)
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geo3d: error: ") and expected in lines[0], captured.err


# ------------------------------------------------------------------------------------- interactive window

def test_window_shows_the_depth_points_and_closes_cleanly(plane_files, magenta_window):
    plane, rgb = plane_files
    script = textwrap.dedent(f"""
        from geo3d.cli import main
        main(["view", "--depth", {str(plane)!r}, "--image", {str(rgb)!r}, "--K", {PLANE_K!r},
              "--width", "400", "--height", "300"])
    """)
    magenta_window(script, "depth points")
