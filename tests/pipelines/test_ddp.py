"""Every Lightning pipeline under two-process DDP (gloo, CPU), as a user runs it with ``geo3d``:

* ``geo3d fit ... --trainer.strategy ddp --trainer.devices 2`` trains its tiny config for 2 steps; both ranks
  applied the same learning rate at every step and ended with the same weights
  (:class:`geo3d.rank_agreement.RankAgreement`);
* ``geo3d validate`` of the checkpoint under DDP gives the validation metrics of a one-process
  ``geo3d validate`` of the same checkpoint: 3 validation samples on 2 ranks, so the sampler pads one rank with a
  repeat, which must not count twice (``val/num_samples`` / ``val/num_frames`` 3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DDP = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]
ONE = ["--trainer.accelerator", "cpu", "--trainer.devices", "1"]


def _depth(root: Path) -> list[str]:
    from geo3d.synth.depth import generate_depth

    generate_depth(root / "train", frames=4, seed=0, width=192, height=64, progress=False)
    generate_depth(root / "val", frames=3, seed=1000, width=192, height=64, progress=False)
    return ["--config", "configs/depth/omni_tiny_cpu.yaml", "--data.train_dir", str(root / "train"),
            "--data.val_dir", str(root / "val"), "--data.crop", "[64, 192]", "--data.batch_size", "2",
            "--data.num_workers", "0", "--data.val_frames", "3", "--data.val_patterns", "[lidar:16]",
            "--model.network.base_channels", "4", "--model.network.sparse_channels", "4",
            "--trainer.callbacks.init_args.steps", "3", "--trainer.callbacks.init_args.frames", "2"]


def _surface(root: Path) -> list[str]:
    from geo3d.synth.rgbd import generate_rgbd

    for split, seeds in (("train", (0, 2)), ("val", (1, 3, 5))):
        for seed in seeds:
            generate_rgbd(root / split / f"blob_{seed}", object="blob", frames=4, seed=seed, width=64, height=48,
                          progress=False)
    return ["--config", "configs/surface/unet_tiny_cpu.yaml", "--data.train_dir", str(root / "train"),
            "--data.val_dir", str(root / "val"), "--data.voxel_fraction", "0.03125", "--data.batch_size", "1",
            "--data.dilation", "1", "--model.network.base_channels", "4", "--model.network.levels", "2",
            "--model.evaluation.eval_points", "1000", "--model.extraction.keep_threshold", "0.05"]


def _simulation(root: Path) -> list[str]:
    from pipelines.simulation.data import write_analytic_dataset

    data = write_analytic_dataset(root / "springs", "springs", {"train": 2, "valid": 3, "test": 1}, steps=12,
                                  side=3, radius=0.17)
    config = root / "giorom.yaml"
    config.write_text(yaml.safe_dump({
        "seed_everything": 0,
        "trainer": {"enable_progress_bar": False, "enable_model_summary": False},
        "model": {"class_path": "pipelines.simulation.module.GIOROMModule",
                  "init_args": {"network": {"latent": 8, "steps": 1}, "query": {"latent": 6},
                                "evaluation": {"val_rollout_steps": 4}}},
        "data": {"class_path": "pipelines.simulation.data.SimulationDataModule",
                 "init_args": {"path": str(data), "batch_size": 2, "max_train_windows": 4,
                                "max_val_trajectories": 3}}}))
    return ["--config", str(config)]


def _detection(root: Path) -> list[str]:
    from geo3d.synth.kitti import generate_kitti

    data = generate_kitti(root / "kitti", frames=4, val_frames=3, seed=0, workers=1)
    return ["--config", "configs/detection/second_tiny_cpu.yaml", "--data.data_dir", str(data),
            "--data.batch_size", "1", "--data.eval_batch_size", "1"]


PIPELINES = {"depth": (_depth, "val/num_samples"), "surface": (_surface, "val/num_samples"),
             "simulation": (_simulation, "val/num_samples"), "detection": (_detection, "val/num_frames")}


def _geo3d(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "geo3d.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


# Each case starts 5 processes (2 + 2 + 1; the detection and surface ones import spconv, about 5 CPU-s each): in
# `make test` the simulation case runs, the other three are `slow` (`make test-slow`), to keep the suite in 5 minutes.
# Their shared parts run fast elsewhere too: SampleMeans in two gloo processes (tests/geo3d/metrics).
FAST = {"simulation"}


@pytest.mark.parametrize("pipeline", [name if name in FAST else pytest.param(name, marks=pytest.mark.slow)
                                      for name in sorted(PIPELINES)])
def test_two_ranks_agree_and_validate_as_one_process(pipeline, tmp_path):
    make_data, count_key = PIPELINES[pipeline]
    common = make_data(tmp_path / "data")
    out, ranks = tmp_path / "run", tmp_path / "ranks"
    run = ["--trainer.default_root_dir", str(out), "--trainer.logger.class_path", "pytorch_lightning.loggers.CSVLogger",
           "--trainer.logger.init_args.save_dir", str(out), "--trainer.enable_progress_bar", "false"]
    _geo3d("fit", *common, *DDP, *run, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0",
           "--trainer.callbacks+=geo3d.rank_agreement.RankAgreement", "--trainer.callbacks.init_args.out_dir",
           str(ranks))
    first, second = (json.loads((ranks / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (first["rank"], second["rank"], first["world_size"]) == (0, 1, 2)
    assert first["global_step"] == second["global_step"] == 2
    assert len(first["lrs"]) == 2 and first["lrs"] == second["lrs"]  # the same learning rate at every step
    assert first["weights_sha256"] == second["weights_sha256"]  # and the same weights at the end

    checkpoint = sorted(out.rglob("*.ckpt"))[-1]
    _geo3d("validate", *common, *DDP, *run, "--ckpt_path", str(checkpoint), "--metrics_json",
           str(tmp_path / "ddp.json"))
    _geo3d("validate", *common, *ONE, *run, "--ckpt_path", str(checkpoint), "--metrics_json",
           str(tmp_path / "one.json"))
    ddp, one = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("ddp", "one"))
    assert ddp[count_key] == one[count_key] == 3  # 3 samples: the padded repeat counted once
    assert ddp.keys() == one.keys() and len(ddp) > 3
    for key, value in one.items():
        assert ddp[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
