"""The model zoo's registry (``models.json``): entries, checksum-verified weight files, ``zoo:NAME`` specs.

The registry is one JSON file beside the weights (``weights/<name>.ckpt``) and the probe outputs
(``probes/<name>.npz``), in this package's folder, or in ``$GEO3D_ZOO_DIR`` when that is set (tests, scratch
registries). Each entry says which LightningModule its weights are for (a class path, data as in a Lightning
CLI config: imported by name, never by this module), where its file is with its sha256 and size, the exact
commands that made it (data, training, export, evaluation), and the metrics its evaluation measured. An entry whose
weights have not been produced yet has ``"sha256": null`` (pending).

This module imports no pipeline and not :mod:`geo3d.io.checkpoint` (which resolves ``zoo:NAME`` through it).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geo3d.errors import InputError

ZOO_PREFIX = "zoo:"
"""A checkpoint given as ``zoo:NAME`` is the zoo entry NAME's verified weights file."""

STAGES = ("data", "train", "export", "evaluate")
"""The command lists of an entry, in the order ``scripts/make_weights.py`` runs them."""

PACKAGE_DIR = Path(__file__).resolve().parent


def zoo_dir() -> Path:
    """The registry folder: ``$GEO3D_ZOO_DIR`` when set, else this package's folder (``geo3d/zoo``)."""
    return Path(os.environ.get("GEO3D_ZOO_DIR") or PACKAGE_DIR)


def registry_path() -> Path:
    """The registry file, ``<zoo_dir>/models.json``."""
    return zoo_dir() / "models.json"


@dataclass(frozen=True)
class MetricSource:
    """Where an evaluation writes one card metric, and how close a re-run must come to the card's number.

    Attributes:
        json: the metrics JSON file an evaluation command writes (relative to the repository root).
        key: the path of keys to the number in that file's object, e.g. ``("total", "cars_found")``.
        atol: absolute tolerance of ``scripts/make_weights.py --check``.
        rtol: relative tolerance (of the card's number); a re-run agrees when ``|new - card| <= atol + rtol |card|``.
    """

    json: str
    key: tuple[str, ...]
    atol: float = 0.0
    rtol: float = 0.0

    def agrees(self, card: float, new: float) -> bool:
        """Whether a re-measured ``new`` matches the card's ``card`` within the tolerances."""
        return abs(new - card) <= self.atol + self.rtol * abs(card)


@dataclass(frozen=True)
class Entry:
    """One zoo model: what it is, where its weights are, how it was made and what it scored.

    Attributes:
        name: the registry name (``zoo:NAME``).
        pipeline: the pipeline folder, e.g. ``detection``.
        task: one line: what the model does.
        class_path: the LightningModule, e.g. ``pipelines.detection.module.SecondDetector``.
        probe: the probe function, e.g. ``pipelines.detection.predict.zoo_probe`` (module -> dict of arrays).
        file: the weights file, relative to the registry folder (``weights/<name>.ckpt``).
        sha256: the file's SHA-256 (hex), or None while the weights are pending.
        size: the file's size, bytes (None while pending).
        configs: the training config files (later ones override earlier ones).
        commands: stage (:data:`STAGES`) -> the shell commands of that stage, in order.
        seed: the training seed.
        steps: training steps.
        training_time: wall time of the training commands, e.g. ``"52 min 10 s"`` (None: not trained yet).
        machine: the machine that trained it (CPU, cores, threads, what else ran).
        commit: the git commit the weights were trained at.
        metrics: metric name -> the card's number (None: not measured yet).
        metric_sources: metric name -> :class:`MetricSource`.
        headline: the metric names the zoo table shows.
        notes: free text for the card.
    """

    name: str
    pipeline: str
    task: str
    class_path: str
    probe: str
    file: str
    sha256: str | None
    size: int | None
    configs: tuple[str, ...]
    commands: dict[str, tuple[str, ...]]
    seed: int | None = None
    steps: int | None = None
    training_time: str | None = None
    machine: str | None = None
    commit: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    metric_sources: dict[str, MetricSource] = field(default_factory=dict)
    headline: tuple[str, ...] = ()
    notes: str = ""

    @property
    def pending(self) -> bool:
        """True while the weights have not been produced (no sha256 in the registry)."""
        return self.sha256 is None

    @property
    def path(self) -> Path:
        """The weights file (not verified: use :func:`checkpoint_path`)."""
        return zoo_dir() / self.file

    @property
    def probe_path(self) -> Path:
        """The stored probe output, ``<zoo_dir>/probes/<name>.npz``."""
        return zoo_dir() / "probes" / f"{self.name}.npz"


_ENTRY_KEYS = {"pipeline", "task", "class_path", "probe", "file", "sha256", "size", "configs", "commands", "seed",
               "steps", "training_time", "machine", "commit", "metrics", "metric_sources", "headline", "notes"}


