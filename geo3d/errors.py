"""Input errors that name the file, the field and what was expected.

Readers raise :class:`InputError` (a ``ValueError``) so the command line can print one line and exit
with code 2 instead of a traceback.
"""

from __future__ import annotations

from os import PathLike


class InputError(ValueError):
    """Bad input data: ``InputError(path, "what is wrong")`` prints as ``path: what is wrong``."""

    def __init__(self, path: str | PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


def require(condition: bool, path: str | PathLike | None, problem: str) -> None:
    """Raise :class:`InputError` with ``problem`` unless ``condition`` holds."""
    if not condition:
        raise InputError(path, problem)
