"""``geo3d fit|validate|test|predict``: the Lightning CLI, with every setting written once.

A setting that both the data and the model need is written in the data's config only and copied into the
model by :meth:`GeoLightningCLI.add_arguments_to_parser` (jsonargparse's ``link_arguments``):

* at parse time, for settings written in the YAML (e.g. detection's class names): the model's copy is then
  not a config key at all, and ``--print_config`` shows it once, under ``data``;
* at instantiation (``apply_on="instantiate"``), for values the DataModule computes from its files (e.g. the
  simulation's connectivity radius and normaliser statistics): the model receives them as constructor
  arguments, so they are saved in its hyper-parameters and the checkpoint carries them. Such a link names the
  DataModule's attribute (``data.radius``), so it is skipped for DataModules without one.

jsonargparse skips a link whose target is not an argument of the chosen model class, and an instantiate-time
link whose source (``data.<attribute>``) the chosen DataModule lacks, so one CLI class serves all five pipelines:
each pipeline's links name arguments and attributes only its own classes have. (A source given as the whole
``data`` with a compute function would be computed for every DataModule: do not write links that way.) No
model reads ``trainer.datamodule``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from geo3d.io.checkpoint import check_checkpoint, upgrade_hparams


class Link(NamedTuple):
    """One data -> model link: ``source`` and ``target`` are jsonargparse keys; ``compute`` (optional) derives
    the target from the source; ``on`` is ``"parse"`` or ``"instantiate"``."""

    source: str
    target: str
    compute: Callable[..., Any] | None = None
    on: str = "parse"


LINKS: tuple[Link, ...] = (
    # --- detection ---
    Link("data.init_args.class_names", "model.init_args.class_names"),
    Link("data.init_args.point_cloud_range", "model.init_args.point_cloud_range"),
    # --- splatting ---
    Link("data.scene", "model.init_args.scene", on="instantiate"),  # the loaded views, background and split
    # --- surface ---
    Link("data.init_args.dilation", "model.init_args.dilation"),  # candidates the data prepares = the model predicts
    # --- depth ---
    # --- simulation ---
    Link("data.dim", "model.init_args.dim", on="instantiate"),  # axes of the metadata's bounds
    Link("data.radius", "model.init_args.radius", on="instantiate"),  # connectivity radius, metres
    Link("data.statistics", "model.init_args.statistics", on="instantiate"),  # normaliser stats, noise included
)
"""Every data -> model link of every pipeline (a link applies when the chosen classes have both ends)."""


def _make_cli_class():
    import torch
    from pytorch_lightning.cli import LightningCLI

    class GeoLightningCLI(LightningCLI):
        """LightningCLI with the project's links, and ``ckpt_path`` checked before Lightning reads it."""

        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument("--metrics_json", type=str | None, default=None,
                                help="write the run's final logged metrics (trainer.callback_metrics) to this JSON "
                                     "file, e.g. geo3d test ... --metrics_json out/test_metrics.json")
            for link in LINKS:
                if link.on == "instantiate":
                    parser.link_arguments(link.source, link.target, compute_fn=link.compute,
                                          apply_on="instantiate")
                else:
                    parser.link_arguments(link.source, link.target, compute_fn=link.compute)

        def _parse_ckpt_path(self) -> None:
            """Lightning merges a ``--ckpt_path`` checkpoint's hyper-parameters into the config (``validate``,
            ``test``, ``predict``); those of a checkpoint written before a module's settings were grouped are
            upgraded first (the config's model class's ``upgrade_hparams``), as :func:`load_module` does."""
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if not ckpt_path or not Path(ckpt_path).is_file():
                return
            hparams = dict(torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters")
                           or {})
            class_path = self.config[subcommand].get("model", {}).get("class_path") or hparams.get("_class_path")
            if class_path:
                module, _, name = class_path.rpartition(".")
                hparams = upgrade_hparams(hparams, getattr(importlib.import_module(module), name), as_dicts=True)
            hparams.pop("_instantiator", None)
            if not hparams:
                return
            model = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams} if "_class_path" in hparams \
                else hparams
            try:
                self.config = self.parser.parse_object({subcommand: {"model": model}}, self.config)
            except SystemExit:
                sys.stderr.write(f"geo3d: error: {ckpt_path}: its hyper-parameters do not fit the config's model\n")
                raise

        def parse_arguments(self, parser, args) -> None:
            super().parse_arguments(parser, args)
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if ckpt_path is not None and str(ckpt_path).startswith("zoo:"):
                from geo3d.zoo.registry import resolve  # zoo:NAME -> the entry's verified weights file

                ckpt_path = self.config[subcommand]["ckpt_path"] = str(resolve(ckpt_path))
            if ckpt_path is not None:
                check_checkpoint(ckpt_path)

        def _write_metrics(self) -> None:
            """Write ``trainer.callback_metrics`` (name -> float) to ``--metrics_json`` when given."""
            path = self.config[self.subcommand].get("metrics_json")
            if path and self.trainer.is_global_zero:  # every rank holds the same (synced) metrics: one writes
                import json

                from geo3d.io.atomic import atomic_write_text

                metrics = {key: float(value) for key, value in sorted(self.trainer.callback_metrics.items())}
                atomic_write_text(path, json.dumps(metrics, indent=1) + "\n")

        def after_fit(self) -> None:
            self._write_metrics()

        def after_validate(self) -> None:
            self._write_metrics()

        def after_test(self) -> None:
            self._write_metrics()

    return GeoLightningCLI


def run_lightning(args: list[str]) -> None:
    """Run the Lightning CLI (``fit``/``validate``/``test``/``predict``) with ``args``.

    A ``ckpt_path`` (from the command line or a config file) is checked with
    :func:`geo3d.io.checkpoint.check_checkpoint` right after parsing, before Lightning reads it; ``zoo:NAME``
    is first replaced by the model zoo entry's verified weights file. ``--metrics_json FILE`` writes the run's
    final logged metrics (``fit``, ``validate``, ``test``) to FILE.
    """
    from unittest import mock

    cli_class = _make_cli_class()
    # Lightning reads sys.argv (and warns when given ``args`` beside a non-empty sys.argv), so the
    # arguments go in as the process's own, also when main() is called from Python. Run as the ``geo3d`` console
    # script, argv[0] stays its path: under DDP Lightning starts the other ranks with ``python <abspath(argv[0])>
    # <args>`` (run as ``python -m geo3d.cli``, with ``python -m geo3d.cli <args>``).
    script = sys.argv[0] if sys.argv and Path(sys.argv[0]).name == "geo3d" else "geo3d"
    with mock.patch.object(sys, "argv", [script, *args]):
        cli_class(
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"epilog": "example: geo3d fit --config configs/detection/second_tiny_cpu.yaml"},
        )
