"""The demo report: what every demo stage returns (:class:`StageResult`) and the file it is written to.

Each pipeline's ``demo.py`` has ``run_stage(out: Path) -> StageResult`` and a one-line ``SHOWS``; ``geo3d demo``
runs the chosen stages and writes their results with :class:`Report` (``report.md`` and ``metrics.json``, both
atomic), so the command line needs no code of its own per stage. The report opens with what each stage shows, then
one section per stage; a stage that runs a zoo model puts its numbers beside the model card's
(:func:`card_checks`), each saying whether the two agree within the card's tolerance.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geo3d.io.atomic import atomic_write_text


@dataclass(frozen=True)
class CardCheck:
    """One demo number beside its zoo model card's number.

    Attributes:
        model: the zoo entry (``geo3d zoo NAME`` shows its card).
        metric: the card's metric name.
        demo: what the demo measured.
        card: the card's number; None when the card has none (pending weights, or a metric it does not carry).
        tolerance: the largest ``|demo - card|`` that agrees (the card's ``atol + rtol * |card|``); None without a
            card number.
    """

    model: str
    metric: str
    demo: float
    card: float | None
    tolerance: float | None

    @property
    def agrees(self) -> bool | None:
        """True when ``|demo - card| <= tolerance``; None without a card number."""
        if self.card is None or self.tolerance is None:
            return None
        return abs(self.demo - self.card) <= self.tolerance


def card_checks(model: str, measured: Mapping[str, float]) -> tuple[CardCheck, ...]:
    """The demo's numbers beside zoo entry ``model``'s card (:func:`geo3d.zoo.entry`).

    Args:
        model: the zoo entry's name.
        measured: card metric name -> the demo's number (the same benchmark, on the same data, as the card's).

    Returns:
        One :class:`CardCheck` per measured metric, in the given order. A metric the card has no number for gets
        ``card=None``; a card number without a stated tolerance must be met exactly.

    Raises:
        InputError: no such zoo entry, or a malformed registry.
    """
    from geo3d import zoo

    entry = zoo.entry(model)
    checks = []
    for metric, value in measured.items():
        card = entry.metrics.get(metric)
        source = entry.metric_sources.get(metric)
        tolerance = None
        if card is not None:
            tolerance = 0.0 if source is None else source.atol + source.rtol * abs(float(card))
        checks.append(CardCheck(model, metric, float(value), None if card is None else float(card), tolerance))
    return tuple(checks)


@dataclass(frozen=True)
class StageResult:
    """One demo stage's outcome.

    Attributes:
        title: the section heading in the report (the stage's name).
        text: a paragraph of Markdown: what ran and what it showed.
        metrics: name -> value (numbers, booleans or short strings), written as a table and to metrics.json.
        images: PNG (or GIF) files under the report folder, shown in this order.
        card: the stage's numbers beside its zoo models' cards (:func:`card_checks`), shown as a table.
    """

    title: str
    text: str
    metrics: dict[str, Any] = field(default_factory=dict)
    images: list[Path] = field(default_factory=list)
    card: tuple[CardCheck, ...] = ()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _card_table(checks: tuple[CardCheck, ...]) -> list[str]:
    """Markdown lines: a sentence counting the agreements, then one row per check."""
    judged = [c for c in checks if c.agrees is not None]
    models = ", ".join(dict.fromkeys(f"`{c.model}`" for c in checks))
    lines = [f"Beside the zoo card ({models}; `geo3d zoo NAME` shows it): "
             f"{sum(bool(c.agrees) for c in judged)} of {len(judged)} card numbers agree within the card's tolerance"
             + (f"; {len(checks) - len(judged)} without a card number." if len(judged) < len(checks) else "."),
             "", "| model | metric | demo | card | tolerance | agrees |", "|---|---|---|---|---|---|"]
    for c in checks:
        card = "no card number" if c.card is None else _fmt(c.card)
        tolerance = "" if c.tolerance is None else f"± {c.tolerance:.3g}"
        agrees = {True: "yes", False: "**no**", None: "-"}[c.agrees]
        lines.append(f"| {c.model} | {c.metric} | {_fmt(c.demo)} | {card} | {tolerance} | {agrees} |")
    return [*lines, ""]


class Report:
    """Collects stage results; writes ``report.md`` and ``metrics.json`` atomically after each one.

    Args:
        out: the report folder.
        shows: stage name -> one line saying what the stage shows, listed first (in this order).
    """

    def __init__(self, out: Path, shows: Mapping[str, str] | None = None):
        self.out = Path(out)
        self.shows = dict(shows or {})
        self.sections: list[str] = []
        self.metrics: dict[str, dict] = {}
        self.cards: dict[str, list[dict]] = {}
        self.seconds: dict[str, float] = {}

    def add(self, result: StageResult, seconds: float | None = None) -> None:
        """Append one stage's section (text, metrics table, card table, images) and rewrite both files.

        Args:
            result: the stage's result.
            seconds: the stage's wall time, shown under its heading (None: not shown).
        """
        lines = [f"## {result.title}", ""]
        if seconds is not None:
            lines += [f"*{seconds:.0f} s*", ""]
            self.seconds[result.title] = round(seconds, 1)
        lines += [result.text.strip(), ""]
        if result.metrics:
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in result.metrics.items()]
            lines.append("")
            self.metrics[result.title] = dict(result.metrics)
        if result.card:
            lines += _card_table(result.card)
            self.cards[result.title] = [{**asdict(c), "agrees": c.agrees} for c in result.card]
        for image in result.images:
            image = Path(image)
            shown = image.relative_to(self.out).as_posix() if image.is_relative_to(self.out) else image.as_posix()
            lines += [f"![{image.stem}]({shown})", ""]
        self.sections.append("\n".join(lines))
        self.write()

    def write(self) -> Path:
        """Write ``report.md`` and ``metrics.json`` (stage -> metrics, plus ``zoo_cards`` and ``seconds`` when
        there are any); returns the report's path."""
        import torch

        header = (f"# geo3d demo report\n\n{time.strftime('%Y-%m-%d %H:%M:%S')}, torch {torch.__version__}, "
                  f"{platform.machine()}, {torch.get_num_threads()} threads, "
                  f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}\n")
        parts = [header]
        if self.shows:
            parts.append("\n".join(["## What each stage shows", "",
                                    *(f"- **{name}**: {line}" for name, line in self.shows.items()), ""]))
        atomic_write_text(self.out / "report.md", "\n".join([*parts, *self.sections]))
        metrics: dict[str, Any] = dict(self.metrics)
        if self.cards:
            metrics["zoo_cards"] = self.cards
        if self.seconds:
            metrics["seconds"] = self.seconds
        atomic_write_text(self.out / "metrics.json", json.dumps(metrics, indent=2, default=float))
        return self.out / "report.md"
