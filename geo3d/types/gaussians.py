"""3D Gaussians as 3D Gaussian splatting stores them (activations applied by the renderer)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from geo3d.types._checks import as_tensor, check_finite, check_tensor
from geo3d.types.base import TensorDataclass

SH_C0 = 0.28209479177387814  # Y_0^0, converts a DC SH coefficient to an RGB offset around 0.5


@dataclass
class Gaussians(TensorDataclass):
    """A set of N anisotropic 3D Gaussians.

    Attributes:
        means: (N, 3) float32 world frame, metres.
        quats: (N, 4) float32 rotations ``w, x, y, z`` (not necessarily normalised).
        log_scales: (N, 3) float32 natural log of the standard deviations, metres.
        opacity_logits: (N,) float32, opacity = sigmoid(logit).
        sh: (N, K, 3) float32 spherical-harmonic coefficients, K = (degree + 1)^2; ``sh[:, 0]`` is DC.
    """

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    opacity_logits: torch.Tensor
    sh: torch.Tensor

    def __post_init__(self) -> None:
        self.means = as_tensor(self.means, torch.float32)
        check_tensor("Gaussians.means", self.means, (None, 3))
        n = self.means.shape[0]
        self.quats = as_tensor(self.quats, torch.float32)
        self.log_scales = as_tensor(self.log_scales, torch.float32)
        self.opacity_logits = as_tensor(self.opacity_logits, torch.float32).reshape(-1)
        self.sh = as_tensor(self.sh, torch.float32)
        if self.sh.dim() == 2:
            self.sh = self.sh[:, None, :]
        check_tensor("Gaussians.quats", self.quats, (n, 4))
        check_tensor("Gaussians.log_scales", self.log_scales, (n, 3))
        check_tensor("Gaussians.opacity_logits", self.opacity_logits, (n,))
        check_tensor("Gaussians.sh", self.sh, (n, None, 3))
        k = self.sh.shape[1]
        if int(round(k**0.5)) ** 2 != k:
            raise ValueError(f"Gaussians.sh: coefficient count {k} is not a square (degree + 1)^2")
        for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
            check_finite(f"Gaussians.{name}", getattr(self, name))
        if n and bool((self.quats.norm(dim=1) < 1e-12).any()):
            raise ValueError("Gaussians.quats: zero-length quaternion")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        """Spherical-harmonics degree: sqrt(K) - 1."""
        return int(round(self.sh.shape[1] ** 0.5)) - 1

    @property
    def scales(self) -> torch.Tensor:
        """(N, 3) float32 standard deviations, metres."""
        return self.log_scales.exp()

    @property
    def opacities(self) -> torch.Tensor:
        """(N,) float32 opacities in (0, 1)."""
        return torch.sigmoid(self.opacity_logits)

    @property
    def unit_quats(self) -> torch.Tensor:
        """(N, 4) float32 normalised ``w, x, y, z`` quaternions."""
        return F.normalize(self.quats, dim=-1)

    def base_colors(self) -> torch.Tensor:
        """(N, 3) float32 view-independent RGB from the DC coefficient, clamped to [0, 1]."""
        return (self.sh[:, 0] * SH_C0 + 0.5).clamp(0, 1)

    @classmethod
    def from_points(
        cls, points: torch.Tensor, colors: torch.Tensor | None = None, scale: float = 0.01, sh_degree: int = 0,
        opacity: float = 0.1,
    ) -> Gaussians:
        """Isotropic Gaussians at ``points`` ((N, 3) metres), coloured by ``colors`` ((N, 3) in [0, 1])."""
        points = as_tensor(points, torch.float32)
        n = points.shape[0]
        quats = torch.zeros(n, 4, device=points.device)
        quats[:, 0] = 1
        sh = torch.zeros(n, (sh_degree + 1) ** 2, 3, device=points.device)
        if colors is not None:
            sh[:, 0] = (as_tensor(colors, torch.float32).to(points.device) - 0.5) / SH_C0
        logit = torch.logit(torch.tensor(opacity)).item()
        return cls(
            points, quats, torch.full((n, 3), float(torch.tensor(scale).log()), device=points.device),
            torch.full((n,), logit, device=points.device), sh,
        )
