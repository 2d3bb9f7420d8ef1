"""The demo report: what every demo stage returns (:class:`StageResult`) and the file it is written to.

Each pipeline's ``demo.py`` has ``run_stage(out: Path) -> StageResult``; ``geo3d demo`` runs the chosen stages
and writes their results with :class:`Report` (``report.md`` and ``metrics.json``, both atomic), so the
command line needs no code of its own per stage.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geo3d.io.atomic import atomic_write_text


@dataclass(frozen=True)
class StageResult:
    """One demo stage's outcome.

    Attributes:
        title: the section heading in the report (the stage's name).
        text: a paragraph of Markdown: what ran and what it showed.
        metrics: name -> value (numbers, booleans or short strings), written as a table and to metrics.json.
        images: PNG (or GIF) files under the report folder, shown in this order.
    """

    title: str
    text: str
    metrics: dict[str, Any] = field(default_factory=dict)
    images: list[Path] = field(default_factory=list)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Report:
    """Collects stage results; writes ``report.md`` and ``metrics.json`` atomically after each one."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.sections: list[str] = []
        self.metrics: dict[str, dict] = {}

    def add(self, result: StageResult) -> None:
        """Append one stage's section (text, metrics table, images) and rewrite both files."""
        lines = [f"## {result.title}", "", result.text.strip(), ""]
        if result.metrics:
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in result.metrics.items()]
            lines.append("")
            self.metrics[result.title] = dict(result.metrics)
        for image in result.images:
            image = Path(image)
            shown = image.relative_to(self.out).as_posix() if image.is_relative_to(self.out) else image.as_posix()
            lines += [f"![{image.stem}]({shown})", ""]
        self.sections.append("\n".join(lines))
        self.write()

    def write(self) -> Path:
        """Write ``report.md`` and ``metrics.json``; returns the report's path."""
        import torch

        header = (f"# geo3d demo report\n\n{time.strftime('%Y-%m-%d %H:%M:%S')}, torch {torch.__version__}, "
                  f"{platform.machine()}, {torch.get_num_threads()} threads, "
                  f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}\n")
        atomic_write_text(self.out / "report.md", "\n".join([header, *self.sections]))
        atomic_write_text(self.out / "metrics.json", json.dumps(self.metrics, indent=2, default=float))
        return self.out / "report.md"
