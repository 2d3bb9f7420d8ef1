"""Residual box coder: hand-computed codes and encode/decode round trips."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.detection.box_coder import ResidualCoder

ANCHOR = torch.tensor([[10.0, -2.0, -0.95, 3.0, 4.0, 1.5, 0.0]])  # BEV diagonal 5 m


def test_hand_computed_codes():
    box = torch.tensor([[11.0, -1.5, -0.35, 6.0, 4.0, 0.75, 0.3]])
    codes = ResidualCoder().encode(box, ANCHOR)
    expected = torch.tensor([[1.0 / 5, 0.5 / 5, 0.6 / 1.5, math.log(2.0), 0.0, math.log(0.5), 0.3]])
    torch.testing.assert_close(codes, expected)
    sincos = ResidualCoder("sincos").encode(box, ANCHOR)
    assert sincos.shape == (1, 8)
    torch.testing.assert_close(sincos[0, 6:], torch.tensor([math.cos(0.3) - 1.0, math.sin(0.3)]))


@pytest.mark.parametrize("encoding", ["residual", "sincos"])
def test_round_trip(encoding):
    g = torch.Generator().manual_seed(0)
    anchors = torch.cat([torch.rand(50, 3, generator=g) * 40, torch.rand(50, 3, generator=g) * 4 + 0.5,
                         (torch.rand(50, 1, generator=g) - 0.5) * 2 * math.pi], 1)
    boxes = anchors + torch.randn(50, 7, generator=g) * torch.tensor([0.5, 0.5, 0.2, 0.3, 0.3, 0.2, 1.0])
    boxes[:, 3:6] = boxes[:, 3:6].abs() + 0.1
    boxes[:, 6] = (boxes[:, 6] + math.pi) % (2 * math.pi) - math.pi  # sincos decodes into [-pi, pi]
    coder = ResidualCoder(encoding)
    decoded = coder.decode(coder.encode(boxes, anchors), anchors)
    torch.testing.assert_close(decoded, boxes, atol=1e-4, rtol=1e-5)


def test_zero_code_is_the_anchor():
    coder = ResidualCoder()
    torch.testing.assert_close(coder.decode(torch.zeros(1, 7), ANCHOR), ANCHOR)


def test_bad_encoding_name():
    with pytest.raises(ValueError, match="encode_angle"):
        ResidualCoder("bins")
