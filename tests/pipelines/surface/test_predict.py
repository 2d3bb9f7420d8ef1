"""Batch reconstruction (``geo3d reconstruct``): per-scene outputs and summary, resume, failure isolation, worker
pools and Ray give the same metrics, the refined method from a checkpoint."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geo3d.cli import main
from geo3d.errors import InputError
from geo3d.synth.rgbd import generate_rgbd
from pipelines.surface.predict import (
    METRIC_COLUMNS,
    ReconstructOptions,
    canonical_mesh,
    reconstruct_batch,
    summary_rows,
)

SCENES = ("blob_0", "blob_1", "blob_2")
FAST = ["--voxel-fraction", "1/32", "--eval-points", "2000", "--no-progress"]
METRICS = ("chamfer", "accuracy", "completeness", "fscore", "normal_consistency")


def options(**kwargs) -> ReconstructOptions:
    return ReconstructOptions(voxel_fraction=1 / 32, eval_points=2000, **kwargs)


@pytest.fixture(scope="module")
def scenes_root(tmp_path_factory) -> Path:
    """Three synthetic blob scans (64 x 48, 4 frames), read-only for the tests (copy before breaking one)."""
    root = tmp_path_factory.mktemp("scenes")
    for i, name in enumerate(SCENES):
        generate_rgbd(root / name, object="blob", frames=4, seed=i, width=64, height=48, progress=False)
    return root


@pytest.fixture
def scenes(scenes_root, tmp_path) -> Path:
    """A private copy of the three scenes."""
    return Path(shutil.copytree(scenes_root, tmp_path / "scenes"))


def read_summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def status(out: Path, scene: str) -> dict:
    return json.loads((out / scene / "status.json").read_text())


@pytest.mark.parametrize("method", ["tsdf", "poisson"])
def test_outputs_summary_and_mean_row(scenes_root, tmp_path, method):
    out = tmp_path / "out"
    assert main(["reconstruct", "--input", str(scenes_root), "--output", str(out), "--method", method, *FAST]) == 0
    per_scene = []
    for name in SCENES:
        assert (out / name / "mesh.ply").is_file()
        record = status(out, name)
        assert record["status"] == "ok" and record["method"] == method and record["config"]["method"] == method
        assert record["voxel_size"] == pytest.approx(1 / 32)  # scene.json diagonal is 1 m
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["fscore_threshold"] == pytest.approx(0.0025 * 1.0)
        assert metrics["chamfer"] == pytest.approx((metrics["accuracy"] + metrics["completeness"]) / 2)
        assert 0 < metrics["chamfer"] < 0.2 and 0 < metrics["fscore"] <= 1 and metrics["normal_consistency"] > 0.5
        assert metrics["seconds"] > 0 and metrics["peak_rss_mib"] > 0 and metrics["fuse_seconds"] > 0
        per_scene.append(metrics)
    rows = read_summary(out)
    assert [r["scene"] for r in rows] == [*SCENES, "mean"]
    assert all(r["status"] == "ok" and r["method"] == method for r in rows[:3])
    for row, metrics in zip(rows, per_scene):
        for key in (*METRICS, "seconds"):
            assert float(row[key]) == pytest.approx(metrics[key], rel=1e-12)
    mean = rows[-1]
    assert mean["status"] == "3 ok"
    for key in (*METRICS, "seconds"):
        assert float(mean[key]) == pytest.approx(np.mean([m[key] for m in per_scene]), rel=1e-12)
    md = (out / "summary.md").read_text().splitlines()
    table = [line for line in md if line.startswith("| ")]
    assert len(table) == 1 + 3 + 1 and table[-1].startswith("| mean | 3 ok | " + method)


def test_resume_recomputes_only_unfinished_scenes(scenes_root, tmp_path):
    out = tmp_path / "out"
    first = reconstruct_batch(scenes_root, out, options(), progress=False)
    assert first.computed == list(SCENES) and not first.failed
    mtimes = {name: (out / name / "mesh.ply").stat().st_mtime_ns for name in SCENES}
    (out / "blob_1" / "status.json").unlink()  # as if the run had been killed while fusing blob_1
    again = reconstruct_batch(scenes_root, out, options(), progress=False)
    assert again.computed == ["blob_1"]
    after = {name: (out / name / "mesh.ply").stat().st_mtime_ns for name in SCENES}
    assert after["blob_0"] == mtimes["blob_0"] and after["blob_2"] == mtimes["blob_2"]
    assert after["blob_1"] > mtimes["blob_1"]
    assert [r["scene"] for r in read_summary(out)] == [*SCENES, "mean"]
    assert reconstruct_batch(scenes_root, out, options(), progress=False).computed == []
    # other settings make the old results stale; --overwrite redoes everything
    assert reconstruct_batch(scenes_root, out, options(method="poisson"), progress=False).computed == list(SCENES)
    assert main(["reconstruct", "--input", str(scenes_root), "--output", str(out), "--method", "poisson",
                 "--overwrite", *FAST]) == 0
    assert all((out / n / "mesh.ply").stat().st_mtime_ns > after[n] for n in SCENES)


def add_floater(scene: Path) -> None:
    """Put a 6 x 6-pixel patch 0.25 m in front of the object into the first depth frame: a fragment no other view
    carves away (it lies outside their truncation band)."""
    png = scene / "frame-000000.depth.png"
    depth = np.array(Image.open(png))
    rows, cols = np.nonzero(depth)
    r, c = int(rows.mean()), int(cols.mean())
    depth[r - 3:r + 3, c - 3:c + 3] = depth[r, c] - 250  # millimetres
    Image.fromarray(depth).save(png)


def test_largest_component_drops_a_floater_and_obj_output(scenes, tmp_path):
    import trimesh

    add_floater(scenes / "blob_0")
    plain, clean = tmp_path / "plain", tmp_path / "clean"
    assert main(["reconstruct", "--input", str(scenes / "blob_0"), "--output", str(plain), *FAST]) == 0
    assert main(["reconstruct", "--input", str(scenes / "blob_0"), "--output", str(clean), "--largest-component",
                 "--format", "obj", *FAST]) == 0
    assert not (clean / "blob_0" / "mesh.ply").exists()
    before = trimesh.load(plain / "blob_0" / "mesh.ply", process=False)
    after = trimesh.load(clean / "blob_0" / "mesh.obj", process=False)
    parts = sorted(before.split(only_watertight=False), key=lambda m: len(m.faces))
    assert len(parts) >= 2  # the floater is there without the option
    assert len(after.split(only_watertight=False)) == 1
    assert len(after.faces) == len(parts[-1].faces)
    assert after.bounds == pytest.approx(parts[-1].bounds, abs=1e-5)  # OBJ keeps the vertices (6 decimals)
    metrics = json.loads((clean / "blob_0" / "metrics.json").read_text())
    plain_metrics = json.loads((plain / "blob_0" / "metrics.json").read_text())
    assert metrics["accuracy"] < plain_metrics["accuracy"]  # the floater was far from the true surface
    assert status(clean, "blob_0")["config"]["largest_component"] is True
    # a different format or cleanup is a different result: the plain output is not reused for it
    again = reconstruct_batch(scenes / "blob_0", plain, options(largest_component=True), progress=False)
    assert again.computed == ["blob_0"]


def kill_after_first_scene(args: list[str], out: Path, env: dict[str, str] | None = None) -> list[str]:
    """Run ``geo3d <args>`` in its own session, SIGKILL it (parent and workers) once a first scene of ``out`` has
    its status, and return the scenes that had one."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen([sys.executable, "-m", "geo3d.cli", *args], start_new_session=True, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list(out.glob("*/status.json")):
        assert proc.poll() is None, "the batch ended before it could be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return sorted(p.parent.name for p in out.glob("*/status.json"))


