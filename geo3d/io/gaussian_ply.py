"""3D Gaussian splatting PLY files, as written by the original 3DGS code and read by splat viewers.

One binary little-endian ``vertex`` element with float properties, in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 ... f_rest_{3(K-1)-1} opacity scale_0..2 rot_0..3

``f_dc_*`` is the DC SH coefficient per colour channel; ``f_rest_*`` holds the other K - 1 coefficients
channel-major (all of red, then green, then blue); ``opacity`` is the pre-sigmoid logit, ``scale_*`` the
log standard deviations and ``rot_*`` the quaternion ``w, x, y, z``, all as :class:`Gaussians` stores
them. Normals are written as zeros. The file is parsed with numpy structured arrays rather than a PLY
library: the layout is fixed and flat, so a header parser and one ``np.frombuffer`` cover it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_open
from geo3d.types import Gaussians

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_ENDIAN = {"binary_little_endian": "<", "binary_big_endian": ">"}
_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3")


def _parse_header(path: Path, data: bytes) -> tuple[int, np.dtype, int, bool]:
    """(vertex count, structured dtype of one vertex, byte offset of the vertex data, whether more elements
    follow the vertices)."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise InputError(path, "not a PLY file (no 'ply' magic or no 'end_header')")
    newline = data.find(b"\n", end)
    offset = newline + 1 if newline >= 0 else len(data)
    lines = data[:end].decode("ascii", errors="replace").splitlines()
    fmt = next((ln.split()[1] for ln in lines if ln.startswith("format ")), None)
    if fmt not in _ENDIAN:
        raise InputError(path, f"expected a binary PLY (3DGS files are binary_little_endian), got format {fmt!r}")
    count, fields, element, more = None, [], None, False
    for line in lines:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "element":
            if element == "vertex":
                more = True
                break  # later elements are not needed
            element = words[1]
            if element != "vertex":
                raise InputError(path, f"expected 'vertex' as the first element, got {element!r}")
            count = int(words[2]) if len(words) > 2 and re.fullmatch(r"\d+", words[2]) else None
            if count is None:
                raise InputError(path, f"bad element line {line!r}")
        elif words[0] == "property" and element == "vertex":
            if words[1] == "list" or words[1] not in _PLY_TYPES or len(words) != 3:
                raise InputError(path, f"unsupported vertex property {line!r} (3DGS uses scalar floats)")
            fields.append((words[2], _ENDIAN[fmt] + _PLY_TYPES[words[1]]))
    if count is None:
        raise InputError(path, "no 'vertex' element in the header")
    names = [name for name, _ in fields]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(path, f"vertex properties appear twice: {', '.join(duplicates)}")
    return count, np.dtype(fields), offset, more


def read_gaussian_ply(path: str | os.PathLike) -> Gaussians:
    """Read a 3DGS PLY file.

    Args:
        path: PLY file with the 3DGS vertex properties (extra properties are ignored).

    Returns:
        Gaussians: means (N, 3), quats (N, 4) ``w, x, y, z``, log_scales (N, 3), opacity_logits (N,),
        sh (N, K, 3), all float32 as stored; K = (degree + 1)^2 is inferred from the ``f_rest_*`` count.

    Raises:
        InputError: naming the file: missing, not binary PLY, truncated, required properties missing,
            an ``f_rest`` count that is no SH degree, or non-finite values.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    count, dtype, offset, more = _parse_header(path, data)
    names = set(dtype.names or ())
    missing = [name for name in _REQUIRED if name not in names]
    if missing:
        raise InputError(path, f"not a 3DGS PLY: missing vertex properties {', '.join(missing)}")
    n_rest = sum(1 for name in names if re.fullmatch(r"f_rest_\d+", name))
    k = n_rest // 3 + 1
    if n_rest % 3 or round(k**0.5) ** 2 != k:
        raise InputError(path, f"{n_rest} f_rest_* properties: expected 3 * ((degree + 1)^2 - 1), e.g. 0, 9, 24, 45")
    rest_names = [f"f_rest_{i}" for i in range(n_rest)]
    if not all(name in names for name in rest_names):
        raise InputError(path, f"f_rest_* properties must be numbered 0..{n_rest - 1}")
    if count == 0:
        raise InputError(path, "holds no Gaussians (element vertex 0)")
    needed = count * dtype.itemsize
    body = len(data) - offset
    if body < needed:
        raise InputError(path, f"truncated: {count} vertices need {needed} bytes after the header, file has {body}")
    if body > needed and not more and data[offset + needed:].strip():  # more than trailing whitespace, and no
        # other element declared: the body is not what the header says
        text = re.fullmatch(rb"[0-9eE+\-.\s]+", data[offset:offset + min(body, 4096)]) is not None
        raise InputError(path, f"{body - needed} bytes more than the {count} binary vertices the header declares "
                               + ("(the body is ASCII text: write the file as binary_little_endian)" if text else
                                  "(a wrong vertex count or property list?)"))
    vertices = np.frombuffer(data, dtype=dtype, count=count, offset=offset)

    def stack(columns: list[str]) -> torch.Tensor:
        return torch.from_numpy(np.stack([vertices[c].astype(np.float32) for c in columns], -1).reshape(count, -1))

    dc = stack(["f_dc_0", "f_dc_1", "f_dc_2"])[:, None, :]
    rest = stack(rest_names).reshape(count, 3, k - 1).transpose(1, 2) if n_rest else torch.zeros(count, 0, 3)
    try:
        return Gaussians(
            stack(["x", "y", "z"]), stack(["rot_0", "rot_1", "rot_2", "rot_3"]),
            stack(["scale_0", "scale_1", "scale_2"]), stack(["opacity"])[:, 0],
            torch.cat([dc, rest], 1).contiguous(),
        )
    except ValueError as e:
        raise InputError(path, str(e)) from e


def write_gaussian_ply(path: str | os.PathLike, gaussians: Gaussians) -> None:
    """Write Gaussians as a binary little-endian 3DGS PLY file, atomically.

    Args:
        path: output ``.ply`` file.
        gaussians: N Gaussians with sh (N, K, 3); all values are written as float32, so a read gives
            them back exactly.
    """
    g = gaussians
    n, k = g.sh.shape[0], g.sh.shape[1]
    columns = {name: g.means[:, i] for i, name in enumerate("xyz")}
    columns.update({name: torch.zeros(n) for name in ("nx", "ny", "nz")})
    columns.update({f"f_dc_{c}": g.sh[:, 0, c] for c in range(3)})
    rest = g.sh[:, 1:, :].transpose(1, 2).reshape(n, 3 * (k - 1))  # channel-major, as 3DGS stores it
    columns.update({f"f_rest_{i}": rest[:, i] for i in range(3 * (k - 1))})
    columns["opacity"] = g.opacity_logits
    columns.update({f"scale_{i}": g.log_scales[:, i] for i in range(3)})
    columns.update({f"rot_{i}": g.quats[:, i] for i in range(4)})

    vertices = np.empty(n, dtype=np.dtype([(name, "<f4") for name in columns]))
    for name, values in columns.items():
        vertices[name] = values.detach().cpu().numpy()
    header = "\n".join(
        ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
        + [f"property float {name}" for name in columns]
        + ["end_header"]
    ) + "\n"
    with atomic_open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(vertices.tobytes())