def _entry(name: str, raw: Any, source: Path) -> Entry:
    """Build an :class:`Entry` from its JSON object, with one-line errors naming the registry file."""
    if not isinstance(raw, dict):
        raise InputError(source, f"entry {name!r}: expected an object, got {type(raw).__name__}")
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        raise InputError(source, f"entry {name!r}: unknown keys {sorted(unknown)}")
    try:
        commands = {stage: tuple(raw["commands"].get(stage, ())) for stage in STAGES}
        sources = {metric: MetricSource(spec["json"], tuple(spec["key"]), float(spec.get("atol", 0.0)),
                                        float(spec.get("rtol", 0.0)))
                   for metric, spec in raw.get("metric_sources", {}).items()}
        entry = Entry(name=name, pipeline=raw["pipeline"], task=raw["task"], class_path=raw["class_path"],
                      probe=raw["probe"], file=raw["file"], sha256=raw.get("sha256"), size=raw.get("size"),
                      configs=tuple(raw["configs"]), commands=commands,
                      seed=raw.get("seed"), steps=raw.get("steps"), training_time=raw.get("training_time"),
                      machine=raw.get("machine"), commit=raw.get("commit"), metrics=dict(raw.get("metrics", {})),
                      metric_sources=sources, headline=tuple(raw.get("headline", ())), notes=raw.get("notes", ""))
    except KeyError as err:
        raise InputError(source, f"entry {name!r}: missing key {err.args[0]!r}") from None
    except (TypeError, AttributeError, ValueError) as err:
        raise InputError(source, f"entry {name!r}: malformed ({err})") from None
    for metric in (*entry.headline, *entry.metric_sources):
        if metric not in entry.metrics:
            raise InputError(source, f"entry {name!r}: metric {metric!r} is not in its metrics")
    return entry


def read_registry(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The registry file's JSON object (``{"format": 1, "entries": {...}}``) as it is stored.

    Raises:
        InputError: the file is missing, not JSON, or has no ``entries`` object.
    """
    path = Path(path) if path is not None else registry_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "zoo registry not found (set GEO3D_ZOO_DIR to a folder with models.json, or unset "
                               "it)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        raise InputError(path, "expected a JSON object with an 'entries' object")
    return data


def write_registry(data: dict[str, Any], path: str | os.PathLike | None = None) -> None:
    """Write the registry's JSON object atomically (2-space indent, keys in their order, a final newline)."""
    from geo3d.io.atomic import atomic_write_text

    atomic_write_text(Path(path) if path is not None else registry_path(), json.dumps(data, indent=2) + "\n")


def entries() -> dict[str, Entry]:
    """Every zoo entry, by name, in the registry's order.

    Raises:
        InputError: the registry is missing or malformed (the message names the file).
    """
    path = registry_path()
    return {name: _entry(name, raw, path) for name, raw in read_registry(path)["entries"].items()}


def entry(name: str) -> Entry:
    """The zoo entry ``name`` (``"zoo:"`` prefix allowed).

    Raises:
        InputError: no such entry (the message lists the known names).
    """
    name = name.removeprefix(ZOO_PREFIX)
    known = entries()
    if name not in known:
        raise InputError(f"{ZOO_PREFIX}{name}", f"no such zoo model; known: {', '.join(known) or 'none'}")
    return known[name]


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB chunks; cached per (path, size, mtime) within the process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def checkpoint_path(name: str) -> Path:
    """The weights file of zoo entry ``name``, after checking its SHA-256 against the registry.

    Raises:
        InputError: an unknown name, pending weights (sha256 null), a missing file, or a file whose SHA-256
            differs from the registry's (expected and actual prefixes in the message).
    """
    item = entry(name)
    if item.pending:
        raise InputError(f"{ZOO_PREFIX}{item.name}", "weights not produced yet (sha256 null in the registry); "
                                                     f"make them with: python scripts/make_weights.py --only "
                                                     f"{item.name}")
    path = item.path
    if not path.is_file():
        raise InputError(path, f"weights file of {ZOO_PREFIX}{item.name} not found")
    actual = file_sha256(path)
    if actual != item.sha256:
        raise InputError(path, f"sha256 {actual[:12]}... differs from the registry's {item.sha256[:12]}... for "
                               f"{ZOO_PREFIX}{item.name} (a changed or corrupt file)")
    return path


def resolve(spec: str | os.PathLike) -> Path:
    """A checkpoint argument as a path: ``"zoo:NAME"`` -> the entry's verified weights file; anything else as it is.

    Raises:
        InputError: see :func:`checkpoint_path`.

    Example:
        >>> resolve("out/run/last.ckpt")
        PosixPath('out/run/last.ckpt')
    """
    text = os.fspath(spec)
    if text.startswith(ZOO_PREFIX):
        return checkpoint_path(text[len(ZOO_PREFIX):])
    return Path(text)