def test_killed_batch_resumes_with_only_the_missing_scenes(tmp_path):
    """SIGKILL a ``--workers 2`` run of six scenes midway (parent and workers); the re-run computes only the
    scenes that had no ok status, and the outputs are then complete."""

    root = tmp_path / "six"
    names = [f"blob_{i}" for i in range(6)]
    for i, name in enumerate(names):
        generate_rgbd(root / name, object="blob", frames=6, seed=i, width=96, height=72, progress=False)
    out = tmp_path / "out"
    args = ["reconstruct", "--input", str(root), "--output", str(out), "--workers", "2", "--voxel-fraction", "1/64",
            "--eval-points", "20000", "--no-progress"]
    done = kill_after_first_scene(args, out)
    assert 1 <= len(done) < 6 and not (out / "summary.csv").exists()
    again = reconstruct_batch(root, out, ReconstructOptions(voxel_fraction=1 / 64, eval_points=20000), workers=2,
                              progress=False)
    assert sorted(again.computed) == sorted(set(names) - set(done))
    assert not again.failed and [r["scene"] for r in read_summary(out)] == [*names, "mean"]




def test_ray_address_without_a_cluster_is_one_line(scenes_root, tmp_path, monkeypatch, capsys):
    """``--ray-address auto`` with no Ray instance running: Ray's ConnectionError traceback before."""
    import tempfile

    pytest.importorskip("ray", reason="ray is not installed (pip install 'geo3d[ray]')")
    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix="ray"))  # no instance has written its address here
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    code = main(["reconstruct", "--input", str(scenes_root), "--output", str(tmp_path / "out"), "--backend", "ray",
                 "--ray-address", "auto", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--ray-address auto: cannot connect to a Ray cluster" in err, err


def test_killed_ray_batch_resumes_with_only_the_missing_scenes(tmp_path, monkeypatch):
    """The same on a Ray instance (a head started here with 2 CPUs, as a cluster would be): SIGKILL the driver of
    a ``--backend ray --ray-address`` run midway, re-run it on Ray: only the missing scenes are computed, and every
    scene's metrics (from either Ray run) equal a local run's. (One Ray instance in the suite: two starting at once
    on the busy 2-core machine timed out.)"""
    import os
    import subprocess

    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'geo3d[ray]')")
    root = tmp_path / "three"
    names = [f"blob_{i}" for i in range(3)]  # 2 CPUs: the third starts when the first is done, the kill comes then
    for i, name in enumerate(names):
        generate_rgbd(root / name, object="blob", frames=4, seed=i, width=64, height=48, progress=False)
    import tempfile

    # a short temp folder: Ray's socket paths must fit in 107 characters, pytest's tmp_path may not
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray"), "OMP_NUM_THREADS": "1"}
    port = 20000 + os.getpid() % 20000
    ray_bin = Path(sys.executable).parent / "ray"
    subprocess.run([str(ray_bin), "start", "--head", "--num-cpus", "2", "--port", str(port), "--include-dashboard",
                    "false", "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=120)
    try:
        address = "auto"  # the head started above: found through RAY_TMPDIR, as on a cluster node
        out = tmp_path / "ray_out"
        args = ["reconstruct", "--input", str(root), "--output", str(out), "--backend", "ray", "--ray-address",
                address, "--voxel-fraction", "1/64", "--eval-points", "20000", "--no-progress"]
        done = kill_after_first_scene(args, out, env)
        assert 1 <= len(done) < 3 and not (out / "summary.csv").exists()
        monkeypatch.setenv("RAY_TMPDIR", env["RAY_TMPDIR"])  # this process connects to the same head
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        try:
            again = reconstruct_batch(root, out, ReconstructOptions(voxel_fraction=1 / 64, eval_points=20000),
                                      backend="ray", progress=False)
        finally:
            ray.shutdown()
        assert not again.failed and set(again.computed) <= set(names) - set(done) and again.computed
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], env=env, capture_output=True, timeout=120)
    local = reconstruct_batch(root, tmp_path / "local", ReconstructOptions(voxel_fraction=1 / 64, eval_points=20000),
                              workers=2, progress=False)
    assert sorted(local.computed) == names
    rows_local, rows_ray = read_summary(tmp_path / "local"), read_summary(out)
    assert [r["scene"] for r in rows_ray] == [*names, "mean"]
    for a, b in zip(rows_local, rows_ray, strict=True):
        for key in METRICS:
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-9), (a["scene"], key)


