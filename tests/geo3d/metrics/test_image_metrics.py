"""PSNR and SSIM against hand computation (the definition; SSIM written out per window), and what
``lpips_status`` says in each case it distinguishes."""

from __future__ import annotations

import math

import pytest
import torch

from geo3d.metrics import lpips_status, psnr, ssim


def test_psnr_matches_the_definition_full_and_masked():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 8, 9, 3, generator=g, dtype=torch.float64)
    b = torch.rand(2, 8, 9, 3, generator=g, dtype=torch.float64)
    mse = ((a - b) ** 2).reshape(2, -1).mean(1)
    assert torch.allclose(psnr(a, b), -10 * torch.log10(mse), rtol=0, atol=1e-12)
    mask = torch.zeros(2, 8, 9, dtype=torch.bool)
    mask[:, 2:5, 3:7] = True
    sel = [((a[i][mask[i]] - b[i][mask[i]]) ** 2).mean() for i in range(2)]
    assert torch.allclose(psnr(a, b, mask), -10 * torch.log10(torch.stack(sel)), rtol=0, atol=1e-12)
    assert math.isinf(float(psnr(a, a)[0]))
    # a constant error of 0.1 everywhere is 20 dB
    assert float(psnr(a.clamp(0, 0.8), a.clamp(0, 0.8) + 0.1)[0]) == pytest.approx(20.0, abs=1e-9)


def _reference_ssim_interior(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Wang et al.'s SSIM written out per window (unfold), 11 x 11 Gaussian (sigma 1.5), float64, averaged
    over the pixels whose whole window lies inside the image; x, y (B, H, W, C) -> (B,)."""
    r = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-r**2 / (2 * 1.5**2))
    w = (g[:, None] * g[None, :]).flatten()
    w = w / w.sum()
    px = torch.nn.functional.unfold(x.permute(0, 3, 1, 2), 11)  # (B, C*121, L)
    py = torch.nn.functional.unfold(y.permute(0, 3, 1, 2), 11)
    b, c = x.shape[0], x.shape[3]
    px, py = px.reshape(b, c, 121, -1), py.reshape(b, c, 121, -1)
    ww = w[None, None, :, None]
    mx, my = (ww * px).sum(2), (ww * py).sum(2)
    vx, vy = (ww * px * px).sum(2) - mx**2, (ww * py * py).sum(2) - my**2
    cxy = (ww * px * py).sum(2) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.reshape(b, -1).mean(1)


def test_ssim_matches_a_written_out_reference_and_masks():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 32, 40, 3, generator=g, dtype=torch.float64)
    b = (a + 0.2 * torch.rand(2, 32, 40, 3, generator=g, dtype=torch.float64)).clamp(0, 1)
    ref = _reference_ssim_interior(b, a)
    # Away from the 5-pixel border the window never reaches the padding, so the means agree to rounding.
    interior = torch.zeros(2, 32, 40, dtype=torch.bool)
    interior[:, 5:-5, 5:-5] = True
    assert torch.allclose(ssim(b, a, interior), ref.double(), rtol=0, atol=1e-10)
    ours = ssim(b, a)
    assert torch.allclose(ssim(a, a), torch.ones(2, dtype=torch.float64), atol=1e-12)
    full = torch.ones(2, 32, 40, dtype=torch.bool)
    assert torch.allclose(ssim(b, a, full), ours, atol=1e-12)
    left = torch.zeros(2, 32, 40, dtype=torch.bool)
    left[:, :, :14] = True  # 6 px from the cut: outside the 11 x 11 window's reach
    c = a.clone()
    c[:, :, 20:] = 1 - c[:, :, 20:]  # ruin the right half only
    assert float(ssim(c, a, left)[0]) > 0.99 > float(ssim(c, a)[0])


def test_shape_errors():
    with pytest.raises(ValueError, match="one shape"):
        psnr(torch.zeros(1, 4, 4, 3), torch.zeros(1, 4, 5, 3))
    with pytest.raises(ValueError, match="mask"):
        ssim(torch.zeros(1, 4, 4, 3), torch.zeros(1, 4, 4, 3), torch.ones(1, 4, 5))


def test_lpips_status_in_each_case(tmp_path, monkeypatch):
    """No package -> not available; the package but no backbone weights in the hub cache -> not available,
    naming the folder; weights there -> available (nothing is downloaded in any case)."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "lpips" else real_find_spec(name, *a))
    assert lpips_status() == (False, "LPIPS skipped: the lpips package is not installed")

    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "lpips" else real_find_spec(name, *a))
    checkpoints = tmp_path / "checkpoints"
    assert lpips_status() == (False, f"LPIPS skipped: no AlexNet/VGG weights in {checkpoints} (they would be "
                                     "downloaded)")
    checkpoints.mkdir()
    (checkpoints / "resnet18-f37072fd.pth").write_bytes(b"")  # another backbone does not count
    assert lpips_status()[0] is False
    (checkpoints / "alexnet-owt-7be5be79.pth").write_bytes(b"")
    assert lpips_status() == (True, "LPIPS available")
