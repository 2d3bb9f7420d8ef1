"""Sparse convolution and pooling (spconv 2.x) that run on CPU and CUDA tensors alike.

spconv-cu120 imports on a CPU-only machine, but its modules assume CUDA in three places and get one case
wrong; the thin subclasses here fix that at call time, so one model moves between devices with ``.to()``:

1. Algorithm. spconv fixes ``algo`` when a module is built (implicit GEMM, which asserts "implicit gemm
   only support cuda" on CPU tensors). Here every call picks ``ConvAlgo.Native`` for CPU features and
   spconv's own default (kept in ``cuda_algo``) for CUDA features.
2. Stream. Some spconv CPU code paths ask ``torch.cuda.current_stream()``, which raises without CUDA;
   :func:`_install_cpu_stream_shim` (applied once at import) makes that query return 0 there. With
   spconv 2.3.6's defaults the conv/pool forward and backward on CPU skip the query (checked: they pass
   with the query raising); the paths that do ask are voxel-count recording (``maximum_value_int_``) and
   the Python GEMM fallback (``SPCONV_CPP_GEMM`` off), so the shim is a guard, not a hot-path fix.
3. Bias. spconv fuses the bias into its inference kernel, which has no CPU version ("cpu don't support
   act and bias"); on CPU the bias is added after the sparse conv instead, in train and eval mode alike.
4. Kernel 1. spconv 2.3.6 computes kernel-1 (stride-1) convs as a matmul that reads the KRSC weight in
   the wrong layout (spconv issue #450, found here by the dense parity test); they are computed correctly
   here, so a 1x1 layer trained with spconv itself gives different outputs with these modules.

Weights keep spconv's KRSC layout, ``(out, kD, kH, kW, in)`` (2D: ``(out, kH, kW, in)``), so state
dicts are interchangeable with spconv and OpenPCDet (with the kernel-1 caveat above). The classes subclass
the spconv modules of the same name, so they work in ``SparseSequential`` and pass spconv's ``isinstance``
checks.

Coordinates are ``(V, 1 + ndim)`` int32 ``[batch, z, y, x]`` (2D: ``[batch, y, x]``) voxel indices;
``spatial_shape`` is ``[D, H, W]`` (2D: ``[H, W]``); ``tensor.dense()`` is ``(B, C, D, H, W)``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import spconv.pytorch as spconv
import torch
from spconv.pytorch import ConvAlgo, SparseConvTensor, SparseSequential
from spconv.pytorch import cppcore as _spconv_cppcore
from spconv.pytorch import ops as _spconv_ops

from geo3d.errors import require

__all__ = [
    "SparseConv2d",
    "SparseConv3d",
    "SparseConvTensor",
    "SparseInverseConv2d",
    "SparseInverseConv3d",
    "SparseMaxPool2d",
    "SparseMaxPool3d",
    "SparseSequential",
    "SubMConv2d",
    "SubMConv3d",
    "sparse_tensor",
]


def _install_cpu_stream_shim() -> None:
    """Make spconv's CUDA stream query return 0 (no stream) when CUDA is unavailable.

    A few spconv code paths call ``get_current_stream()`` -> ``torch.cuda.current_stream().cuda_stream``
    whatever the device, which raises on a machine without CUDA (see the module docstring).
    ``spconv.pytorch.ops`` imported the function by name, so both module attributes are replaced.
    With CUDA available the original is called. Idempotent.
    """
    if hasattr(_spconv_ops.get_current_stream, "__wrapped__"):
        return
    cuda_stream = _spconv_cppcore.get_current_stream

    @functools.wraps(cuda_stream)
    def get_current_stream() -> int:
        return cuda_stream() if torch.cuda.is_available() else 0

    _spconv_cppcore.get_current_stream = get_current_stream
    _spconv_ops.get_current_stream = get_current_stream


_install_cpu_stream_shim()


class _DeviceAlgo:
    """Mixin: remember spconv's default (CUDA) algorithm; use Native for CPU inputs at each call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cuda_algo = self.algo

    def _select_algo(self, x: SparseConvTensor) -> bool:
        """Set ``self.algo`` for ``x``'s device; returns True when ``x`` is on the CPU."""
        on_cpu = x.features.device.type == "cpu"
        self.algo = ConvAlgo.Native if on_cpu else self.cuda_algo
        return on_cpu


