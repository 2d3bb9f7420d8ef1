"""The blend head's context version and its refit on a frozen network's outputs (pipelines/depth/calibration.py)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from pipelines.depth.calibration import BlendHeadCalibration, cache_blend_inputs, fit_blend_head
from pipelines.depth.data import DepthDataModule, DepthFrames
from pipelines.depth.model import BlendSettings, ContextBlendHead, DepthCompletionNet, NetworkSettings
from pipelines.depth.module import DepthCompletion


def test_context_head_starts_at_one_half_and_sees_about_120_pixels():
    torch.manual_seed(0)
    head = ContextBlendHead(3, 4).eval()
    x = torch.randn(1, 3, 16, 512)
    with torch.no_grad():
        assert torch.equal(head(x), torch.zeros(1, 1, 16, 512))  # alpha = 0.5 everywhere at the start
        torch.nn.init.normal_(head.out.weight)
        base = head(x)
        poked = x.clone()
        poked[0, :, 8, 100] += 10.0
        change = (head(poked) - base).abs()[0, 0, 8]
    # the local branch and the last 3 x 3 see 2 pixels either side; the context 7 cells of 8 pixels either side of
    # pixel 100's cell (96-103), one more through the bilinear upsampling: pixels ~31-169
    assert change[40] > 0 and change[160] > 0 and change[100] > 1e-3  # 60 pixels away
    assert torch.all(change[:24] == 0) and torch.all(change[178:] == 0)


def test_fit_blend_head_learns_which_candidate_is_right():
    """Integration says +1 and linear interpolation -1 everywhere; the truth is +1 where the first input channel is
    positive and -1 elsewhere: the fitted weight follows that channel."""
    torch.manual_seed(0)
    sign = torch.ones(1, 1, 32, 64)
    sign[..., 32:] = -1.0
    inputs = torch.cat([sign, torch.randn(1, 2, 32, 64)], 1)
    cache = [{"inputs": inputs.half(), "integrated": torch.ones(1, 1, 32, 64), "linear": -torch.ones(1, 1, 32, 64),
              "gt_log": sign, "valid": torch.ones(1, 1, 32, 64, dtype=torch.bool)}]
    head = ContextBlendHead(3, 4)
    stats = fit_blend_head(head, cache, steps=150, crop=(32, 48), batch_size=2, lr=1e-2, metric=False,
                           progress=False)
    with torch.no_grad():
        alpha = torch.sigmoid(head(inputs.float()))[0, 0]
    assert stats["loss_last"] < 0.3 * stats["loss_first"]
    assert alpha[:, :24].min() > 0.9 and alpha[:, 40:].max() < 0.1


def test_the_cache_holds_what_the_forward_pass_computes(frames):
    torch.manual_seed(0)
    net = DepthCompletionNet(NetworkSettings(base_channels=4, sparse_channels=4), blend=BlendSettings(version=3))
    torch.nn.init.normal_(net.blend.out.weight, std=0.1)
    data = DepthFrames(frames / "train", ["random:0.01", "lidar:16"], train=True)
    cache = cache_blend_inputs(net.train(), data, count=3, seed=1, max_depth=20.0, progress=False)
    assert len(cache) == 3 and net.training  # left as it was found
    again = cache_blend_inputs(net, data, count=3, seed=1, max_depth=20.0, progress=False)
    for a, b in zip(cache, again):  # the same frames, patterns and flips for the same seed
        assert all(torch.equal(a[key], b[key]) for key in a)
    item = cache[0]
    assert item["inputs"].shape == (1, 4 + 7, 64, 192) and item["inputs"].dtype == torch.float16
    # the head on the cached maps gives the forward pass's blend, to float16 rounding of its inputs
    logit = net.blend(item["inputs"].float())
    blended = torch.sigmoid(logit) * item["integrated"] + (1 - torch.sigmoid(logit)) * item["linear"]
    assert item["valid"].any() and not item["valid"][item["gt_log"] > torch.log(torch.tensor(20.0))].any()
    net.eval()
    torch.manual_seed(1)  # replay the first draw: frame and pattern follow torch's seed
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(1))[0].item()
    sample = data[index]
    with torch.no_grad():
        out = net(sample["image"][None], sample["sparse"][None])
    assert torch.allclose(out["log_depth_integrated"], item["integrated"], atol=1e-6)
    assert torch.allclose(out["log_depth"], blended.detach(), atol=2e-3)


def test_the_callback_refits_only_the_head_and_rewrites_the_checkpoints(frames, tmp_path):
    class Spy(pl.Callback):  # the weights as training left them, before the refit
        def on_train_end(self, trainer, pl_module):
            self.state = {k: v.clone() for k, v in pl_module.state_dict().items()}

    spy = Spy()
    pl.seed_everything(0)
    module = DepthCompletion(NetworkSettings(base_channels=4, sparse_channels=4), blend=BlendSettings(version=3))
    data = DepthDataModule(frames / "train", frames / "val", train_patterns=["random:0.01"],
                           val_patterns=["random:0.01"], crop=(64, 128), batch_size=2)
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                         callbacks=[checkpoints, spy, BlendHeadCalibration(frames=4, steps=30)])
    trainer.fit(module, datamodule=data)
    saved = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert saved.keys() == spy.state.keys()
    for key, before in spy.state.items():
        assert torch.equal(saved[key], module.state_dict()[key])  # the checkpoint holds the refitted model
        if key.startswith("net.blend.") and key.endswith("weight"):
            assert not torch.equal(saved[key], before), key  # the head changed ...
        elif not key.startswith("net.blend."):
            assert torch.equal(saved[key], before), key  # ... and nothing else did
    other = [p for p in tmp_path.glob("*.ckpt") if p.name != "last.ckpt"]
    assert len(other) == 1 and not list(tmp_path.glob("*.partial"))
    other_state = torch.load(other[0], map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(other_state["net.blend.out.weight"], module.net.blend.out.weight)


def test_the_callback_rejects_bad_settings():
    with pytest.raises(ValueError, match="frames, steps and batch_size"):
        BlendHeadCalibration(frames=0)


def test_fit_blend_head_takes_frames_of_different_sizes():
    def frame(h: int, w: int) -> dict[str, torch.Tensor]:
        return {"inputs": torch.randn(1, 3, h, w).half(), "integrated": torch.ones(1, 1, h, w),
                "linear": -torch.ones(1, 1, h, w), "gt_log": torch.ones(1, 1, h, w),
                "valid": torch.ones(1, 1, h, w, dtype=torch.bool)}

    head = ContextBlendHead(3, 4)
    stats = fit_blend_head(head, [frame(24, 40), frame(32, 64)], steps=20, crop=(32, 48), batch_size=4,
                           metric=False, progress=False)
    assert stats["loss_last"] < stats["loss_first"]  # the truth is the integration everywhere: alpha rises
