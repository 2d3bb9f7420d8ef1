"""Means over the samples of a split that are exact under DDP.

Lightning's ``self.log(..., batch_size=1)`` averages what one rank saw; with ``sync_dist=True`` it averages the ranks'
averages. Neither is the mean over the split: each rank sees its shard, and ``DistributedSampler`` pads the split
to a multiple of the world size by repeating samples, which are then counted twice. :class:`SampleMeans` instead
records each sample's metrics under the sample's id, gathers the records of every rank at the end of the epoch
(``torch.distributed.all_gather_object``), keeps one record per id and averages in float64, so every rank gets the
same numbers, equal to a single-process run over the same samples. (The detection pipeline does the same with its
KITTI evaluation: ``pipelines.detection.module``.)

No library fits: torchmetrics' mean metrics sum over ranks without knowing which samples were repeated.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch


def _gather_objects(obj: object) -> list[object]:
    """``[obj]`` in one process; every rank's ``obj`` (rank order) under an initialised process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[object] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, obj)
        return gathered
    return [obj]


class SampleMeans:
    """Per-sample metrics, averaged over the distinct samples of every rank.

    Example:
        >>> means = SampleMeans()
        >>> means.add("frame_0", {"mae": 1.0, "rmse": 2.0})
        >>> means.add("frame_1", {"mae": 3.0})
        >>> means.add("frame_0", {"mae": 1.0, "rmse": 2.0})  # a padded repeat: counted once
        >>> means.compute()
        {'mae': 2.0, 'rmse': 2.0, 'num_samples': 2.0}
    """

    def __init__(self) -> None:
        self._records: dict[Hashable, dict[str, float]] = {}

    def add(self, sample_id: Hashable, metrics: Mapping[str, float | torch.Tensor]) -> None:
        """Record one sample's metrics (scalars; tensors are read with ``.item()``).

        Args:
            sample_id: what identifies the sample in its split (a frame name, a dataset index, ``(frame,
                pattern)``); picklable. A repeat of an id already recorded replaces it (the same sample).
            metrics: name -> scalar. A sample may lack a metric that others have: each metric is averaged over
                the samples that have it.
        """
        self._records[sample_id] = {k: float(v.item() if isinstance(v, torch.Tensor) else v)
                                    for k, v in metrics.items()}

    def compute(self, count_name: str = "num_samples", reset: bool = True) -> dict[str, float]:
        """The means over the distinct samples of all ranks (collective: every rank must call it).

        Args:
            count_name: the name under which the number of distinct samples is returned (e.g. ``val/num_samples``).
            reset: forget the records afterwards (for the next epoch).

        Returns:
            name -> float64 mean over the samples that have it, and ``count_name``: the distinct samples.
        """
        merged: dict[Hashable, dict[str, float]] = {}
        for part in _gather_objects(self._records):
            merged.update(part)  # type: ignore[arg-type]
        if reset:
            self._records = {}
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for sample_id in sorted(merged, key=repr):  # a fixed order: the same float sums on every rank and run
            for name, value in merged[sample_id].items():
                sums[name] = sums.get(name, 0.0) + value
                counts[name] = counts.get(name, 0) + 1
        means = {name: sums[name] / counts[name] for name in sums}
        means[count_name] = float(len(merged))
        return means

    def reset(self) -> None:
        """Forget the records."""
        self._records = {}
