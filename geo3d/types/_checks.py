"""Shape and dtype checks shared by the core types (kornia-style runtime checks)."""

from __future__ import annotations

import torch


def check_tensor(name: str, x: torch.Tensor, shape: tuple, dtype: torch.dtype | None = None) -> None:
    """Check ``x`` against ``shape``, where ``None`` matches any size and ``-1`` too.

    Raises:
        ValueError: naming the field, the expected and the actual shape or dtype.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != len(shape) or any(s not in (None, -1) and s != d for s, d in zip(shape, x.shape)):
        want = "(" + ", ".join("*" if s in (None, -1) else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype}, got {x.dtype}")


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or infinity."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")


def as_tensor(x, dtype: torch.dtype) -> torch.Tensor:
    """Convert arrays/lists to a tensor of ``dtype`` (tensors keep their device)."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    return torch.as_tensor(x, dtype=dtype)
