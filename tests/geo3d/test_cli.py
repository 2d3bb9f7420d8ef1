"""The ``geo3d`` command: help texts, synth, and one-line errors with exit code 2 on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from geo3d.cli import main
from geo3d.io.kitti import KittiCalib, write_calib, write_velodyne


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


# ---------------------------------------------------------------------- malformed input (issue 11), as a user runs it

REPO = Path(__file__).resolve().parents[2]
PIPELINE_CONFIGS = {  # one tiny config per pipeline that trains with the Lightning CLI
    "detection": "configs/detection/second_tiny_cpu.yaml",
    "depth": "configs/depth/omni_tiny_cpu.yaml",
    "splatting": "configs/splatting/object_4view_cpu.yaml",
    "surface": "configs/surface/unet_tiny_cpu.yaml",
    "simulation": "configs/simulation/gns_elastic_tiny_cpu.yaml",
}
# An ideal rig: rectified camera = LiDAR axes permuted (x_cam = -y, y_cam = -z, z_cam = x).
CALIB = KittiCalib(P0=np.eye(3, 4), P1=np.eye(3, 4), P3=np.eye(3, 4),
                   P2=[[700.0, 0, 620, 0], [0, 700.0, 187, 0], [0, 0, 1, 0]], R0_rect=np.eye(3),
                   Tr_velo_to_cam=[[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]])


def geo3d(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the ``geo3d`` console script (``python -m geo3d.cli``) in a child process, as a user does."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("GEO3D_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "geo3d.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def assert_one_line(proc: subprocess.CompletedProcess, code: int, path: Path, *words: str) -> str:
    """Exit ``code``, stderr one ``geo3d: error|warning:`` line naming ``path`` and ``words``, no traceback."""
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("geo3d: error: " if code else "geo3d: warning: "), proc.stderr
    for word in (str(path), *words):
        assert word in lines[0], lines[0]
    return lines[0]


def _scan(rng_seed: int = 0, n: int = 2000) -> np.ndarray:
    """(n, 4) float32 points 5-40 m ahead of the sensor, reflectance in [0, 1]."""
    rng = np.random.default_rng(rng_seed)
    return np.column_stack([rng.uniform(5, 40, n), rng.uniform(-10, 10, n), rng.uniform(-1.7, 1, n),
                            rng.uniform(0, 1, n)]).astype(np.float32)


def test_scan_with_nan_or_inf_is_one_line_naming_the_file(tmp_path):
    """One NaN, one +inf and one -inf point (in different columns): each is counted, and the console script prints
    one line, exit code 2, no traceback."""
    points = _scan()
    points[10, 1], points[20, 0], points[30, 3] = np.nan, np.inf, -np.inf
    scan = tmp_path / "velodyne" / "000000.bin"
    scan.parent.mkdir()
    write_velodyne(scan, points)
    proc = geo3d("view", scan, "--out", tmp_path / "x.png")
    assert_one_line(proc, 2, scan, "3 of 2000 points hold NaN or infinite values")
    assert not (tmp_path / "x.png").exists()


def test_label_with_nan_dimensions_is_one_line_naming_the_file(tmp_path):
    scan, calib, label = tmp_path / "000000.bin", tmp_path / "calib.txt", tmp_path / "label.txt"
    write_velodyne(scan, _scan())
    write_calib(calib, CALIB)
    label.write_text("Car 0.00 0 -1.57 500.00 150.00 700.00 250.00 1.50 1.60 3.90 0.00 1.70 20.00 0.00\n"
                     "Car 0.00 0 -1.57 500.00 150.00 700.00 250.00 nan nan nan 2.00 1.70 30.00 0.00\n")
    proc = geo3d("view", scan, "--boxes", label, "--calib", calib, "--out", tmp_path / "x.png")
    assert_one_line(proc, 2, label, "line 2", "column 'h' is not a finite number: 'nan'")


def test_scan_with_points_kilometres_away_warns_or_fails_naming_the_file(tmp_path):
    points = _scan()
    points[:50, :3] = 1e30
    points[50:100, :3] = -1e30
    scan = tmp_path / "far.bin"
    write_velodyne(scan, points)
    proc = geo3d("view", scan, "--out", tmp_path / "x.png")
    assert_one_line(proc, 0, scan, "dropped 100 of 2000 points farther than 1000 m")
    assert (tmp_path / "x.png").is_file() and f"wrote {tmp_path / 'x.png'}" in proc.stdout

    write_velodyne(scan, np.where(np.arange(2000)[:, None] % 2, 1e30, -1e30).repeat(4, 1).astype(np.float32))
    proc = geo3d("view", scan, "--out", tmp_path / "y.png")
    assert_one_line(proc, 2, scan, "all 2000 points lie farther than 1000 m from the sensor")
    assert not (tmp_path / "y.png").exists()


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Checkpoint files Lightning cannot use, with the words their one-line error must hold."""
    import torch

    folder = tmp_path_factory.mktemp("ckpt")
    garbage = folder / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint\n" * 64)
    whole = folder / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 3}, whole)
    truncated = folder / "truncated.ckpt"
    truncated.write_bytes(whole.read_bytes()[:2000])
    weights = folder / "tensor.ckpt"
    torch.save(torch.zeros(3), weights)
    return {
        "garbage": (garbage, "not a readable checkpoint"),
        "truncated": (truncated, "not a readable checkpoint"),
        "not lightning": (weights, "not a Lightning checkpoint"),
        "missing": (folder / "missing.ckpt", "checkpoint not found"),
    }


