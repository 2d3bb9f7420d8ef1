"""SampleMeans: means over the distinct samples of every rank, against a plain float64 mean over the split, in one
process and in two gloo processes whose shards overlap as DistributedSampler's padding makes them."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from geo3d.metrics.distributed import SampleMeans

SPLIT = {f"frame_{i}": {"mae": 0.1 * i + 1 / 3, "rmse": math.sqrt(i + 1)} for i in range(5)}
SPLIT["frame_4"].pop("rmse")  # a sample without one of the metrics: that metric is averaged over the others


def _expected() -> dict[str, float]:
    mae = [m["mae"] for m in SPLIT.values()]
    rmse = [m["rmse"] for m in SPLIT.values() if "rmse" in m]
    return {"mae": math.fsum(mae) / len(mae), "rmse": math.fsum(rmse) / len(rmse), "num_samples": 5.0}


def test_one_process_mean_counts_repeats_once_and_resets():
    means = SampleMeans()
    for name in [*SPLIT, "frame_0", "frame_1"]:  # the last two: repeats, as padding makes them
        means.add(name, {k: torch.tensor(v, dtype=torch.float64) for k, v in SPLIT[name].items()})
    result = means.compute()
    assert result.keys() == _expected().keys()
    for key, value in _expected().items():
        assert result[key] == pytest.approx(value, rel=1e-12, abs=0), key
    assert means.compute() == {"num_samples": 0.0}  # reset after compute


def _rank(rank: int, world: int, port: int, shards: list[list[str]], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        means = SampleMeans()
        for name in shards[rank]:
            means.add(name, SPLIT[name])
        torch.save(means.compute(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_agree_with_the_mean_over_the_split(tmp_path):
    """DistributedSampler's shards of 5 samples on 2 ranks: [0, 2, 4] and [1, 3, 0] (frame_0 repeated)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    shards = [["frame_0", "frame_2", "frame_4"], ["frame_1", "frame_3", "frame_0"]]
    mp.spawn(_rank, args=(2, port, shards, str(tmp_path / "means")), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"means.{rank}") for rank in range(2)]
    assert results[0] == results[1]  # every rank logs the same numbers
    for key, value in _expected().items():
        assert results[0][key] == pytest.approx(value, rel=1e-12, abs=0), key
