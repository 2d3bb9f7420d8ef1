"""Checking and loading any pipeline's Lightning checkpoint, with one-line errors.

Every command and script that takes a checkpoint goes through here: :func:`check_checkpoint` before Lightning
reads a ``--ckpt_path``, :func:`load_module` for inference (``geo3d complete``, ``geo3d reconstruct``, the
real-scan report, the benchmarks). :func:`load_module` also upgrades the hyper-parameters of checkpoints written
before a module's settings were grouped into typed dataclasses: a module that changed its signature defines
``upgrade_hparams(hparams: dict) -> dict`` (a static or class method), usually with :func:`regroup_hparams`.
Both take ``zoo:NAME`` for a model zoo entry's weights (:func:`geo3d.zoo.registry.resolve`: checksum verified).
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from geo3d.errors import InputError

ModuleT = TypeVar("ModuleT")

CKPT_PATH_KEYWORDS = ("last", "best", "hpc")
"""``--ckpt_path`` values that Lightning resolves itself (not files): checked by Lightning, not here."""


def _first_sentence(text: str, limit: int = 200) -> str:
    """The first sentence of an error message's first line, at most ``limit`` characters."""
    line = (text.strip().splitlines() or [""])[0].strip()
    return line.split(". ")[0].rstrip(".")[:limit]


def _resolve(path: str | os.PathLike) -> Path:
    """``zoo:NAME`` -> the zoo entry's verified weights file; any other path as it is."""
    if str(path).startswith("zoo:"):
        from geo3d.zoo.registry import resolve

        return resolve(path)
    return Path(path)


def check_checkpoint(path: str | os.PathLike) -> None:
    """Check a ``--ckpt_path`` file before Lightning loads it, so a bad one is a one-line error.

    The file must exist and load as Lightning loads it first (``torch.load(weights_only=True)``, to read
    the hyper-parameters; zip-format files memory-mapped here, so only the pickled structure is read, not
    the tensor data) into a dict with a ``state_dict``, as every Lightning checkpoint has. Lightning's
    keywords (:data:`CKPT_PATH_KEYWORDS`, ``registry...``) and URLs (``scheme://``) are left to Lightning.

    Args:
        path: the ``--ckpt_path`` value; ``zoo:NAME`` is a model zoo entry's weights.

    Raises:
        InputError: the file is missing, is a folder, is not a readable torch checkpoint (truncated,
            corrupt, another format), holds objects that ``weights_only=True`` refuses, or holds no
            ``state_dict``; an unknown zoo name or a zoo file whose sha256 differs from the registry's.
    """
    text = str(path)
    if text in CKPT_PATH_KEYWORDS or text.startswith("registry") or "://" in text:
        return
    path = _resolve(path)
    if not path.exists():
        raise InputError(path, "checkpoint not found (--ckpt_path)")
    if not path.is_file():
        raise InputError(path, "is not a file (--ckpt_path expects a Lightning .ckpt checkpoint)")
    import zipfile

    import torch

    mmap = zipfile.is_zipfile(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means a corrupt, foreign or unsafe file
        try:  # tell a corrupt file from a readable one with objects that weights_only=True refuses
            torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        except Exception as err_full:  # noqa: BLE001
            reason = _first_sentence(str(err_full))
            raise InputError(path, f"not a readable checkpoint ({type(err_full).__name__}"
                                   f"{': ' + reason if reason else ''}); expected a .ckpt written by geo3d fit "
                                   "(truncated or corrupt?)") from None
        lines = str(err).strip().splitlines()
        reason = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else "")
        raise InputError(path, "holds objects that torch.load(weights_only=True) refuses, and Lightning loads it "
                               f"so: {_first_sentence(reason) or type(err).__name__}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        what = (f"a dict without 'state_dict' (keys: {', '.join(map(str, list(ckpt)[:5]))})"
                if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}")
        raise InputError(path, f"not a Lightning checkpoint: it holds {what}; expected a .ckpt written by geo3d fit")