@pytest.mark.parametrize("subcommand,pipeline", [("predict", p) for p in PIPELINE_CONFIGS]
                         + [(s, "detection") for s in ("fit", "validate", "test")])
def test_bad_checkpoint_is_one_line_for_every_pipeline(capsys, bad_checkpoints, subcommand, pipeline):
    for path, words in bad_checkpoints.values():
        code, _, err = run_cli(capsys, subcommand, "--config", REPO / PIPELINE_CONFIGS[pipeline], "--ckpt_path", path)
        assert code == 2, err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"geo3d: error: {path}: ") and words in lines[0], err


def test_corrupt_checkpoint_console_script_is_one_line(bad_checkpoints):
    path, words = bad_checkpoints["truncated"]
    proc = geo3d("predict", "--config", PIPELINE_CONFIGS["detection"], "--ckpt_path", path)
    assert_one_line(proc, 2, path, words, "PytorchStreamReader failed reading zip archive")


def test_predict_on_a_nan_scan_names_the_file_from_the_loader_worker(tmp_path):
    """The scan is read in a DataLoader worker, which re-raises the InputError as a RuntimeError."""
    training = tmp_path / "kitti" / "training"
    for folder in ("velodyne", "calib"):
        (training / folder).mkdir(parents=True)
    points = _scan()
    points[5, 0] = np.nan
    scan = training / "velodyne" / "000000.bin"
    write_velodyne(scan, points)
    write_calib(training / "calib" / "000000.txt", CALIB)
    proc = geo3d("predict", "--config", PIPELINE_CONFIGS["detection"], "--data.data_dir", tmp_path / "kitti",
                 "--data.splits.predict", "all", "--data.num_workers", "1", "--trainer.logger", "false",
                 "--trainer.default_root_dir", tmp_path / "out", "--trainer.callbacks", "[]")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("geo3d: error: ")]
    assert line == f"geo3d: error: {scan}: 1 of 2000 points hold NaN or infinite values (first: point 5, " \
                   f"[nan, {points[5, 1]:g}, {points[5, 2]:g}, {points[5, 3]:g}]); expected finite x, y, z, reflectance"


