"""Particle animations: loading rollouts and datasets, speed colours against numpy, GIF and PNG rendering, the
``geo3d view`` command with its one-line errors, and the animation window under Xvfb (it plays: frames change)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from geo3d.cli import main
from geo3d.errors import InputError
from geo3d.io.rollout import Rollout, write_rollout
from geo3d.synth.particles import generate_particles
from viewers import particles as vp
from viewers.colors import colormap_table


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A 2D elastic dataset: 3 trajectories (1 train, 1 valid, 1 test) of 100 particles x 24 frames."""
    return generate_particles(tmp_path_factory.mktemp("p") / "elastic", "elastic", 2, trajectories=3, particles=100,
                              steps=24, seed=0, splits=(1, 1, 1), progress=False)


@pytest.fixture(scope="module")
def rollout_file(dataset, tmp_path_factory):
    """A rollout whose 'prediction' is the test trajectory shifted right by 0.1 m after the 6 input frames."""
    from geo3d.io.particles import read_lagrangebench

    (traj,) = read_lagrangebench(dataset, "test")
    truth = traj.positions
    predicted = truth.clone()
    predicted[6:, :, 0] += 0.1
    r = Rollout(predicted, traj.particle_types, traj.bounds, traj.dt, 6, truth, truth, "GIOROM")
    return write_rollout(tmp_path_factory.mktemp("r") / "rollout.h5", r)


def test_load_rollout_and_dataset(rollout_file, dataset):
    anim = vp.load_animation(rollout_file)
    assert [label for label, _ in anim.panels] == ["ground truth", "prediction (GIOROM)"]
    assert anim.num_frames == 24 and anim.dim == 2 and anim.history == 6
    assert np.allclose(anim.panels[1][1][6:, :, 0] - anim.panels[0][1][6:, :, 0], 0.1, atol=1e-6)
    assert len(vp.load_animation(rollout_file, baseline=True).panels) == 3
    anim = vp.load_animation(dataset / "valid.h5")
    assert [label for label, _ in anim.panels] == ["trajectory 0"] and anim.history == 0
    with pytest.raises(InputError, match="holds 1 trajectories"):
        vp.load_animation(dataset / "valid.h5", trajectory=1)
    with pytest.raises(InputError, match="only rollout files"):
        vp.load_animation(dataset / "valid.h5", baseline=True)


def test_speed_colours_follow_numpy(rollout_file):
    anim = vp.load_animation(rollout_file)
    truth = anim.panels[0][1].astype(np.float64)
    speed = np.linalg.norm(truth[10] - truth[9], axis=-1) / anim.dt
    limit = np.percentile(np.linalg.norm(np.diff(truth, axis=0), axis=-1) / anim.dt, 99.5)
    # frame 0 repeats frame 1's speeds in the percentile: recompute the helper's exactly
    all_speeds = vp.speeds(anim.panels[0][1], anim.dt)
    assert np.allclose(all_speeds[10], speed) and np.allclose(all_speeds[0], all_speeds[1])
    limit = np.percentile(all_speeds, 99.5)
    table = colormap_table("turbo")
    expected = table[np.round(np.clip(speed / limit, 0, 1) * (len(table) - 1)).astype(int)]
    assert np.array_equal(vp.frame_colors(anim, 0, 10), expected)
    by_type = vp.frame_colors(anim, 1, 3, "type")
    assert by_type.shape == (truth.shape[1], 3) and len(np.unique(by_type, axis=0)) == 1


def test_frame_scene_layout(rollout_file):
    anim = vp.load_animation(rollout_file)
    scene = vp.frame_scene(anim, 12)
    points = [np.asarray(item.geometry.points) for item in scene.items if item.kind == "points"]
    assert len(points) == 2 and np.allclose(points[0][:, 1], 0)  # 2D (x, y) is drawn in the x-z plane
    assert np.allclose(points[0][:, 2], anim.panels[0][1][12, :, 1], atol=1e-6)
    assert points[1][:, 0].min() > 1.0  # the prediction panel is right of the ground-truth box [0, 1]
    assert [tag.text for tag in scene.tags] == ["ground truth", "prediction (GIOROM)"]
    with pytest.raises(ValueError):
        vp.frame_scene(anim, 24)


