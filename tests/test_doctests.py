"""Every ``>>>`` example in the project's docstrings runs, and must print what it shows.

The modules are found by reading the sources for ``>>>`` (so importing only those), then each is run through
:func:`doctest.testmod` (``ELLIPSIS`` and ``NORMALIZE_WHITESPACE`` on). A module whose examples fail is one test
failure, with doctest's report of the first failures.
"""

from __future__ import annotations

import doctest
import importlib
import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("geo3d", "ops", "pipelines", "viewers")


def modules_with_examples() -> list[str]:
    """Dotted names of the project modules whose source holds a ``>>>`` prompt."""
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" in path.parts or ">>> " not in path.read_text():
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names.append(".".join(parts))
    return names


MODULES = modules_with_examples()


def test_examples_are_found():
    assert "geo3d.io.checkpoint" in MODULES and len(MODULES) >= 10


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    report = io.StringIO()
    with redirect_stdout(report):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                                 report=True)
    assert result.attempted > 0, f"{name}: has '>>> ' in its source but doctest found no example"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed\n" \
                               f"{report.getvalue()[:4000]}"
