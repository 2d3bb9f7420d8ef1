"""A small base for dataclasses over tensors: ``.to(device)`` and ``.device``."""

from __future__ import annotations

import copy
import dataclasses
from typing import TypeVar

import torch

T = TypeVar("T", bound="TensorDataclass")


class TensorDataclass:
    """Mixin for ``@dataclass`` types whose array fields are tensors.

    ``.to(device)`` moves every tensor field (non-tensor fields are kept), returning a new object.
    """

    def to(self: T, device: torch.device | str) -> T:
        """Return a shallow copy with every tensor field on ``device`` (not re-validated: already valid)."""
        moved = copy.copy(self)
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                setattr(moved, f.name, value.to(device))
        return moved

    @property
    def device(self) -> torch.device:
        """Device of the first tensor field."""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                return value.device
        return torch.device("cpu")
