"""Checks of the output paths a command is given, made before any work: a one-line error naming the path instead
of a ``FileExistsError`` / ``NotADirectoryError`` traceback when a folder would have to be created where a file is.
"""

from __future__ import annotations

from pathlib import Path

from geo3d.errors import InputError


def check_output_folder(path: str | Path) -> None:
    """An output folder must be a folder or not exist yet, and its nearest existing parent must be a folder.

    Raises:
        InputError: ``path`` (or the parent it would be created in) is a file.
    """
    path = Path(path)
    for existing in (path, *path.parents):
        if existing.exists():
            if existing.is_dir():
                return
            if existing == path:
                raise InputError(path, "exists and is not a folder (expected an output folder: a new path or an "
                                       "existing folder)")
            raise InputError(existing, f"is a file, so the output folder {path} cannot be created in it")


def check_output_file(path: str | Path) -> None:
    """An output file may exist (it is replaced) but must not be a folder, and the folder it goes in must be a
    folder or creatable (its nearest existing parent a folder).

    Raises:
        InputError: ``path`` is a folder, or one of its parents is a file.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder (expected an output file)")
    for existing in path.parents:
        if existing.exists():
            if existing.is_dir():
                return
            raise InputError(existing, f"is a file, so the output file {path} cannot be written in it")
