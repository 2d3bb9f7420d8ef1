"""``geo3d fit|validate|test|predict``: the Lightning CLI, with every setting written once.

A setting that both the data and the model need is written in the data's config only and copied into the
model by :meth:`GeoLightningCLI.add_arguments_to_parser` (jsonargparse's ``link_arguments``):

* at parse time, for settings written in the YAML (e.g. detection's class names): the model's copy is then
  not a config key at all, and ``--print_config`` shows it once, under ``data``;
* at instantiation (``apply_on="instantiate"``), for values the DataModule computes from its files (e.g. the
  simulation's connectivity radius and normaliser statistics): the model receives them as constructor
  arguments, so they are saved in its hyper-parameters and the checkpoint carries them.

A link whose target is not an argument of the chosen model class is skipped by jsonargparse, so one CLI class
serves all five pipelines: each pipeline's links name arguments only its own classes have. No model reads
``trainer.datamodule``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from geo3d.io.checkpoint import check_checkpoint


class Link(NamedTuple):
    """One data -> model link: ``source`` and ``target`` are jsonargparse keys; ``compute`` (optional) derives
    the target from the source; ``on`` is ``"parse"`` or ``"instantiate"``."""

    source: str
    target: str
    compute: Callable[..., Any] | None = None
    on: str = "parse"


def _attribute(name: str) -> Callable[[Any], Any]:
    """A compute function for instantiate-time links: the DataModule's attribute ``name``."""

    def get(datamodule: Any) -> Any:
        return getattr(datamodule, name)

    get.__name__ = f"datamodule_{name}"
    return get


LINKS: tuple[Link, ...] = (
    # --- detection ---
    # --- splatting ---
    Link("data", "model.init_args.scene", _attribute("scene"), "instantiate"),  # loaded views, background, split
    # --- surface ---
    # --- depth ---
    # --- simulation ---
    Link("data.dim", "model.init_args.dim", on="instantiate"),  # axes of the metadata's bounds
    Link("data.radius", "model.init_args.radius", on="instantiate"),  # connectivity radius, metres
    Link("data.statistics", "model.init_args.statistics", on="instantiate"),  # normaliser stats, noise included
)
"""Every data -> model link of every pipeline (a link applies when the chosen classes have both ends)."""


def _make_cli_class():
    from pytorch_lightning.cli import LightningCLI

    class GeoLightningCLI(LightningCLI):
        """LightningCLI with the project's links, and ``ckpt_path`` checked before Lightning reads it."""

        def add_arguments_to_parser(self, parser) -> None:
            for link in LINKS:
                if link.on == "instantiate":
                    parser.link_arguments(link.source, link.target, compute_fn=link.compute,
                                          apply_on="instantiate")
                else:
                    parser.link_arguments(link.source, link.target, compute_fn=link.compute)

        def parse_arguments(self, parser, args) -> None:
            super().parse_arguments(parser, args)
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if ckpt_path is not None:
                check_checkpoint(ckpt_path)

    return GeoLightningCLI


def run_lightning(args: list[str]) -> None:
    """Run the Lightning CLI (``fit``/``validate``/``test``/``predict``) with ``args``.

    A ``ckpt_path`` (from the command line or a config file) is checked with
    :func:`geo3d.io.checkpoint.check_checkpoint` right after parsing, before Lightning reads it.
    """
    from unittest import mock

    cli_class = _make_cli_class()
    # Lightning reads sys.argv (and warns when given ``args`` beside a non-empty sys.argv), so the
    # arguments go in as the process's own, also when main() is called from Python.
    with mock.patch.object(sys, "argv", ["geo3d", *args]):
        cli_class(
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"epilog": "example: geo3d fit --config configs/detection/second_tiny_cpu.yaml"},
        )
