"""A model zoo registry of small untrained modules, for the demo stages' tests (``GEO3D_ZOO_DIR`` points at it).

Each entry is the shipped registry's entry of the same name (its metric names, class path, probe), with the weights
of a small module built here and the card numbers a test gives. The stages load them by name, as they load the real
weights; the tests then check the stages' numbers against the card's benchmark code run on the same weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch

from geo3d.zoo.registry import PACKAGE_DIR, file_sha256, read_registry


def tiny_detector():
    """A small untrained SECOND (the zoo test's sizes)."""
    from pipelines.detection.module import AnchorSettings, BackboneSettings, SecondDetector, VoxelSettings

    torch.manual_seed(0)
    return SecondDetector(["Car"], [0.0, -25.6, -3.0, 51.2, 25.6, 1.0], VoxelSettings(size=(0.32, 0.32, 0.2)),
                          BackboneSettings(channels=(4, 4, 4, 4, 8), z_paddings=(1, 1, 1), bev_layer_nums=(1, 1),
                                           bev_num_filters=(8, 8), bev_num_upsample_filters=(8, 8)),
                          AnchorSettings(sizes=((3.9, 1.6, 1.56),), bottom_heights=(-1.78,),
                                         matched_thresholds=(0.6,), unmatched_thresholds=(0.45,)))


def tiny_depth():
    """A small untrained depth-completion module (base 4 channels)."""
    from pipelines.depth.module import BlendSettings, DepthCompletion, NetworkSettings

    torch.manual_seed(0)
    return DepthCompletion(NetworkSettings(base_channels=4, sparse_channels=4), blend=BlendSettings(version=3))


def tiny_refiner():
    """A small surface refiner whose output does not depend on its input: every candidate voxel kept (keep logit
    20), the fused TSDF kept where observed (``trust_weight`` 1) and +1 (empty space) in the dilated band. Its mesh is
    then the same in every run (a network's output varies with the float summation order, and an untrained one's
    near-zero TSDF turns that into different triangles)."""
    from pipelines.surface.module import Extraction, NetworkSettings, SurfaceRefiner

    torch.manual_seed(0)
    model = SurfaceRefiner(NetworkSettings(base_channels=4, levels=2), extraction=Extraction(trust_weight=1.0),
                           dilation=1)
    with torch.no_grad():
        model.net.head.weight.zero_()
        model.net.head.bias.copy_(torch.tensor([1.0, 20.0]))
    return model


def tiny_giorom(statistics=None, radius: float = 0.04):
    """A small untrained GIOROM module (latent 8, one message-passing step) with the data's statistics."""
    from pipelines.simulation.gns import NetworkSettings
    from pipelines.simulation.module import GIOROMModule

    torch.manual_seed(0)
    return GIOROMModule(2, NetworkSettings(latent=8, steps=1), radius=radius, statistics=statistics)


def save_weights(module: pl.LightningModule, path: Path) -> Path:
    """``module`` as a weights-only checkpoint (what the zoo ships: weights and hyper-parameters)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": pl.__version__}, path)
    return path


def write_zoo(folder: Path, modules: dict[str, pl.LightningModule],
              cards: dict[str, dict[str, tuple[float, float]]] | None = None) -> Path:
    """A registry in ``folder`` with the shipped entries of ``modules``' names, holding those modules' weights.

    Args:
        folder: the registry folder (created).
        modules: entry name (``second_car``, ...) -> the module whose weights it ships.
        cards: entry name -> metric name -> ``(card number, atol)``; every other card number is left empty.

    Returns:
        ``folder``.
    """
    shipped = read_registry(PACKAGE_DIR / "models.json")["entries"]
    entries = {}
    for name, module in modules.items():
        entry = json.loads(json.dumps(shipped[name]))
        weights = save_weights(module, folder / entry["file"])
        entry.update(sha256=file_sha256(weights), size=weights.stat().st_size)
        entry["metrics"] = {metric: None for metric in entry["metrics"]}
        for metric, (value, atol) in (cards or {}).get(name, {}).items():
            entry["metrics"][metric] = value
            entry["metric_sources"][metric] = {"json": "test.json", "key": [metric], "atol": atol}
        entries[name] = entry
    (folder / "models.json").write_text(json.dumps({"format": 1, "entries": entries}, indent=2))
    return folder
