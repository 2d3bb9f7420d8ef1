"""Atomic file writing: write to a temporary file beside the target, then rename over it.

A crash or Ctrl-C mid-write never leaves a half-written output; readers see the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``.

    Use this with libraries that write by file name (Open3D, trimesh, h5py, PIL). The temporary
    file keeps ``path``'s suffix (or ``suffix``) so format detection by extension still works.

    Example:
        >>> import tempfile, trimesh
        >>> out = Path(tempfile.mkdtemp()) / "mesh.ply"
        >>> with atomic_path(out) as tmp:  # tmp: a hidden file beside out, same suffix
        ...     _ = trimesh.creation.box().export(tmp)
        ...     out.exists()
        False
        >>> out.exists(), len(list(out.parent.iterdir()))  # renamed into place, nothing left behind
        (True, 1)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the mode open() would
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator:
    """Open a temporary file for writing (``"w"``/``"wb"``); rename it to ``path`` when the block succeeds."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open: mode must be a write mode, got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def claim_folder(claim: str | os.PathLike, meta: dict, foreign_data: bool, what: str) -> None:
    """Record generation parameters in a folder's ``claim`` file, refusing a folder made with other ones.

    Args:
        claim: the claim file (JSON), e.g. ``OUT/.synth_depth.json``.
        meta: the parameters (JSON types); a run with different ones is refused, so resumed outputs never mix.
        foreign_data: the folder already holds outputs although it has no claim file.
        what: the generator's name for the error, e.g. ``"geo3d synth depth"``.

    Raises:
        InputError: the claim differs, or the folder holds outputs another tool wrote.
    """
    import json

    from geo3d.errors import InputError

    path = Path(claim)
    if path.is_file():
        old = json.loads(path.read_text())
        if old != meta:
            raise InputError(path, f"this folder was generated with {old}, not {meta}: use another folder or "
                                   "delete this one")
        return
    if foreign_data:
        raise InputError(path.parent, f"holds data without {path.name} (not written by {what}): use an empty folder")
    atomic_write_text(path, json.dumps(meta, indent=2) + "\n")