def break_scenes(root: Path) -> dict[str, str]:
    """Break blob_1 (an 8-bit depth PNG) and add three broken scenes; returns scene -> expected text in the error."""
    depth = root / "blob_1" / "frame-000002.depth.png"
    Image.fromarray(np.full((48, 64), 200, np.uint8)).save(depth)
    shutil.copytree(root / "blob_2", root / "bad_pose")
    (root / "bad_pose" / "frame-000001.pose.txt").write_text("1 0 0\n0 1 0\n0 0 1\n")
    shutil.copytree(root / "blob_2", root / "no_depth")  # all depth 0: nothing lands in the volume
    for png in (root / "no_depth").glob("frame-*.depth.png"):
        Image.fromarray(np.zeros((48, 64), np.uint16)).save(png)
    (root / "empty").mkdir()
    shutil.copy(root / "blob_0" / "camera-intrinsics.txt", root / "empty")
    return {"blob_1": f"{depth}: expected a 16-bit", "bad_pose": "frame-000001.pose.txt: expected a 4x4",
            "no_depth": f"{root / 'no_depth'}: no valid depth pixel", "empty": f"{root / 'empty'}: no frame-"}


def test_a_broken_scene_is_recorded_and_the_batch_continues(scenes_root, scenes, tmp_path, capsys):
    expected = break_scenes(scenes)
    out = tmp_path / "out"
    assert main(["reconstruct", "--input", str(scenes), "--output", str(out), *FAST]) == 2
    err = capsys.readouterr().err.splitlines()
    for name, text in expected.items():
        record = status(out, name)
        assert record["status"] == "failed" and text in record["error"], record
        assert "\n" not in record["error"]
        assert not (out / name / "mesh.ply").exists()
        assert any(name in line and text in line for line in err), err
    assert err[-1].startswith(f"geo3d: error: {out}: 4 of 6 scenes failed")
    for name in ("blob_0", "blob_2"):
        assert status(out, name)["status"] == "ok"
    rows = {r["scene"]: r for r in read_summary(out)}
    assert rows["blob_1"]["status"] == "failed" and rows["blob_1"]["chamfer"] == ""
    assert expected["blob_1"] in rows["blob_1"]["error"]
    assert rows["mean"]["status"] == "2 ok"
    ok = [json.loads((out / n / "metrics.json").read_text()) for n in ("blob_0", "blob_2")]
    assert float(rows["mean"]["chamfer"]) == pytest.approx(np.mean([m["chamfer"] for m in ok]), rel=1e-12)
    # repaired scenes are retried on the next run, complete ones are not
    shutil.copy(scenes_root / "blob_1" / "frame-000002.depth.png", scenes / "blob_1")
    for name in ("bad_pose", "no_depth", "empty"):
        shutil.rmtree(scenes / name)
    result = reconstruct_batch(scenes, out, options(), progress=False)
    assert result.computed == ["blob_1"] and not result.failed
    assert [r["scene"] for r in read_summary(out)] == [*SCENES, "mean"]


