"""Where the shared real samples live (``../shared/data``; see its README).

The samples are non-commercial and never copied into the repository: demos, tests and scripts read them from
this folder and skip what is absent.
"""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path:
    """The shared real-data folder: ``$GEO3D_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    default = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return Path(os.environ.get("GEO3D_SHARED_DATA", default))
