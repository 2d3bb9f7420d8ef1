"""The zoo's table and model cards as Markdown: ``geo3d zoo [NAME]`` prints them, ``MODELS.md`` is made of them.

``MODELS.md`` at the repository root is generated (``python scripts/make_weights.py --cards``), never edited by
hand; a fast test fails when it differs from what the registry generates.
"""

from __future__ import annotations

from collections.abc import Mapping

from geo3d.zoo.registry import STAGES, Entry, MetricSource

PENDING = "pending"
"""What a card shows for a number or file that the weights' production has not written yet."""


def format_number(value: float | None) -> str:
    """A card number: ``pending`` for None, integers without a decimal point, else 4 significant digits.

    Example:
        >>> format_number(80.1234), format_number(2.0), format_number(3.0e-10), format_number(None)
        ('80.12', '2', '3e-10', 'pending')
    """
    if value is None:
        return PENDING
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def format_size(size: int | None) -> str:
    """Bytes as MB with one decimal (``pending`` for None)."""
    return PENDING if size is None else f"{size / 1e6:.1f} MB"


def _tolerance(source: MetricSource) -> str:
    parts = [f"{format_number(source.atol)}" if source.atol else "", f"{source.rtol:.2%}" if source.rtol else ""]
    text = " + ".join(p for p in parts if p)
    return f"± {text}" if text else "exact"


def table(items: Mapping[str, Entry]) -> str:
    """The zoo table: one row per entry (name, pipeline, what it does, headline metrics, size, sha256 prefix)."""
    lines = ["| name | pipeline | what it does | headline metrics | size | sha256 |", "|---|---|---|---|---|---|"]
    for item in items.values():
        headline = "; ".join(f"{metric}: {format_number(item.metrics.get(metric))}" for metric in item.headline)
        sha = PENDING if item.sha256 is None else f"`{item.sha256[:12]}`"
        lines.append(f"| `{item.name}` | {item.pipeline} | {item.task} | {headline or '-'} | {format_size(item.size)} "
                     f"| {sha} |")
    return "\n".join(lines)


def card(item: Entry) -> str:
    """One entry's model card: what it is, its file, how it was made (the exact commands) and its metrics."""
    lines = [f"## `{item.name}`", "", item.task, "",
             f"- class: `{item.class_path}` (load: `geo3d.zoo.load(\"{item.name}\")`, or `zoo:{item.name}` "
             "wherever a checkpoint is taken)",
             f"- weights: `geo3d/zoo/{item.file}`, {format_size(item.size)}, sha256 "
             f"{PENDING if item.sha256 is None else '`' + item.sha256 + '`'}",
             f"- config: {', '.join(f'`{c}`' for c in item.configs)}",
             f"- seed {format_number(item.seed)}, {format_number(item.steps)} training steps, "
             f"training time {item.training_time or PENDING}",
             f"- machine: {item.machine or PENDING}",
             f"- commit: {'`' + item.commit + '`' if item.commit else PENDING}",
             "", f"Reproduce (`python scripts/make_weights.py --only {item.name}` runs these in order; "
                 f"`--check {item.name}` re-runs the evaluation on the shipped weights):", "", "```sh"]
    for stage in STAGES:
        if item.commands.get(stage):
            lines.append(f"# {stage}")
            lines.extend(item.commands[stage])
    lines += ["```", "", "| metric | value | re-check tolerance |", "|---|---|---|"]
    for metric, value in item.metrics.items():
        source = item.metric_sources.get(metric)
        lines.append(f"| {metric} | {format_number(value)} | {_tolerance(source) if source else '-'} |")
    if item.notes:
        lines += ["", item.notes]
    return "\n".join(lines)


def models_md(items: Mapping[str, Entry]) -> str:
    """The whole ``MODELS.md``: a header, the table, then every card."""
    parts = ["# Model zoo", "",
             "<!-- Generated from geo3d/zoo/models.json by `python scripts/make_weights.py --cards`: do not edit. -->",
             "",
             "Trained weights that ship with geo3d (`geo3d/zoo/weights/`), loaded by name: `geo3d.zoo.load(NAME)` "
             "in Python, `zoo:NAME` wherever a checkpoint is taken (`geo3d validate|test|predict --ckpt_path`, "
             "`geo3d complete --ckpt`, `geo3d reconstruct --checkpoint`, the scripts). The file's sha256 is checked "
             "on load. `geo3d zoo` prints this table, `geo3d zoo NAME` a card; `make weights` retrains every entry "
             "with the commands of its card (long; not in CI).", "",
             table(items)]
    for item in items.values():
        parts += ["", card(item)]
    return "\n".join(parts) + "\n"