def test_a_single_broken_scene_prints_one_error_line(scenes, tmp_path, capsys):
    expected = break_scenes(scenes)
    code = main(["reconstruct", "--input", str(scenes / "bad_pose"), "--output", str(tmp_path / "out"), *FAST])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("geo3d: error: ") and expected["bad_pose"] in err[0], err
    assert status(tmp_path / "out", "bad_pose")["status"] == "failed"


def test_bad_arguments_exit_2(scenes_root, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["reconstruct", "--input", str(scenes_root), "--output", out, "--method", "refined", *FAST]) == 2
    assert "needs --checkpoint" in capsys.readouterr().err
    assert main(["reconstruct", "--input", str(tmp_path), "--output", out, *FAST]) == 2
    assert "no scene folders" in capsys.readouterr().err
    # the output must not be the scenes themselves (it would overwrite their ground-truth mesh.ply)
    assert main(["reconstruct", "--input", str(scenes_root / "blob_0"), "--output", str(scenes_root), *FAST]) == 2
    assert "would overwrite the input scene" in capsys.readouterr().err


def test_two_workers_give_the_same_metrics_as_one(scenes_root, tmp_path):
    one = reconstruct_batch(scenes_root, tmp_path / "one", options(), workers=1, progress=False)
    two = reconstruct_batch(scenes_root, tmp_path / "two", options(), workers=2, progress=False)
    assert two.computed == list(SCENES) and not two.failed
    for a, b in zip(one.records, two.records):
        for key in (*METRICS, "precision", "recall"):
            assert a["metrics"][key] == pytest.approx(b["metrics"][key], rel=1e-9, abs=1e-12), (a["scene"], key)
        assert (tmp_path / "one" / a["scene"] / "mesh.ply").read_bytes() == \
            (tmp_path / "two" / b["scene"] / "mesh.ply").read_bytes()


