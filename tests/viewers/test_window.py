"""The interactive window on a labelled KITTI frame, under a virtual display (Xvfb).

``geo3d view velodyne/X.bin --boxes label_2/X.txt --calib calib/X.txt`` used to die in the window's
label set-up (``O3DVisualizer.add_3d_label`` returns None in Open3D 0.20) and then abort in Filament.
Here the command runs as a user runs it, in a child process on Xvfb: the window must open, show the
green ground-truth boxes (read back from a screenshot), carry one green 3D label per box with its class
(read from the real ``gui.Label3D`` objects the window made), and close cleanly with exit code 0.
The frame is the shared real KITTI frame 000003 when ``../shared/data`` is present, else a synthetic
frame from ``geo3d synth kitti``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from geo3d.io.kitti import read_label

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("GEO3D_SHARED_DATA", REPO.parent / "shared" / "data"))  # as tests/conftest.py

# The child: the `geo3d view` command, with two observers added around Open3D (nothing in geo3d is
# replaced): the window it creates (so that a line on stdin can close it from the GUI thread, as a user
# closing it would) and the 3D labels it adds (reported as JSON before closing).
_CHILD = textwrap.dedent("""
    import json, sys, threading
    import open3d as o3d
    from geo3d.cli import main

    gui = o3d.visualization.gui
    windows, labels = [], []
    create_window, add_label = gui.Application.create_window, gui.SceneWidget.add_3d_label

    def observe_window(self, *args):
        windows.append(create_window(self, *args))
        return windows[-1]

    def observe_label(self, position, text):
        labels.append(add_label(self, position, text))
        return labels[-1]

    gui.Application.create_window, gui.SceneWidget.add_3d_label = observe_window, observe_label

    def close_on_request():
        sys.stdin.readline()
        report = [[l.text, [l.color.red, l.color.green, l.color.blue]] for l in labels]
        print("LABELS " + json.dumps(report), flush=True)
        gui.Application.instance.post_to_main_thread(windows[0], windows[0].close)

    threading.Thread(target=close_on_request, daemon=True).start()
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture(scope="module")
def kitti_frame(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(velodyne .bin, label_2 .txt, calib .txt) of a labelled frame: the shared 000003, else synthetic."""
    real = SHARED_DATA / "kitti" / "training"
    if (real / "velodyne" / "000003.bin").is_file():
        root, frame = real, "000003"
    else:
        from geo3d.synth.kitti import generate_kitti

        root = generate_kitti(tmp_path_factory.mktemp("synth_kitti"), frames=1, val_frames=0, seed=0, workers=1,
                              image=False, progress=False) / "training"
        frame = "000000"
    return root / "velodyne" / f"{frame}.bin", root / "label_2" / f"{frame}.txt", root / "calib" / f"{frame}.txt"


def _green_pixels(display: str) -> int:
    """Pixels of the ground-truth box colour (pure green, tone-mapped by the window) on the X screen."""
    from PIL import ImageGrab

    shot = np.asarray(ImageGrab.grab(xdisplay=display).convert("RGB")).astype(np.int32)
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    return int(((g > 120) & (g > r + 80) & (g > b + 80)).sum())


def test_window_shows_a_labelled_kitti_frame_and_closes_cleanly(kitti_frame, xvfb):
    scan, label, calib = kitti_frame
    expected = [o.type for o in read_label(label) if o.type != "DontCare"]
    assert expected, f"{label} has no boxes to show"
    env = {**os.environ, "DISPLAY": xvfb, "OMP_NUM_THREADS": "1"}
    env.pop("WAYLAND_DISPLAY", None)
    env.pop("GEO3D_DEBUG", None)
    args = ["view", str(scan), "--boxes", str(label), "--calib", str(calib), "--width", "640", "--height", "480"]
    child = subprocess.Popen([sys.executable, "-c", _CHILD, *args], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=REPO)
    green = 0
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and child.poll() is None:
            green = _green_pixels(xvfb)
            if green > 150:
                break
            time.sleep(0.3)
        alive = child.poll() is None
        if alive:
            child.stdin.write("close\n")
            child.stdin.flush()
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert alive, f"the window process exited before it was closed (code {child.returncode}):\n{err[-3000:]}"
    assert green > 150, "no green ground-truth boxes visible in the window within 90 s"
    assert child.returncode == 0, f"exit code {child.returncode} on closing the window:\n{err[-3000:]}"
    for crash in ("Traceback", "Error", "terminate called", "Precondition"):
        assert crash not in err, err[-3000:]
    (report,) = [line for line in out.splitlines() if line.startswith("LABELS ")]
    labels = json.loads(report.removeprefix("LABELS "))
    assert sorted(text for text, _ in labels) == sorted(expected)
    for _, color in labels:
        assert color == pytest.approx([0.0, 1.0, 0.0])  # the ground-truth colour, not the default black