@pytest.mark.parametrize("kind", ["shapes", "kitti", "nerf", "rgbd", "depth", "particles"])
def test_synth_into_an_existing_file_is_one_line(tmp_path, capsys, kind):
    existing = tmp_path / "out"
    existing.write_text("keep me\n")
    code, _, err = run_cli(capsys, "synth", kind, existing)
    assert code == 2 and err == f"geo3d: error: {existing}: exists and is not a folder (expected an output " \
                                 "folder: a new path or an existing folder)\n"
    code, _, err = run_cli(capsys, "synth", kind, existing / "sub")
    assert code == 2 and err == f"geo3d: error: {existing}: is a file, so the output folder {existing / 'sub'} " \
                                "cannot be created in it\n"
    assert existing.read_text() == "keep me\n"



def test_outputs_in_or_at_an_existing_file_are_one_line(tmp_path, capsys):
    """complete / reconstruct / render / view check their output paths before any work: a file where a folder must
    be created is a one-line error naming it (was a FileExistsError traceback), and the file is left alone."""
    existing = tmp_path / "X"
    existing.write_text("keep me\n")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    in_file = f"is a file, so the output file {existing / 'out.png'} cannot be written in it"
    cases = [
        (("complete", "rgb.png", "sparse.png", "--method", "linear", "--out", existing / "out.png"), in_file),
        (("complete", "rgb.png", "sparse.png", "--method", "linear", "--out", folder),
         f"{folder}: is a folder (expected an output file)"),
        (("complete", "rgb.png", "sparse.png", "--method", "linear", "--out", tmp_path / "d.png",
          "--view", existing / "out.png"), in_file),
        (("reconstruct", "--input", tmp_path, "--output", existing),
         "exists and is not a folder (expected an output folder: a new path or an existing folder)"),
        (("reconstruct", "--input", tmp_path, "--output", existing / "sub"),
         f"is a file, so the output folder {existing / 'sub'} cannot be created in it"),
        (("render", "scene.ply", "--turntable", "4", "--out", existing), "exists and is not a folder"),
        (("render", "scene.ply", "--turntable", "4", "--out", existing / "sub"),
         f"is a file, so the output folder {existing / 'sub'} cannot be created in it"),
        (("view", "scene.ply", "--out", existing / "out.png"), in_file),
    ]
    for args, message in cases:
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and err.count("\n") == 1 and message in err, (args, err)
    assert existing.read_text() == "keep me\n"



@pytest.mark.parametrize("res", ["0", "1", "-3"])
def test_synth_rgbd_res_message_names_res(tmp_path, capsys, res):
    """``--res 0`` said "width", an option the user did not give."""
    code, _, err = run_cli(capsys, "synth", "rgbd", tmp_path / "out", "--res", res)
    assert code == 2 and err == f"geo3d: error: --res: expected an image width of at least 2 pixels (the height " \
                                f"is 3/4 of it), got {res}\n"
    assert not (tmp_path / "out").exists()


def test_synth_shapes_into_an_existing_file_console_script(tmp_path):
    existing = tmp_path / "out.ply"
    existing.write_text("keep me\n")
    assert_one_line(geo3d("synth", "shapes", existing), 2, existing, "exists and is not a folder")
    assert existing.read_text() == "keep me\n"


def test_demo_kitti_stage_reads_the_real_frame_from_geo3d_shared_data(tmp_path, monkeypatch):
    from geo3d.cli.demo import run_demo

    monkeypatch.setenv("GEO3D_SHARED_DATA", str(tmp_path / "elsewhere"))
    run_demo(tmp_path / "demo", stages=["kitti"])
    real = tmp_path / "elsewhere" / "kitti" / "training"
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert metrics["kitti"]["real_frame"] == f"skipped ({real} not found)"
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "## kitti" in report and "![kitti_synth](kitti_synth.png)" in report
    assert (tmp_path / "demo" / "kitti_synth.png").is_file()


def test_demo_stage_must_return_a_stage_result(tmp_path, monkeypatch):
    import geo3d.cli.demo as demo

    monkeypatch.setitem(demo.STAGE_RUNNERS, "shapes", "pathlib:Path")
    with pytest.raises(TypeError, match="returned PosixPath, expected a geo3d.report.StageResult"):
        demo.run_stage("shapes", tmp_path)
