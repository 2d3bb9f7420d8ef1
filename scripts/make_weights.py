#!/usr/bin/env python
"""Make the model zoo's weights from scratch with the commands of their cards, or re-check the shipped ones.

Every entry of the registry (``geo3d/zoo/models.json``, or ``$GEO3D_ZOO_DIR/models.json``) lists its commands in
four stages, run here in order from the repository root (each a shell command, as a user would type it):

1. ``data``: generate the training data (the generators skip what already exists);
2. ``train``: ``geo3d fit ...`` (long: up to about an hour per entry on a 2-core CPU). Its wall time, the machine
   and the git commit are written into the registry;
3. ``export``: ``python scripts/make_weights.py --export NAME CKPT``: strip the checkpoint to the weights
   (:func:`geo3d.zoo.export_weights`) into ``weights/NAME.ckpt`` and write its sha256 and size into the registry;
4. ``evaluate``: the benchmark commands, on ``zoo:NAME`` (the exported file); each writes a metrics JSON, from which
   every card metric is read (``metric_sources``: file and key) and written into the registry.

Then the entry's probe output (its pipeline's ``zoo_probe`` on one fixed input, one torch thread) is stored as
``probes/NAME.npz``, and ``MODELS.md`` is regenerated. Not run in CI (hours for all entries).

Usage:
    python scripts/make_weights.py                         # every entry, every stage (make weights)
    python scripts/make_weights.py --only second_car       # one entry
    python scripts/make_weights.py --only omni_dc --from export --ckpt out/depth/.../last.ckpt   # drop a trained
                                                           # checkpoint in: export, evaluate, probe, cards
    python scripts/make_weights.py --dry-run               # print the commands, run nothing
    python scripts/make_weights.py --check giorom_sand     # re-run the evaluation on the shipped weights and compare
                                                           # with the card (exit 1 when a number is off its tolerance)
    python scripts/make_weights.py --probes                # re-write the probe outputs of the shipped weights
    python scripts/make_weights.py --cards                 # re-write MODELS.md from the registry
    python scripts/make_weights.py --export NAME CKPT      # the export stage of one entry
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from geo3d.errors import InputError  # noqa: E402
from geo3d.zoo import registry  # noqa: E402

MODELS_MD = REPO / "MODELS.md"


def run_command(command: str) -> float:
    """Run one shell command from the repository root (output streamed); returns its wall time in seconds.

    The folder of this Python's executable comes first on ``PATH``, so ``geo3d`` and ``python`` are this
    environment's (as with the virtual environment activated).

    Raises:
        InputError: the command failed (its exit code).
    """
    print(f"$ {command}", flush=True)
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    start = time.perf_counter()
    code = subprocess.run(command, shell=True, cwd=REPO, env=env).returncode
    if code != 0:
        raise InputError(None, f"command failed with exit code {code}: {command}")
    return time.perf_counter() - start


def git_commit() -> str | None:
    """The checkout's HEAD commit, with ``(+ uncommitted changes)`` when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")


def machine() -> str:
    """The CPU model, its core count, the OS and torch's version (where they can be read)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}, torch {torch.__version__}"


def format_duration(seconds: float) -> str:
    """``3130.4`` -> ``"52 min 10 s"``."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def update_entry(name: str, **values: Any) -> None:
    """Write ``values`` into entry ``name`` of the registry (atomically), then regenerate MODELS.md."""
    data = registry.read_registry()
    data["entries"][name].update(values)
    registry.write_registry(data)
    write_cards()


def write_cards() -> None:
    """Write MODELS.md from the registry (only for the package's own registry, not a ``$GEO3D_ZOO_DIR`` one)."""
    from geo3d.io.atomic import atomic_write_text
    from geo3d.zoo.cards import models_md

    if registry.zoo_dir().resolve() == registry.PACKAGE_DIR:
        atomic_write_text(MODELS_MD, models_md(registry.entries()))


def export(name: str, ckpt: str | os.PathLike) -> None:
    """The export stage: strip ``ckpt`` into entry ``name``'s weights file; record its sha256 and size."""
    from geo3d.zoo import export_weights

    item = registry.entry(name)
    path = export_weights(ckpt, item.path)
    update_entry(item.name, sha256=registry.file_sha256(path), size=path.stat().st_size)
    print(f"exported {ckpt} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")