def test_gif_has_the_frames_and_they_move(rollout_file, tmp_path):
    anim = vp.load_animation(rollout_file)
    gif = vp.render_gif(anim, tmp_path / "a.gif", width=320, max_frames=8, progress=False)
    with Image.open(gif) as im:
        assert im.n_frames == 9  # every 3rd of 24 frames (0, 3, ..., 21) and the last
        frames = []
        for i in (0, im.n_frames - 1):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")).astype(int))
        assert frames[0].shape[1] == 320
    assert np.abs(frames[0] - frames[1]).sum(-1).astype(bool).sum() > 200  # the bodies moved
    png = vp.render_gif(anim, tmp_path / "last.png", width=320, progress=False)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width == 320
    with pytest.raises(InputError, match="expected a .gif"):
        vp.render_gif(anim, tmp_path / "a.mp4")


def test_cli_renders_and_errors_in_one_line(rollout_file, dataset, tmp_path, capsys):
    out = tmp_path / "r.gif"
    assert main(["view", str(rollout_file), "--out", str(out), "--max-frames", "4", "--width", "240"]) == 0
    assert out.is_file() and f"wrote {out}" in capsys.readouterr().out
    assert main(["view", str(dataset / "test.h5"), "--color", "type", "--out", str(tmp_path / "t.png")]) == 0
    garbage = tmp_path / "garbage.h5"
    garbage.write_text("nope")
    import torch

    four_d = write_rollout(tmp_path / "rollout_4d.h5", Rollout(  # drawn as its first two axes before
        torch.rand(8, 5, 4), torch.zeros(5, dtype=torch.long), torch.tensor([[0.0, 1.0]] * 4), 0.01, 2))
    cases = [
        ([str(four_d), "--out", str(tmp_path / "x.gif")], f"{four_d}: positions have 4 coordinates; expected 2 (2D) "
                                                          "or 3 (3D)"),
        ([str(garbage)], f"{garbage}: not an HDF5 file"),
        ([str(rollout_file), str(rollout_file)], "give one file"),
        ([str(rollout_file), "--boxes", "x.txt"], "--boxes: not used with particle files"),
        ([str(dataset / "test.h5"), "--trajectory", "5"], "--trajectory 5: the file holds 1 trajectories"),
        ([str(dataset / "metadata.json"), "--trajectory", "1"], "only for particle files"),
        ([str(rollout_file), "--out", str(tmp_path / "x.jpg")], "expected a .gif"),
    ]
    for args, words in cases:
        capsys.readouterr()
        assert main(["view", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err and "Traceback" not in err, (args, err)


def test_show_animation_hands_time_tagged_frames_to_open3d(rollout_file, monkeypatch):
    import viewers.window as window

    seen = {}
    monkeypatch.setattr(window, "has_display", lambda: True)
    monkeypatch.setattr(vp.o3d.visualization, "draw", lambda entries, **kw: seen.update(entries=entries, **kw))
    anim = vp.load_animation(rollout_file)
    vp.show_animation(anim, 400, 300, max_frames=12)
    timed = [e for e in seen["entries"] if "time" in e]
    frames = 13  # every 2nd of 24 frames (0, 2, ..., 22) and the last
    assert len(timed) == 2 * frames and len(seen["entries"]) == 2 * frames + 2  # particles per frame and panel, boxes
    times = sorted({e["time"] for e in timed})
    assert np.allclose(np.diff(times), seen["animation_time_step"]) and seen["animation_time_step"] == 2 * anim.dt


def test_window_plays_the_animation_and_closes_cleanly(rollout_file, xvfb, stop_window):
    from PIL import ImageGrab

    script = textwrap.dedent(f"""
        from geo3d.cli import main
        main(["view", {str(rollout_file)!r}, "--width", "600", "--height", "400"])
    """)
    env = {**os.environ, "DISPLAY": xvfb}
    env.pop("WAYLAND_DISPLAY", None)
    window = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    shots = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and window.poll() is None and len(shots) < 2:
            shot = np.asarray(ImageGrab.grab(xdisplay=xvfb).convert("RGB")).astype(np.int32)
            coloured = (shot.max(-1) - shot.min(-1)) > 60  # turbo-coloured particles, not grey UI or background
            if coloured.sum() > 300 and (not shots or np.abs(shot - shots[-1]).sum(-1).astype(bool).sum() > 100):
                shots.append(shot)
            time.sleep(0.3)
        assert window.poll() is None, f"the window process exited: {window.stderr.read().decode()[-2000:]}"
        assert len(shots) == 2, "no particles seen moving in the window within 90 s"
    finally:
        code = stop_window(window)
    assert code is not None, "the window did not close on SIGTERM within 15 s"
