"""Strip a Lightning checkpoint to what loading a model needs: the zoo's weights files.

A training checkpoint also holds the optimiser's moments (twice the weights, for Adam), learning-rate schedulers,
the loops' and callbacks' states. A zoo file keeps only what :func:`geo3d.io.checkpoint.load_module`, Lightning's
``load_from_checkpoint`` and ``geo3d validate|test|predict --ckpt_path`` read, unchanged (tensors as they are), so
the same loaders take both.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from geo3d.errors import InputError

KEPT_KEYS = ("state_dict", "hyper_parameters", "hparams_name", "datamodule_hyper_parameters",
             "datamodule_hparams_name", "pytorch-lightning_version", "epoch", "global_step")
"""The checkpoint keys a zoo file keeps: the weights, the hyper-parameters (with the Lightning CLI's
``_class_path``/``_instantiator``), the DataModule's, the Lightning version (for its checkpoint migrations), and
the epoch and step the training stopped at. Dropped: ``optimizer_states``, ``lr_schedulers``, ``loops``,
``callbacks`` and anything else."""


def export_weights(ckpt: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``ckpt`` stripped to :data:`KEPT_KEYS` to ``out``, atomically.

    Args:
        ckpt: a Lightning checkpoint (``geo3d fit`` output). Read with ``weights_only=False``: give only
            checkpoints you trust (your own training's).
        out: the weights file to write (its folder is created).

    Returns:
        ``out`` as a Path.

    Raises:
        InputError: ``ckpt`` is missing, unreadable, or has no ``state_dict``.
    """
    import torch

    from geo3d.io.atomic import atomic_path

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise InputError(ckpt, "checkpoint not found (export_weights)")
    try:
        full = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle: not a usable checkpoint
        raise InputError(ckpt, f"not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(full, dict) or "state_dict" not in full:
        raise InputError(ckpt, "not a Lightning checkpoint (no state_dict)")
    stripped = {key: full[key] for key in KEPT_KEYS if key in full}
    buffer = io.BytesIO()  # saved to a buffer, not to the temporary path: torch.save names the zip's root folder
    torch.save(stripped, buffer)  # after the file, so the same checkpoint would get a new sha256 at each export
    out = Path(out)
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(buffer.getvalue())
    return out