def read_metric(source: registry.MetricSource) -> float:
    """One metric from the JSON file an evaluation command wrote.

    Raises:
        InputError: the file is missing or not JSON, or has no number at the key path.
    """
    from geo3d.io.json_file import read_json_object

    value: Any = read_json_object(REPO / source.json)
    for key in source.key:
        if not isinstance(value, dict) or key not in value:
            raise InputError(source.json, f"no {' -> '.join(source.key)} (key {key!r} missing)")
        value = value[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InputError(source.json, f"{' -> '.join(source.key)}: expected a number, got {value!r}")
    return float(value)


def evaluate(name: str) -> dict[str, float]:
    """Run entry ``name``'s evaluation commands and read every card metric they measured."""
    item = registry.entry(name)
    for command in item.commands["evaluate"]:
        run_command(command)
    return {metric: read_metric(source) for metric, source in item.metric_sources.items()}


def write_probe(name: str) -> Path:
    """Run entry ``name``'s probe on its shipped weights (one torch thread) and store it as ``probes/NAME.npz``."""
    import numpy as np
    import torch

    from geo3d import zoo
    from geo3d.io.atomic import atomic_open

    torch.set_num_threads(1)
    outputs = zoo.probe(name)
    path = registry.entry(name).probe_path
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, **{key: np.asarray(value) for key, value in outputs.items()})
    print(f"probe of {name}: {', '.join(f'{k} {np.asarray(v).shape}' for k, v in outputs.items())} -> {path}")
    return path


def make(name: str, first: str, ckpt: str | None) -> None:
    """Run entry ``name``'s stages from ``first`` on (the export from ``ckpt`` when given), record the results."""
    item = registry.entry(name)
    stages = registry.STAGES[registry.STAGES.index(first):]
    for stage in stages:
        print(f"--- {name}: {stage}", flush=True)
        if stage == "export" and ckpt is not None:
            export(name, ckpt)
        elif stage == "evaluate":
            update_entry(name, metrics={**item.metrics, **evaluate(name)})
        elif stage == "train":
            commit = git_commit()
            seconds = sum(run_command(command) for command in item.commands["train"])
            update_entry(name, training_time=format_duration(seconds), machine=machine(), commit=commit)
        else:
            for command in item.commands[stage]:
                run_command(command)
    write_probe(name)
    write_cards()


def check(name: str) -> bool:
    """Re-run entry ``name``'s evaluation on the shipped weights; print each metric beside the card's number.

    Returns:
        True when every metric agrees with its card number within its tolerance.
    """
    item = registry.entry(name)
    registry.checkpoint_path(name)  # the shipped file is there and unchanged
    missing = [metric for metric, value in item.metrics.items() if value is None]
    if missing:
        raise InputError(f"zoo:{name}", f"the card has no number yet for {', '.join(missing)}")
    measured = evaluate(name)
    ok = True
    print(f"\n{name}: card vs re-run")
    for metric, new in measured.items():
        source, card = item.metric_sources[metric], item.metrics[metric]
        agrees = source.agrees(card, new)
        ok &= agrees
        print(f"  {'ok ' if agrees else 'OFF'} {metric}: card {card:.6g}, re-run {new:.6g} "
              f"(tolerance {source.atol:g} + {source.rtol:g} x card)")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these entries only (default: all)")
    parser.add_argument("--from", dest="first", choices=registry.STAGES, default=registry.STAGES[0],
                        help="start at this stage (default data)")
    parser.add_argument("--ckpt", metavar="CKPT", help="with --only NAME: export this checkpoint instead of the one "
                                                       "the export command names")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--check", nargs="+", metavar="NAME",
                        help="re-run these entries' evaluation on the shipped weights and compare with their cards")
    parser.add_argument("--probes", action="store_true", help="re-write the probe outputs of the shipped weights")
    parser.add_argument("--cards", action="store_true", help="re-write MODELS.md from the registry")
    parser.add_argument("--export", nargs=2, metavar=("NAME", "CKPT"),
                        help="strip CKPT into entry NAME's weights file and record its sha256 and size")
    args = parser.parse_args(argv)
    try:
        known = registry.entries()
        names = list(args.check or args.only or known)
        for name in names:
            registry.entry(name)  # unknown names: one line listing the known ones
        if args.ckpt is not None and (args.only is None or len(args.only) != 1):
            raise InputError(None, "--ckpt needs exactly one --only NAME")
        if args.export:
            export(*args.export)
        elif args.cards:
            write_cards()
            print(f"wrote {MODELS_MD}")
        elif args.dry_run:
            stages = ("evaluate",) if args.check else registry.STAGES[registry.STAGES.index(args.first):]
            for name in names:
                for stage in stages:
                    for command in known[name].commands[stage]:
                        if stage == "export" and args.ckpt is not None:
                            command = f"python scripts/make_weights.py --export {name} {shlex.quote(args.ckpt)}"
                        print(f"{name} {stage}: {command}")
        elif args.check:
            failed = [name for name in names if not check(name)]
            if failed:
                print(f"make_weights: the re-run differs from the card for {', '.join(failed)}", file=sys.stderr)
                return 1
        elif args.probes:
            for name in names:
                if known[name].pending:
                    print(f"{name}: weights pending, no probe")
                else:
                    write_probe(name)
        else:
            for name in names:
                make(name, args.first, args.ckpt)
    except InputError as err:
        print(f"make_weights: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
