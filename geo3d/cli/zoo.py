"""``geo3d zoo [NAME]``: the model zoo's table, or one entry's model card (Markdown, as in MODELS.md)."""

from __future__ import annotations

import argparse
import textwrap


def _cmd_zoo(args: argparse.Namespace) -> None:
    from geo3d.zoo import entries, entry
    from geo3d.zoo.cards import card, table

    print(card(entry(args.name)) if args.name else table(entries()))


def add_zoo(sub) -> None:
    """Register ``geo3d zoo`` on an argparse subparsers object."""
    p = sub.add_parser(
        "zoo", help="list the model zoo (trained weights loaded by name: zoo:NAME), or show one model card",
        description="The model zoo: trained weights that ship with geo3d. Without NAME, the table (name, pipeline, "
                    "what it does, headline metrics, size, sha256 prefix); with NAME, its card (the exact data, "
                    "training, export and evaluation commands, metrics, training time, machine, commit). Use an "
                    "entry wherever a checkpoint is taken as zoo:NAME.",
        epilog=textwrap.dedent("""\
            examples:
              geo3d zoo
              geo3d zoo second_car
              geo3d validate --config configs/detection/second_tiny_cpu.yaml --ckpt_path zoo:second_car"""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", help="an entry's name: show its card")
    p.set_defaults(func=_cmd_zoo)
