"""Residual box encoding of SECOND / VoxelNet: regression targets relative to anchors.

Centre offsets are divided by the anchor's BEV diagonal (x, y) or height (z), sizes are log-ratios, and
the yaw is either a plain residual (SECOND, trained with the sin-difference loss of ``head.py``) or the
difference of (cos, sin) pairs (``encode_angle="sincos"``, OpenPCDet's ``encode_angle_by_sincos``).
Written here because it is a few lines of tensor arithmetic that no installed library provides.
"""

from __future__ import annotations

import torch

ANGLE_ENCODINGS = ("residual", "sincos")


class ResidualCoder:
    """Encode boxes as residuals to anchors and decode them back.

    Args:
        encode_angle: ``"residual"`` (code size 7) or ``"sincos"`` (code size 8).

    Example:
        >>> coder = ResidualCoder()
        >>> anchors = torch.tensor([[10.0, 0.0, -1.0, 3.9, 1.6, 1.56, 0.0]])
        >>> boxes = torch.tensor([[10.5, 0.2, -0.9, 4.1, 1.7, 1.5, 0.3]])
        >>> torch.allclose(coder.decode(coder.encode(boxes, anchors), anchors), boxes, atol=1e-5)
        True
    """

    def __init__(self, encode_angle: str = "residual"):
        if encode_angle not in ANGLE_ENCODINGS:
            raise ValueError(f"encode_angle: expected one of {ANGLE_ENCODINGS}, got {encode_angle!r}")
        self.encode_angle = encode_angle
        self.code_size = 8 if encode_angle == "sincos" else 7

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Regression targets of ``boxes`` with respect to ``anchors``.

        Args:
            boxes: (..., 7) float32 ground-truth boxes ``x, y, z, dx, dy, dz, yaw`` (metres, radians).
            anchors: (..., 7) float32 anchors, same layout and broadcastable shape.

        Returns:
            (..., code_size) float32 targets ``xt, yt, zt, dxt, dyt, dzt`` then ``rt`` (residual) or
            ``cos_t, sin_t`` (sincos).
        """
        xa, ya, za, dxa, dya, dza, ra = torch.unbind(anchors, dim=-1)
        xg, yg, zg, dxg, dyg, dzg, rg = torch.unbind(boxes, dim=-1)
        diagonal = torch.sqrt(dxa**2 + dya**2)
        codes = [
            (xg - xa) / diagonal,
            (yg - ya) / diagonal,
            (zg - za) / dza,
            torch.log(dxg / dxa),
            torch.log(dyg / dya),
            torch.log(dzg / dza),
        ]
        if self.encode_angle == "sincos":
            codes += [torch.cos(rg) - torch.cos(ra), torch.sin(rg) - torch.sin(ra)]
        else:
            codes.append(rg - ra)
        return torch.stack(codes, dim=-1)

    def decode(self, codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Boxes from regression outputs; the inverse of :meth:`encode`.

        Args:
            codes: (..., code_size) float32 network outputs.
            anchors: (..., 7) float32 anchors.

        Returns:
            (..., 7) float32 boxes ``x, y, z, dx, dy, dz, yaw``; the yaw is not wrapped.
        """
        xa, ya, za, dxa, dya, dza, ra = torch.unbind(anchors, dim=-1)
        xt, yt, zt, dxt, dyt, dzt = torch.unbind(codes[..., :6], dim=-1)
        diagonal = torch.sqrt(dxa**2 + dya**2)
        if self.encode_angle == "sincos":
            cos_t, sin_t = codes[..., 6], codes[..., 7]
            rg = torch.atan2(sin_t + torch.sin(ra), cos_t + torch.cos(ra))
        else:
            rg = codes[..., 6] + ra
        return torch.stack(
            [
                xt * diagonal + xa,
                yt * diagonal + ya,
                zt * dza + za,
                torch.exp(dxt) * dxa,
                torch.exp(dyt) * dya,
                torch.exp(dzt) * dza,
                rg,
            ],
            dim=-1,
        )