def test_canonical_mesh_keeps_the_geometry_and_fixes_the_order():
    import trimesh

    from geo3d.types import Mesh

    sphere = trimesh.creation.icosphere(1)
    rng = np.random.default_rng(0)
    perm_v, perm_f = rng.permutation(len(sphere.vertices)), rng.permutation(len(sphere.faces))
    inverse = np.argsort(perm_v)
    shuffled = Mesh(sphere.vertices[perm_v], inverse[sphere.faces[perm_f]][:, [1, 2, 0]],
                    torch.from_numpy(sphere.vertices[perm_v] * 0.5 + 0.5).float())
    a, b = canonical_mesh(Mesh(sphere.vertices, sphere.faces)), canonical_mesh(shuffled)
    assert torch.equal(a.vertices, b.vertices) and torch.equal(a.faces, b.faces)
    torch.testing.assert_close(b.vertex_colors, b.vertices * 0.5 + 0.5)
    tm = b.to_trimesh()
    assert tm.is_watertight and tm.volume == pytest.approx(sphere.volume)  # winding kept (positive volume)


def test_refined_method_from_a_checkpoint(scenes_root, tmp_path):
    import pytorch_lightning as pl

    from pipelines.surface.module import NetworkSettings, SurfaceRefiner

    torch.manual_seed(0)
    model = SurfaceRefiner(NetworkSettings(base_channels=4, levels=2))
    ckpt = tmp_path / "refiner.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": pl.__version__}, ckpt)
    out = tmp_path / "out"
    assert main(["reconstruct", "--input", str(scenes_root), "--output", str(out), "--method", "refined",
                 "--checkpoint", str(ckpt), *FAST]) == 0
    rows = read_summary(out)
    assert [r["method"] for r in rows[:3]] == ["refined"] * 3 and rows[-1]["scene"] == "mean"
    assert status(out, "blob_0")["config"]["checkpoint"] == str(ckpt.resolve())
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.ckpt"):
        reconstruct_batch(scenes_root, tmp_path / "junk", options(method="refined", checkpoint=tmp_path / "junk.ckpt"),
                          progress=False)


def test_ray_backend_missing_gives_the_install_hint(scenes_root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(InputError, match=r"pip install 'geo3d\[ray\]'"):
        reconstruct_batch(scenes_root, tmp_path / "out", options(), backend="ray", progress=False)


def test_summary_rows_mean_skips_failed_and_metric_less_scenes():
    records = [
        {"scene": "a", "status": "ok", "method": "tsdf", "metrics": {k: 1.0 for k in METRIC_COLUMNS}},
        {"scene": "b", "status": "ok", "method": "tsdf", "metrics": {k: 3.0 for k in METRIC_COLUMNS}},
        {"scene": "c", "status": "ok", "method": "tsdf", "metrics": None, "seconds": 100.0},
        {"scene": "d", "status": "failed", "method": "tsdf", "error": "d/x.png: bad"},
    ]
    rows = summary_rows(records)
    assert [r["scene"] for r in rows] == ["a", "b", "c", "d", "mean"]
    assert rows[2]["seconds"] == 100.0 and rows[2]["chamfer"] is None
    assert all(rows[-1][k] == 2.0 for k in METRIC_COLUMNS) and rows[-1]["status"] == "2 ok"
    assert summary_rows(records[2:])[-1]["scene"] == "d"  # no scene with metrics: no mean row