class _Conv(_DeviceAlgo):
    """Mixin for spconv convolutions: device-dependent algorithm, CPU bias and a correct 1x1 conv."""

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:
        if self.conv1x1:
            return self._conv1x1(x)
        on_cpu = self._select_algo(x)
        out = self._conv_forward(
            self.training, x, self.weight, None if on_cpu else self.bias,
            name=self.name, sparse_unique_name=self._sparse_unique_name,
        )
        if on_cpu and self.bias is not None:
            out = out.replace_feature(out.features + self.bias)
        return out

    def _conv1x1(self, x: SparseConvTensor) -> SparseConvTensor:
        """Kernel 1, stride 1: a matmul on the features, same sites.

        spconv 2.3.6 takes this shortcut too but reads the KRSC weight (out, 1, 1, 1, in) as (in, out)
        (spconv issue #450), which is wrong; here the weight is read as (out, in).
        """
        features = x.features @ self.weight.reshape(self.out_channels, self.in_channels).t()
        if self.bias is not None:
            features = features + self.bias
        return x.replace_feature(features)


class _Pool(_DeviceAlgo):
    """Mixin for spconv pooling: device-dependent algorithm."""

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:
        self._select_algo(x)
        return super().forward(x)


class SubMConv3d(_Conv, spconv.SubMConv3d):
    """Submanifold 3D convolution: output sites are exactly the input sites.

    Args:
        in_channels: input feature channels C_in.
        out_channels: output feature channels C_out.
        kernel_size: odd kernel size (int or (kD, kH, kW)).
        indice_key: name under which the rulebook is cached on the tensor and reused by later SubM layers
            with the same key (same sites, same kernel).
        bias: learn a (C_out,) bias.
        padding: accepted for spconv/OpenPCDet compatibility; it does not change a SubM conv.
        dilation: kernel dilation.

    Input/output: SparseConvTensor with features (V, C_in) -> (V, C_out), same indices.
    Weight: (C_out, kD, kH, kW, C_in).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3,
                 indice_key: str | None = None, bias: bool = False, *, padding: int | Sequence[int] = 0,
                 dilation: int | Sequence[int] = 1):
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation,
                         bias=bias, indice_key=indice_key)


class SparseConv3d(_Conv, spconv.SparseConv3d):
    """Regular (strided) sparse 3D convolution.

    An output site is active when its receptive field touches an active input site; output spatial
    shape is ``floor((D + 2 * padding - dilation * (k - 1) - 1) / stride) + 1`` per axis, as torch's conv3d.

    Args:
        in_channels: input feature channels C_in.
        out_channels: output feature channels C_out.
        kernel_size: kernel size (int or (kD, kH, kW)).
        stride: stride (int or per axis).
        padding: zero padding (int or per axis).
        indice_key: cache the rulebook under this name so a :class:`SparseInverseConv3d` can undo this layer.
        bias: learn a (C_out,) bias.
        dilation: kernel dilation.

    Weight: (C_out, kD, kH, kW, C_in).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                 indice_key: str | None = None, bias: bool = False, *, dilation: int | Sequence[int] = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, bias=bias, indice_key=indice_key)


class SparseInverseConv3d(_Conv, spconv.SparseInverseConv3d):
    """Inverse of the strided conv (or pool) registered under ``indice_key``: back to its input sites.

    Equivalent to a dense transposed convolution restricted to the input sites of that layer; use the same
    ``kernel_size`` as the layer it inverts.

    Args:
        in_channels: input feature channels C_in.
        out_channels: output feature channels C_out.
        kernel_size: kernel size of the layer being inverted.
        indice_key: key of the :class:`SparseConv3d` / :class:`SparseMaxPool3d` to invert.
        bias: learn a (C_out,) bias.

    Weight: (C_out, kD, kH, kW, C_in).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 indice_key: str, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, indice_key=indice_key, bias=bias)


class SparseMaxPool3d(_Pool, spconv.SparseMaxPool3d):
    """Max pooling over the active sites of each window.

    As in spconv (both devices), the maximum starts from 0: ``out = max(0, max of the active inputs in the
    window)``, which equals a true max pool when the input is non-negative (e.g. after a ReLU); inactive
    sites are never read as values.

    Args:
        kernel_size: window size (int or per axis).
        stride: stride; None means ``kernel_size``.
        padding: padding (int or per axis).
        indice_key: cache the rulebook under this name so a :class:`SparseInverseConv3d` can undo it.
    """

    def __init__(self, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None,
                 padding: int | Sequence[int] = 0, indice_key: str | None = None):
        super().__init__(kernel_size, stride, padding, indice_key=indice_key)


class SubMConv2d(_Conv, spconv.SubMConv2d):
    """Submanifold 2D convolution (see :class:`SubMConv3d`); weight (C_out, kH, kW, C_in)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3,
                 indice_key: str | None = None, bias: bool = False, *, padding: int | Sequence[int] = 0,
                 dilation: int | Sequence[int] = 1):
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation,
                         bias=bias, indice_key=indice_key)


