"""The ``geo3d`` command: help texts, synth, and one-line errors with exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from geo3d.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_every_subcommand_with_examples(capsys):
    code, out, _ = run_cli(capsys)
    assert code == 2
    for word in ("fit", "validate", "test", "predict", "synth", "view", "demo", "examples:"):
        assert word in out
    for sub in ("synth", "view", "demo"):
        with pytest.raises(SystemExit) as exc:
            main([sub, "--help"])
        assert exc.value.code == 0
        assert "example" in capsys.readouterr().out


def test_lightning_help_runs(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--trainer" in out and "--model" in out and "--data" in out


def test_synth_shapes_writes_readable_deterministic_scene(tmp_path, capsys):
    from geo3d.io import read_mesh, read_point_cloud

    code, out, err = run_cli(capsys, "synth", "shapes", tmp_path / "a", "--objects", "4", "--points", "3000",
                             "--seed", "3")
    assert code == 0, err
    meta = json.loads((tmp_path / "a" / "scene.json").read_text())
    assert len(meta["objects"]) == 4
    cloud = read_point_cloud(tmp_path / "a" / "points.ply")
    assert len(cloud) == 3000 and cloud.colors is not None and cloud.normals is not None
    scene = read_mesh(tmp_path / "a" / "scene.ply")
    lo, hi = scene.vertices.min(0).values, scene.vertices.max(0).values
    assert float(lo[2]) == pytest.approx(-0.02, abs=1e-5) and float(hi[:2].max()) <= 3.25 + 1e-5
    for obj in meta["objects"]:
        mesh = read_mesh(tmp_path / "a" / obj["file"])
        centre = mesh.vertices.mean(0).numpy()
        assert np.linalg.norm(centre[:2] - np.array(obj["centre"][:2])) < 0.5 * obj["size"] + 0.05
    run_cli(capsys, "synth", "shapes", tmp_path / "b", "--objects", "4", "--points", "3000", "--seed", "3")
    assert (tmp_path / "a" / "points.ply").read_bytes() == (tmp_path / "b" / "points.ply").read_bytes()


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    truncated = tmp_path / "000001.bin"
    truncated.write_bytes(np.zeros(10, np.float32).tobytes()[:-2])
    code, _, err = run_cli(capsys, "view", truncated, "--out", tmp_path / "x.png")
    assert code == 2
    assert err.count("\n") == 1 and str(truncated) in err and "truncated" in err.lower()

    code, _, err = run_cli(capsys, "view", tmp_path / "missing.ply", "--out", tmp_path / "x.png")
    assert code == 2 and "missing.ply" in err and err.count("\n") == 1


def test_bad_label_and_transforms_errors(tmp_path, capsys, shared_data):
    kitti = shared_data / "kitti" / "training"
    label = tmp_path / "label.txt"
    label.write_text("Car 0 0 0 1 2 3 4 1.5 1.6 3.9\n")  # 11 columns
    code, _, err = run_cli(capsys, "view", kitti / "velodyne" / "000001.bin", "--boxes", label,
                           "--calib", kitti / "calib" / "000001.txt", "--out", tmp_path / "x.png")
    assert code == 2 and str(label) in err and "11" in err and err.count("\n") == 1

    transforms = tmp_path / "transforms.json"
    transforms.write_text(json.dumps({"camera_angle_x": 0.7}))
    code, _, err = run_cli(capsys, "view", transforms, "--out", tmp_path / "x.png")
    assert code == 2 and str(transforms) in err and "frames" in err and err.count("\n") == 1


def test_console_script_prints_no_traceback(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00" * 7)
    proc = subprocess.run([sys.executable, "-m", "geo3d.cli", "view", str(bad), "--out", str(tmp_path / "x.png")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and str(bad) in proc.stderr
