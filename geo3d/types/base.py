"""A small base for dataclasses over tensors: ``.to(device)`` and ``.numpy()``-free field mapping."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import torch

T = TypeVar("T", bound="TensorDataclass")


class TensorDataclass:
    """Mixin for ``@dataclass`` types whose array fields are tensors.

    ``.to(device)`` moves every tensor field (non-tensor fields are kept), returning a new object.
    """

    def to(self: T, device: torch.device | str) -> T:
        """Return a copy with every tensor field on ``device``."""
        changes = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                changes[f.name] = value.to(device)
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @property
    def device(self) -> torch.device:
        """Device of the first tensor field."""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                return value.device
        return torch.device("cpu")