class SparseConv2d(_Conv, spconv.SparseConv2d):
    """Regular (strided) sparse 2D convolution (see :class:`SparseConv3d`); weight (C_out, kH, kW, C_in)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                 indice_key: str | None = None, bias: bool = False, *, dilation: int | Sequence[int] = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, bias=bias, indice_key=indice_key)


class SparseInverseConv2d(_Conv, spconv.SparseInverseConv2d):
    """Inverse of a strided 2D sparse conv or pool (see :class:`SparseInverseConv3d`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 indice_key: str, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, indice_key=indice_key, bias=bias)


class SparseMaxPool2d(_Pool, spconv.SparseMaxPool2d):
    """Sparse 2D max pooling (see :class:`SparseMaxPool3d`)."""

    def __init__(self, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None,
                 padding: int | Sequence[int] = 0, indice_key: str | None = None):
        super().__init__(kernel_size, stride, padding, indice_key=indice_key)


def sparse_tensor(features: torch.Tensor, coords: torch.Tensor, spatial_shape: Sequence[int],
                  batch_size: int) -> SparseConvTensor:
    """Build a validated spconv ``SparseConvTensor`` from voxel features and coordinates.

    Args:
        features: (V, C) floating features, one row per active site.
        coords: (V, 1 + ndim) integer ``[batch, z, y, x]`` (2D: ``[batch, y, x]``) voxel indices; unique rows,
            ``0 <= batch < batch_size`` and ``0 <= coords[:, 1 + i] < spatial_shape[i]``. Cast to int32.
        spatial_shape: grid size ``[D, H, W]`` (2D: ``[H, W]``).
        batch_size: number of batch items B.

    Returns:
        SparseConvTensor on ``features``' device; ``.dense()`` is (B, C, *spatial_shape).

    Raises:
        ValueError: on wrong shapes or dtypes, out-of-grid or duplicate coordinates.
    """
    shape = [int(s) for s in spatial_shape]
    ndim = len(shape)
    require(1 <= ndim <= 4 and min(shape) > 0, None,
            f"sparse_tensor: spatial_shape must be 1 to 4 positive sizes, got {list(spatial_shape)}")
    require(features.dim() == 2 and features.is_floating_point(), None,
            f"sparse_tensor: features must be (V, C) floating, got {tuple(features.shape)} {features.dtype}")
    require(coords.dim() == 2 and coords.shape == (features.shape[0], 1 + ndim), None,
            f"sparse_tensor: coords must be (V, {1 + ndim}) = ({features.shape[0]}, {1 + ndim}) "
            f"[batch, *spatial], got {tuple(coords.shape)}")
    require(not coords.is_floating_point() and not coords.is_complex(), None,
            f"sparse_tensor: coords must be integer, got {coords.dtype}")
    require(coords.device == features.device, None,
            f"sparse_tensor: coords on {coords.device} but features on {features.device}")
    if coords.shape[0]:
        upper = torch.tensor([batch_size, *shape], device=coords.device)
        lo, hi = coords.amin(0), coords.amax(0)
        bad = (lo < 0) | (hi >= upper)
        require(not bool(bad.any()), None,
                f"sparse_tensor: coords column range {lo.tolist()}..{hi.tolist()} outside "
                f"[0, {upper.tolist()}) (batch_size, spatial_shape)")
        key = coords[:, 0].long()
        for axis, size in enumerate(shape):
            key = key * size + coords[:, 1 + axis].long()
        key = key.sort().values
        require(not bool((key[1:] == key[:-1]).any()), None, "sparse_tensor: coords has duplicate rows")
    return SparseConvTensor(features, coords.int().contiguous(), shape, int(batch_size))