def load_module(path: str | os.PathLike, cls: type[ModuleT], map_location: Any = "cpu") -> ModuleT:
    """Load a LightningModule of class ``cls`` from a checkpoint, in eval mode.

    The file is checked with :func:`check_checkpoint`; its hyper-parameters pass through
    ``cls.upgrade_hparams`` when the class defines it (checkpoints written before a signature change), then
    Lightning's ``load_from_checkpoint`` builds the module and loads the weights (strict).

    Args:
        path: a ``.ckpt`` file written by ``geo3d fit`` (or a pipeline's demo), or ``zoo:NAME`` (a model zoo entry).
        cls: the expected LightningModule class, e.g. ``pipelines.detection.module.SecondDetector``.
        map_location: where the tensors go (``"cpu"``, ``"cuda"``, a ``torch.device``).

    Returns:
        The module, in eval mode.

    Raises:
        InputError: the file is missing or unreadable, or it is not a checkpoint of ``cls`` (wrong pipeline,
            missing or unexpected weights); the message names the file and the class.
    """
    import torch

    path = _resolve(path)
    if not path.exists():
        raise InputError(path, "checkpoint not found")
    check_checkpoint(path)
    source: Any = str(path)
    try:
        if getattr(cls, "upgrade_hparams", None) is not None:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            hparams = dict(ckpt.get("hyper_parameters") or {})
            upgraded = upgrade_hparams(hparams, cls, as_dicts="_instantiator" in hparams)
            if upgraded != hparams:  # rewrite only what needs it; the file itself is never touched
                ckpt["hyper_parameters"] = upgraded
                source = io.BytesIO()
                torch.save(ckpt, source)
                source.seek(0)
        model = cls.load_from_checkpoint(source, map_location=map_location, weights_only=False)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever fails to build or load is not a usable checkpoint
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise InputError(path, f"not a {cls.__name__} checkpoint ({type(err).__name__}: {first})") from None
    return model.eval()


def upgrade_hparams(hparams: Mapping[str, Any], cls: type, as_dicts: bool = False) -> dict[str, Any]:
    """A checkpoint's hyper-parameters as ``cls``'s current signature takes them.

    Args:
        hparams: the checkpoint's ``hyper_parameters``.
        cls: the module class; its ``upgrade_hparams(hparams) -> hparams`` is applied when it has one.
        as_dicts: give the groups as plain dicts (what the Lightning CLI's jsonargparse parses: checkpoints
            written by ``geo3d fit``, and ``--ckpt_path``) instead of dataclass instances.

    Returns:
        A new dict.
    """
    upgrade = getattr(cls, "upgrade_hparams", None)
    upgraded = dict(upgrade(dict(hparams)) if upgrade is not None else hparams)
    if as_dicts:
        upgraded = {key: _as_dict(value) for key, value in upgraded.items()}
    return upgraded


def _as_dict(value: Any) -> Any:
    """A dataclass instance as a dict (what the Lightning CLI's instantiator parses); anything else as it is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def regroup_hparams(hparams: Mapping[str, Any], groups: Mapping[str, type],
                    renames: Mapping[str, tuple[str, str]] | None = None) -> dict[str, Any]:
    """Move flat hyper-parameters of an old checkpoint into the typed groups of a new signature.

    A flat key that names a field of one of the ``groups`` dataclasses (or is listed in ``renames``) moves into
    that group; the group is built as its dataclass, unknown defaults filled in. Keys that are not fields of any
    group stay flat. Groups already present (a new checkpoint) are left as they are, so the function is a
    no-op on checkpoints written after the change.

    Args:
        hparams: the checkpoint's ``hyper_parameters``.
        groups: group argument name -> its dataclass, e.g. ``{"anchors": AnchorSettings}``.
        renames: old flat key -> (group, field) for fields whose name changed.

    Returns:
        A new dict: the grouped hyper-parameters.

    Raises:
        ValueError: one flat key would go into two groups (an ambiguous mapping: give it in ``renames``).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Optim:
        ...     lr: float = 1e-3
        ...     weight_decay: float = 0.0
        >>> regroup_hparams({"lr": 0.01, "seed": 3}, {"optim": Optim})
        {'seed': 3, 'optim': Optim(lr=0.01, weight_decay=0.0)}
    """
    renames = dict(renames or {})
    owners: dict[str, tuple[str, str]] = {}
    for group, cls in groups.items():
        for field in dataclasses.fields(cls):
            if field.name in owners and field.name not in renames:
                raise ValueError(f"regroup_hparams: field {field.name!r} is in groups {owners[field.name][0]!r} "
                                 f"and {group!r}; map it in renames")
            owners.setdefault(field.name, (group, field.name))
    owners.update(renames)
    out: dict[str, Any] = {}
    moved: dict[str, dict[str, Any]] = {}
    for key, value in hparams.items():
        if key in groups or key not in owners or owners[key][0] in hparams:
            out[key] = value  # a group argument, a key of no group, or a group already there (a new checkpoint)
        else:
            group, field = owners[key]
            moved.setdefault(group, {})[field] = value
    for group, fields in moved.items():
        out[group] = groups[group](**fields)
    return out
