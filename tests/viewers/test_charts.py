"""PIL charts: tick values, layout size, and series drawn in their colours where the data are."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from viewers.charts import ORANGE, Chart, Series, nice_ticks, render_charts, write_charts_png


def test_nice_ticks():
    assert nice_ticks(0, 80) == [0, 20, 40, 60, 80]
    assert nice_ticks(-1, 4) == [-1, 0, 1, 2, 3, 4]
    assert nice_ticks(0.0, 0.16) == pytest.approx([0, 0.05, 0.1, 0.15])
    assert nice_ticks(3, 3) == [3]


def test_render_charts_layout_and_colours(tmp_path):
    orange = tuple(round(c * 255) for c in ORANGE)
    step = Chart("hist", "x", "share", [Series("a", np.arange(0, 11.0), np.linspace(0, 1, 10), ORANGE, "step")])
    scatter = Chart("log", "d", "n", [Series("b", np.array([10.0, 20.0]), np.array([100.0, 10.0]), ORANGE,
                                             "points", "x"), Series("zero", np.array([5.0]), np.array([0.0]))],
                    log_y=True)
    image = render_charts([step, scatter, step], columns=2, panel_size=(300, 200))
    assert image.shape == (400, 600, 3) and image.dtype == np.uint8
    assert tuple(image[399, 599]) == (255, 255, 255)  # the empty fourth cell stays white
    for panel in (image[:200, :300], image[:200, 300:], image[200:, :300]):
        assert (panel == orange).all(-1).sum() > 20
    path = write_charts_png(tmp_path / "c.png", [step])
    assert Image.open(path).size == (600, 420)
    with pytest.raises(ValueError, match="no charts"):
        render_charts([])
