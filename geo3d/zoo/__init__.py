"""The model zoo: trained weights that ship with geo3d, loaded by name.

``models.json`` (this folder, or ``$GEO3D_ZOO_DIR``) lists every entry with its weights file
(``weights/<name>.ckpt``: a Lightning checkpoint stripped to the weights and hyper-parameters), the file's sha256,
the exact commands that made it and the metrics they measured; ``MODELS.md`` at the repository root is generated
from it (``python scripts/make_weights.py --cards``) and ``geo3d zoo [NAME]`` prints it.

Wherever a checkpoint is taken, ``zoo:NAME`` names an entry's weights (``geo3d test --ckpt_path zoo:giorom_sand``,
``geo3d complete --ckpt zoo:omni_dc``, ``geo3d reconstruct --checkpoint zoo:surface_unet``, the scripts); the
file's sha256 is checked first. In Python::

    from geo3d import zoo
    model = zoo.load("second_car")           # the LightningModule, in eval mode
    path = zoo.checkpoint_path("omni_dc")    # the verified weights file

Each pipeline's ``predict.py`` has a ``zoo_probe(module) -> dict[str, np.ndarray]``: the model's output on one fixed
input built in code; ``probes/<name>.npz`` stores it for the shipped weights, and a fast test compares.
"""

from __future__ import annotations

import importlib
from typing import Any

from geo3d.io.checkpoint import load_module
from geo3d.zoo.export import export_weights
from geo3d.zoo.registry import (
    Entry,
    MetricSource,
    checkpoint_path,
    entries,
    entry,
    registry_path,
    resolve,
    zoo_dir,
)

__all__ = ["Entry", "MetricSource", "checkpoint_path", "entries", "entry", "export_weights", "import_object",
           "load", "probe", "registry_path", "resolve", "zoo_dir"]


def import_object(dotted: str) -> Any:
    """The object a dotted path names (``"pipelines.detection.module.SecondDetector"``), imported by name."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def load(name: str, map_location: Any = "cpu"):
    """Load zoo entry ``name``'s module, in eval mode (after checking the weights' sha256).

    The class comes from the entry's ``class_path``; loading goes through :func:`geo3d.io.checkpoint.load_module`.

    Args:
        name: the entry's name (``"zoo:"`` prefix allowed).
        map_location: where the tensors go (``"cpu"``, ``"cuda"``, a ``torch.device``).

    Returns:
        The LightningModule, in eval mode.

    Raises:
        InputError: an unknown name, pending weights, a missing or changed file, or weights that do not load.
    """
    item = entry(name)
    return load_module(checkpoint_path(item.name), import_object(item.class_path), map_location=map_location)


def probe(name: str, module: Any = None) -> dict[str, Any]:
    """Run entry ``name``'s probe (its pipeline's ``zoo_probe``) on ``module`` (default: :func:`load`\\ ``(name)``).

    Returns:
        The probe's outputs: name -> numpy array.
    """
    item = entry(name)
    return import_object(item.probe)(load(item.name) if module is None else module)
