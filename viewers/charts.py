"""Small line and scatter charts drawn with PIL, for reports on machines without matplotlib.

A :class:`Chart` is one panel (title, axis labels, linear or log y axis) holding :class:`Series` drawn as
lines, steps (histograms: ``x`` are the bin edges, one more than ``y``) or point markers. :func:`render_charts`
lays panels out in a grid; :func:`write_charts_png` writes the grid atomically. Axis limits default to the
data's span, ticks are "nice" numbers (1, 2, 5 x 10^k; decades on a log axis).

Example:
    >>> chart = Chart("range", "m", "share of points", [Series("real", np.arange(5.0), np.ones(5))])
    >>> render_charts([chart]).shape
    (420, 600, 3)
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from geo3d.io.atomic import atomic_path

RGB = tuple[float, float, float]
BLUE: RGB = (0.12, 0.47, 0.71)
ORANGE: RGB = (1.0, 0.5, 0.05)
_AXIS = (60, 60, 60)
_GRID = (225, 225, 225)


@dataclass
class Series:
    """One data series.

    Attributes:
        label: legend text.
        x: (N,) float x values; for ``style="step"`` the (M + 1,) bin edges.
        y: (N,) float y values; for ``style="step"`` the (M,) bin values.
        color: RGB in [0, 1].
        style: ``"line"``, ``"step"`` or ``"points"``.
        marker: ``"o"`` or ``"x"`` for points.
    """

    label: str
    x: np.ndarray
    y: np.ndarray
    color: RGB = BLUE
    style: str = "line"
    marker: str = "o"


@dataclass
class Chart:
    """One panel: title, axis labels, series; ``log_y`` for a logarithmic y axis (values <= 0 are left out)."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    log_y: bool = False
    xlim: tuple[float, float] | None = None
    ylim: tuple[float, float] | None = None


@functools.lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k steps) covering ``[lo, hi]``, about ``target`` of them."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    return [round(start + i * step, 10) for i in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.0e}"
    return f"{v:g}"


def _limits(chart: Chart) -> tuple[float, float, float, float]:
    xs, ys = [], []
    for s in chart.series:
        x, y = np.asarray(s.x, float), np.asarray(s.y, float)
        xs.append(x[np.isfinite(x)])
        y = y[np.isfinite(y)]
        ys.append(y[y > 0] if chart.log_y else y)
    x_all = np.concatenate(xs) if xs else np.zeros(0)
    y_all = np.concatenate(ys) if ys else np.zeros(0)
    x0, x1 = chart.xlim or ((float(x_all.min()), float(x_all.max())) if len(x_all) else (0.0, 1.0))
    if chart.ylim:
        y0, y1 = chart.ylim
    elif chart.log_y:
        y0, y1 = ((10 ** math.floor(math.log10(y_all.min())), 10 ** math.ceil(math.log10(y_all.max())))
                  if len(y_all) else (1.0, 10.0))
    else:
        y0, y1 = (min(0.0, float(y_all.min())), float(y_all.max()) * 1.05) if len(y_all) else (0.0, 1.0)
    if x1 <= x0:
        x1 = x0 + 1.0
    if y1 <= y0:
        y1 = y0 * 10 if chart.log_y else y0 + 1.0
    return x0, x1, y0, y1


def _draw_chart(draw: ImageDraw.ImageDraw, chart: Chart, box: tuple[int, int, int, int]) -> None:
    left, top, right, bottom = box
    font, small = _font(15), _font(12)
    plot = (left + 62, top + 30, right - 12, bottom - 42)
    x0, x1, y0, y1 = _limits(chart)
    fy = (lambda v: math.log10(v)) if chart.log_y else (lambda v: v)
    ly0, ly1 = fy(y0), fy(y1)

    def px(x: float, y: float) -> tuple[float, float]:
        u = plot[0] + (x - x0) / (x1 - x0) * (plot[2] - plot[0])
        v = plot[3] - (fy(y) - ly0) / (ly1 - ly0) * (plot[3] - plot[1])
        return u, v

    for t in nice_ticks(x0, x1):
        u, _ = px(t, y1)
        draw.line([(u, plot[1]), (u, plot[3])], fill=_GRID)
        draw.text((u, plot[3] + 4), _fmt(t), fill=_AXIS, font=small, anchor="ma")
    if chart.log_y:
        yticks = [10.0 ** k for k in range(math.floor(ly0), math.ceil(ly1) + 1)]
    else:
        yticks = nice_ticks(y0, y1)
    for t in yticks:
        if not y0 <= t <= y1 * (1 + 1e-9):
            continue
        _, v = px(x0, t)
        draw.line([(plot[0], v), (plot[2], v)], fill=_GRID)
        draw.text((plot[0] - 4, v), _fmt(t), fill=_AXIS, font=small, anchor="rm")
    draw.rectangle(plot, outline=_AXIS)
    draw.text(((left + right) / 2, top + 6), chart.title, fill=(0, 0, 0), font=font, anchor="ma")
    draw.text(((plot[0] + plot[2]) / 2, bottom - 20), chart.xlabel, fill=_AXIS, font=small, anchor="ma")
    draw.text((left + 4, plot[1] - 18), chart.ylabel, fill=_AXIS, font=small)
    for i, s in enumerate(chart.series):
        color = tuple(int(round(c * 255)) for c in s.color)
        x, y = np.asarray(s.x, float), np.asarray(s.y, float)
        if s.style == "step":
            xs, ys = np.repeat(x, 2)[1:-1], np.repeat(y, 2)
        else:
            xs, ys = x, y
        ok = np.isfinite(xs) & np.isfinite(ys) & ((ys > 0) if chart.log_y else True)
        ok &= (xs >= x0) & (xs <= x1)
        pts = [px(a, min(max(b, y0), y1)) for a, b in zip(xs[ok], ys[ok])]
        if s.style == "points":
            for u, v in pts:
                if s.marker == "x":
                    draw.line([(u - 4, v - 4), (u + 4, v + 4)], fill=color, width=2)
                    draw.line([(u - 4, v + 4), (u + 4, v - 4)], fill=color, width=2)
                else:
                    draw.ellipse([u - 4, v - 4, u + 4, v + 4], outline=color, width=2)
        elif len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        # legend, top right inside the plot
        ly = plot[1] + 6 + 16 * i
        draw.line([(plot[2] - 150, ly + 7), (plot[2] - 130, ly + 7)], fill=color, width=3)
        draw.text((plot[2] - 125, ly), s.label, fill=(0, 0, 0), font=small)


def render_charts(charts: list[Chart], columns: int = 2, panel_size: tuple[int, int] = (600, 420)) -> np.ndarray:
    """Draw charts in a grid, row by row.

    Args:
        charts: the panels.
        columns: panels per row.
        panel_size: (width, height) pixels of a panel.

    Returns:
        (rows * height, min(columns, len(charts)) * width, 3) uint8 RGB on white.
    """
    if not charts:
        raise ValueError("render_charts: no charts")
    cols = min(columns, len(charts))
    rows = math.ceil(len(charts) / cols)
    w, h = panel_size
    image = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for i, chart in enumerate(charts):
        r, c = divmod(i, cols)
        _draw_chart(draw, chart, (c * w, r * h, (c + 1) * w, (r + 1) * h))
    return np.asarray(image).copy()


def write_charts_png(path: str | os.PathLike, charts: list[Chart], columns: int = 2,
                     panel_size: tuple[int, int] = (600, 420)) -> Path:
    """Render charts (:func:`render_charts`) and write them as a PNG atomically; returns the path."""
    path = Path(path)
    image = render_charts(charts, columns, panel_size)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path
