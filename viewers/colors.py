"""Colours for the viewers: named colours, the house palette, and scalar -> RGB colormaps.

The colormap tables come from kornia (``kornia.color.ColorMap``, already a dependency), sampled once
into a 256-entry lookup table; values are normalised between robust percentiles so a few outliers
(a LiDAR return far below the ground, a saturated reflector) do not flatten the colours of the rest.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

RGB = tuple[float, float, float]

BACKGROUND: RGB = (0.06, 0.06, 0.08)
"""Background of every headless render: near-black, so colormapped points and boxes stand out."""
TEXT: RGB = (0.95, 0.95, 0.95)
"""Title, legend and box-tag text."""
GROUND_TRUTH: RGB = (0.0, 1.0, 0.0)
"""Ground-truth boxes: pure green (the colormaps' greens are never this saturated)."""
PREDICTION: RGB = (1.0, 0.0, 0.0)
"""Predicted boxes: pure red."""
MESH_DEFAULT: RGB = (0.78, 0.76, 0.72)
"""Meshes without vertex colours: warm light grey."""
POINT_SPAN = (0.1, 0.92)
"""Part of the colormap used for points: turbo's near-black ends vanish on the dark background."""

NAMED: dict[str, RGB] = {
    "green": GROUND_TRUTH, "red": PREDICTION, "orange": (1.0, 0.55, 0.0), "yellow": (1.0, 0.9, 0.0),
    "blue": (0.2, 0.45, 1.0), "cyan": (0.0, 0.9, 0.9), "magenta": (1.0, 0.0, 1.0), "white": (1.0, 1.0, 1.0),
    "grey": (0.6, 0.6, 0.6), "gray": (0.6, 0.6, 0.6), "black": (0.0, 0.0, 0.0),
}


def parse_color(color: str | tuple | list | np.ndarray, field: str = "color") -> RGB:
    """Read a colour given as a name (``"green"``), ``"#rrggbb"`` or an RGB triple in [0, 1].

    Args:
        color: the colour.
        field: the argument name to put in the error message.

    Returns:
        (r, g, b) floats in [0, 1].

    Raises:
        ValueError: naming ``field`` when the colour is not one of the accepted forms.
    """
    if isinstance(color, str):
        text = color.strip().lower()
        if text in NAMED:
            return NAMED[text]
        if len(text) == 7 and text.startswith("#"):
            try:
                return tuple(int(text[i : i + 2], 16) / 255.0 for i in (1, 3, 5))  # type: ignore[return-value]
            except ValueError:
                pass
        raise ValueError(f"{field}: unknown colour {color!r}; expected one of {', '.join(sorted(NAMED))}, "
                         "'#rrggbb' or an (r, g, b) triple in [0, 1]")
    rgb = np.asarray(color, dtype=np.float64).reshape(-1)
    if rgb.shape != (3,) or not np.isfinite(rgb).all() or rgb.min() < 0 or rgb.max() > 1:
        raise ValueError(f"{field}: expected an (r, g, b) triple in [0, 1], got {color!r}")
    return (float(rgb[0]), float(rgb[1]), float(rgb[2]))


@lru_cache(maxsize=8)
def colormap_table(name: str = "turbo") -> np.ndarray:
    """A colormap as a lookup table.

    Args:
        name: a kornia colormap name (``"turbo"``, ``"viridis"``, ``"plasma"``, ...).

    Returns:
        (256, 3) float64 RGB in [0, 1], low values first.
    """
    from kornia.color import ColorMap

    try:
        table = ColorMap(base=name, num_colors=256, dtype=torch.float64).colors
    except ValueError as e:
        raise ValueError(f"colormap: {e}") from None
    return table.T.numpy().clip(0.0, 1.0)


def apply_colormap(
    values: np.ndarray | torch.Tensor,
    name: str = "turbo",
    percentiles: tuple[float, float] = (1.0, 99.0),
    span: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """Map scalars to colours, normalised between two percentiles of the values.

    Args:
        values: (N,) scalars (any float dtype), e.g. heights in metres or reflectances.
        name: colormap name, see :func:`colormap_table`.
        percentiles: the values at these percentiles map to the two ends of the colormap; values
            beyond them are clamped. ``(0, 100)`` uses the plain min and max.
        span: the part of the colormap to use, ``(start, end)`` in [0, 1].

    Returns:
        (N, 3) float64 RGB in [0, 1]. A constant input maps to the middle of the colormap.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    table = colormap_table(name)
    if values.size == 0:
        return np.zeros((0, 3))
    lo, hi = np.percentile(values, percentiles)
    if hi - lo < 1e-12:
        t = np.full(values.shape, 0.5)
    else:
        t = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    t = span[0] + t * (span[1] - span[0])
    return table[np.round(t * (len(table) - 1)).astype(np.int64)]
