"""Reading a JSON object file with one-line errors (``metadata.json``, ``transforms.json``, ``scene.json``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from geo3d.errors import InputError


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON file whose top level is an object.

    Raises:
        InputError: naming the file: missing, not valid JSON (or not UTF-8), or its top level is not an object.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "meta.json"
        >>> _ = path.write_text('{"dt": 0.0025}')
        >>> read_json_object(path)
        {'dt': 0.0025}
        >>> _ = path.write_text('[1, 2]')
        >>> read_json_object(path)
        Traceback (most recent call last):
        ...
        geo3d.errors.InputError: ...meta.json: expected a JSON object at the top level, got list
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, f"not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(path, f"expected a JSON object at the top level, got {type(data).__name__}")
    return data
