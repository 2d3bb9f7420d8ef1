"""Batch reconstruction of many RGB-D scene folders (``geo3d reconstruct``): resumable, parallel, one summary.

Every scene folder under the input (7-Scenes layout, :func:`geo3d.io.read_rgbd_sequence`) is fused
(:func:`~pipelines.surface.fusion.fuse_rgbd`) and meshed with one method:

* ``tsdf``: marching cubes of the fused TSDF (:meth:`TSDFVolume.extract_mesh`);
* ``refined``: the learned refinement of the fused voxels (:func:`~pipelines.surface.module.refine_volume`, a
  :class:`~pipelines.surface.module.SurfaceRefiner` checkpoint);
* ``poisson``: screened Poisson (:func:`~pipelines.surface.baselines.poisson_mesh`) of the TSDF's zero-crossing
  points with their TSDF-gradient normals.

Output, per scene ``OUTPUT/<scene>/``: ``mesh.ply`` (metres; ``mesh.obj`` with ``mesh_format="obj"``; only the
largest connected component with ``largest_component=True``), ``metrics.json`` when the scene has a ground-truth
``mesh.ply`` (:func:`geo3d.metrics.geometry.mesh_metrics`, F-score threshold 0.25 % of the scene's diagonal,
plus timings and peak memory), and ``status.json``, written last: ``{"status": "ok", ...}`` marks a complete
scene, ``{"status": "failed", "error": "<file>: <problem>"}`` a failed one. A scene is recomputed unless its
``status.json`` says ``ok`` *for the same settings* (:meth:`ReconstructOptions.config`), so a killed run resumes
where it stopped and failed scenes are retried. Every file is written atomically (:mod:`geo3d.io.atomic`); a
scene's old ``status.json`` is deleted before its other files are touched. The parent then writes
``OUTPUT/summary.csv`` and ``OUTPUT/summary.md``: one row per scene and a ``mean`` row over the ok scenes that have
metrics.

Scenes run in this process (one worker), in a pool of spawned processes (``workers > 1``), or as Ray tasks
(``backend="ray"``); in every case the same top-level :func:`reconstruct_scene` writes the scene's files.

Example (a tiny synthetic scan; ``geo3d reconstruct --input DIR --output DIR`` does the same):
    >>> import tempfile
    >>> from geo3d.synth.rgbd import generate_rgbd
    >>> tmp = tempfile.TemporaryDirectory()
    >>> scene = generate_rgbd(Path(tmp.name) / "scans" / "blob_0", object="blob", frames=3, width=48, height=36,
    ...                       progress=False)
    >>> options = ReconstructOptions("tsdf", voxel_fraction=1 / 16, eval_points=500)
    >>> result = reconstruct_batch(scene.parent, Path(tmp.name) / "recon", options, progress=False)
    >>> result.computed, result.failed
    (['blob_0'], [])
    >>> sorted(p.name for p in (Path(tmp.name) / "recon" / "blob_0").iterdir())
    ['mesh.ply', 'metrics.json', 'status.json']
    >>> reconstruct_batch(scene.parent, Path(tmp.name) / "recon", options, progress=False).computed  # resumes
    []
    >>> tmp.cleanup()
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import multiprocessing
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_write_text
from geo3d.io.json_file import read_json_object
from geo3d.metrics.geometry import canonical_mesh

METHODS = ("tsdf", "refined", "poisson")
MESH_FORMATS = ("ply", "obj")
BACKENDS = ("local", "ray")
STATUS_FILE, MESH_FILE, METRICS_FILE = "status.json", "mesh.ply", "metrics.json"
SUMMARY_COLUMNS = ("scene", "status", "method", "chamfer", "accuracy", "completeness", "fscore",
                   "normal_consistency", "seconds", "peak_rss_mib", "error")
METRIC_COLUMNS = ("chamfer", "accuracy", "completeness", "fscore", "normal_consistency", "seconds", "peak_rss_mib")
_FRAME_FILE = re.compile(r"frame-\d+\.(pose\.txt|depth\.png)")
# errors that fail one scene (bad input, I/O, Open3D/torch runtime errors); anything else is a bug and propagates
SCENE_ERRORS = (ValueError, OSError, RuntimeError)


@dataclass
class ReconstructOptions:
    """How each scene is reconstructed and evaluated.

    Attributes:
        method: ``"tsdf"``, ``"refined"`` or ``"poisson"``.
        checkpoint: a :class:`SurfaceRefiner` checkpoint (``.ckpt``), required by ``refined``.
        voxel_size: voxel edge, metres; None for ``voxel_fraction`` of each scene's diagonal.
        voxel_fraction: voxel edge as a fraction of the scene's diagonal (``scene.json``'s ``diagonal``, else the
            bounding-box diagonal of its ground-truth ``mesh.ply``, else the extent of its frames' back-projected
            depth, :func:`pipelines.surface.extent.observed_extent`).
        trunc_voxels: TSDF truncation, voxels.
        depth_max: depths beyond this are ignored, metres; None: every valid depth is fused (the frames' largest
            valid depth plus 1 %, :func:`pipelines.surface.extent.observed_extent`).
        depth_scale: depth PNG codes per metre; None for ``scene.json``'s ``depth_scale``, else 1000 (millimetres).
        poisson_depth: octree depth of the ``poisson`` method.
        eval_points: surface samples per mesh for the metrics.
        fscore_fraction: F-score threshold as a fraction of the scene's diagonal (0.0025: 0.25 %).
        seed: metric sampling seed.
        largest_component: keep only the mesh's largest connected component (drops floaters; metrics are
            computed on what is written).
        mesh_format: ``"ply"`` (binary, vertex colours) or ``"obj"`` for the output ``mesh.<format>``.
    """

    method: str = "tsdf"
    checkpoint: str | None = None
    voxel_size: float | None = None
    voxel_fraction: float = 1 / 128
    trunc_voxels: float = 4.0
    depth_max: float | None = None
    depth_scale: float | None = None
    poisson_depth: int = 8
    eval_points: int = 20_000
    fscore_fraction: float = 0.0025
    seed: int = 0
    largest_component: bool = False
    mesh_format: str = "ply"

    @property
    def mesh_file(self) -> str:
        """The output mesh's file name, ``mesh.ply`` or ``mesh.obj``."""
        return f"mesh.{self.mesh_format}"

    def validate(self) -> None:
        """Raise :class:`InputError` naming the option that is out of range (or the missing checkpoint)."""
        if self.method not in METHODS:
            raise InputError(None, f"method: expected one of {', '.join(METHODS)}, got {self.method!r}")
        if self.mesh_format not in MESH_FORMATS:
            raise InputError(None, f"mesh_format: expected one of {', '.join(MESH_FORMATS)}, "
                                   f"got {self.mesh_format!r}")
        if self.method == "refined":
            if not self.checkpoint:
                raise InputError(None, "method refined needs --checkpoint (a SurfaceRefiner .ckpt)")
            if not Path(self.checkpoint).is_file():
                raise InputError(self.checkpoint, "checkpoint file not found")
        positive = {"voxel_fraction": self.voxel_fraction, "trunc_voxels": self.trunc_voxels,
                    "fscore_fraction": self.fscore_fraction}
        for name in ("voxel_size", "depth_max", "depth_scale"):
            if getattr(self, name) is not None:
                positive[name] = getattr(self, name)
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise InputError(None, f"{name}: expected a positive number, got {value!r}")
        if self.eval_points < 1 or self.poisson_depth < 1:
            raise InputError(None, f"eval_points and poisson_depth must be >= 1, got {self.eval_points}, "
                                   f"{self.poisson_depth}")

    def config(self) -> dict[str, Any]:
        """The settings a scene's result depends on (JSON types; the checkpoint as an absolute path): a complete
        scene is reused only when its recorded config equals this one."""
        config = asdict(self)
        if self.checkpoint is not None:
            config["checkpoint"] = str(Path(self.checkpoint).resolve())
        if self.method != "refined":
            config["checkpoint"] = None
        if self.method != "poisson":
            config["poisson_depth"] = None
        if self.voxel_size is not None:
            config["voxel_fraction"] = None
        return json.loads(json.dumps(config))


@dataclass
class BatchResult:
    """What :func:`reconstruct_batch` did.

    Attributes:
        records: one ``status.json`` record per scene, in scene order.
        computed: names of the scenes (re)computed by this run (the others were complete already).
        summary_csv, summary_md: the summary files.
    """

    records: list[dict[str, Any]]
    computed: list[str] = field(default_factory=list)
    summary_csv: Path | None = None
    summary_md: Path | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The records of the failed scenes."""
        return [r for r in self.records if r.get("status") != "ok"]


# --- scenes ------------------------------------------------------------------------------------------

def _is_scene(folder: Path) -> bool:
    """A scene folder holds ``camera-intrinsics.txt`` or frame files (so a scene missing its intrinsics fails
    loudly instead of being skipped)."""
    if (folder / "camera-intrinsics.txt").is_file():
        return True
    return any(_FRAME_FILE.fullmatch(p.name) for p in folder.iterdir())


def list_scenes(root: str | os.PathLike) -> list[Path]:
    """Scene folders to reconstruct: ``root`` itself when it is one, else its sub-folders that are (sorted).

    Raises:
        InputError: ``root`` is not a folder or holds no scene folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a directory of RGB-D scenes")
    if _is_scene(root):
        return [root]
    scenes = sorted(p for p in root.iterdir() if p.is_dir() and _is_scene(p))
    if not scenes:
        raise InputError(root, "no scene folders (folders with camera-intrinsics.txt and frame-*.depth.png)")
    return scenes


def _scene_json(scene: Path) -> dict[str, Any]:
    path = scene / "scene.json"
    return read_json_object(path) if path.is_file() else {}


def scene_diagonal(scene: Path, meta: dict[str, Any] | None = None) -> float | None:
    """The scene's size, metres: ``scene.json``'s ``diagonal``, else the bounding-box diagonal of the ground-truth
    ``mesh.ply``, else None."""
    meta = _scene_json(scene) if meta is None else meta
    diagonal = meta.get("diagonal")
    if diagonal is not None:
        if not (isinstance(diagonal, int | float) and math.isfinite(diagonal) and diagonal > 0):
            raise InputError(scene / "scene.json", f"diagonal: expected positive metres, got {diagonal!r}")
        return float(diagonal)
    if (scene / MESH_FILE).is_file():
        from geo3d.io import read_mesh

        vertices = read_mesh(scene / MESH_FILE).vertices
        if len(vertices):
            return float((vertices.amax(0) - vertices.amin(0)).norm())
    return None


def error_line(err: BaseException, scene: Path) -> str:
    """One line describing ``err`` that names a file: the error's own path, else the scene folder."""
    if isinstance(err, FileNotFoundError) and err.filename:
        return f"{err.filename}: file not found"
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, InputError) and err.path is not None:
        return text
    if str(scene) not in text:
        kind = "" if isinstance(err, InputError) else f"{type(err).__name__}: "
        text = f"{scene}: {kind}{text}"
    return text


# --- one scene (runs in a worker) --------------------------------------------------------------------

_REFINERS: dict[str, Any] = {}


def load_refiner(checkpoint: str | os.PathLike):
    """Load a :class:`~pipelines.surface.module.SurfaceRefiner` checkpoint on the CPU, in eval mode, through
    :func:`geo3d.io.checkpoint.load_module` (which also upgrades checkpoints written before the settings groups);
    cached per process, so a worker loads it once for all its scenes.

    Raises:
        InputError: naming the file when it is missing or not a SurfaceRefiner checkpoint.
    """
    key = str(Path(checkpoint).resolve())
    if key not in _REFINERS:
        from geo3d.io.checkpoint import load_module
        from pipelines.surface.module import SurfaceRefiner

        if not Path(key).is_file():
            raise InputError(checkpoint, "checkpoint file not found")
        _REFINERS[key] = load_module(checkpoint, SurfaceRefiner, map_location="cpu")
    return _REFINERS[key]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _reconstruct(scene: Path, out: Path, options: ReconstructOptions) -> dict[str, Any]:
    """Fuse, mesh, write ``mesh.ply`` (or ``.obj``) and (with ground truth) ``metrics.json``; return the ok
    record's fields."""
    from geo3d.io import read_mesh, read_rgbd_sequence, write_mesh
    from pipelines.surface.fusion import fuse_rgbd

    start = time.perf_counter()
    meta = _scene_json(scene)
    depth_scale = options.depth_scale if options.depth_scale is not None else float(meta.get("depth_scale", 1000.0))
    sequence = read_rgbd_sequence(scene, depth_scale)  # checks the frame files before anything is computed
    diagonal = scene_diagonal(scene, meta)
    depth_max, voxel, voxel_from = options.depth_max, options.voxel_size, "voxel_size"
    if depth_max is None or (voxel is None and diagonal is None):
        from pipelines.surface.extent import observed_extent

        extent = observed_extent(sequence, depth_max)
        depth_max = extent.depth_max
        if voxel is None and diagonal is None:
            voxel, voxel_from = options.voxel_fraction * extent.diagonal, "frames"
    if voxel is None:
        voxel, voxel_from = options.voxel_fraction * diagonal, "diagonal"
    volume = fuse_rgbd(sequence, voxel, options.trunc_voxels * voxel, depth_max=depth_max, progress=False)
    if options.method == "tsdf":
        mesh = volume.extract_mesh()
    elif options.method == "poisson":
        from pipelines.surface.baselines import poisson_mesh

        mesh = poisson_mesh(volume.extract_points(), depth=options.poisson_depth)
    else:
        from pipelines.surface.module import refine_volume

        mesh = refine_volume(load_refiner(options.checkpoint), volume)
    if options.largest_component:
        from pipelines.surface.baselines import largest_component

        mesh = largest_component(mesh)
    mesh = canonical_mesh(mesh)
    write_mesh(out / options.mesh_file, mesh)
    seconds = time.perf_counter() - start
    stats = volume.stats
    record: dict[str, Any] = {
        "seconds": seconds, "fuse_seconds": stats.fuse_seconds, "extract_seconds": stats.extract_seconds,
        "peak_rss_mib": stats.peak_rss_mib, "rss_growth_mib": stats.rss_growth_mib, "frames": stats.frames,
        "blocks": stats.blocks, "voxel_size": voxel, "voxel_from": voxel_from,
        "sdf_trunc": options.trunc_voxels * voxel, "depth_max": depth_max, "depth_scale": depth_scale,
        "diagonal": diagonal, "vertices": mesh.num_vertices, "faces": mesh.num_faces,
        "metrics": None,
    }
    if (scene / MESH_FILE).is_file() and diagonal is not None:
        from geo3d.metrics.geometry import mesh_metrics

        metric_start = time.perf_counter()
        metrics = mesh_metrics(mesh, read_mesh(scene / MESH_FILE), num_points=options.eval_points,
                               fscore_threshold=options.fscore_fraction * diagonal, seed=options.seed)
        metrics.update({key: record[key] for key in ("seconds", "fuse_seconds", "extract_seconds", "peak_rss_mib",
                                                     "rss_growth_mib", "voxel_size", "diagonal")})
        metrics.update({"method": options.method, "num_points": options.eval_points,
                        "metric_seconds": time.perf_counter() - metric_start})
        _write_json(out / METRICS_FILE, metrics)
        record["metrics"] = metrics
    return record


def reconstruct_scene(scene: str | os.PathLike, out_dir: str | os.PathLike, options: ReconstructOptions
                      ) -> dict[str, Any]:
    """Reconstruct one scene into ``out_dir`` and write its ``status.json`` last (the batch's worker function).

    The scene's old ``status.json``, ``metrics.json`` and ``mesh.ply``/``mesh.obj`` in ``out_dir`` are removed
    first, so an interrupted scene has no status and is redone by the next run. Scene errors (:data:`SCENE_ERRORS`: bad
    input, I/O, Open3D/torch runtime errors) are recorded, not raised.

    Args:
        scene: RGB-D scene folder (7-Scenes layout; optional ground-truth ``mesh.ply`` and ``scene.json``).
        out_dir: the scene's output folder (created).
        options: reconstruction settings.

    Returns:
        The ``status.json`` record: ``status`` (``"ok"``/``"failed"``), ``scene`` (name), ``input``, ``method``,
        ``config``, ``finished`` (UTC ISO time), and for ok scenes ``seconds`` (fusion to written mesh),
        ``fuse_seconds``, ``extract_seconds``, ``peak_rss_mib`` (this process's high-water mark), ``voxel_size``
        (metres) and ``voxel_from`` (``"voxel_size"``: given; ``"diagonal"``: the fraction of ``scene.json``'s or the
        ground-truth mesh's diagonal; ``"frames"``: of the frames' observed extent), ``depth_max`` (metres, given
        or the frames' largest valid depth plus 1 %), ``metrics`` (or None without ground truth); for failed ones
        ``error`` (one line naming the file).
    """
    scene, out = Path(scene), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (STATUS_FILE, METRICS_FILE, *(f"mesh.{fmt}" for fmt in MESH_FORMATS)):
        (out / name).unlink(missing_ok=True)
    record: dict[str, Any] = {"scene": out.name, "input": str(scene), "method": options.method,
                              "config": options.config()}
    try:
        record.update(_reconstruct(scene, out, options))
        record["status"] = "ok"
    except SCENE_ERRORS as err:
        if os.environ.get("GEO3D_DEBUG"):
            raise
        record.update({"status": "failed", "error": error_line(err, scene), "error_type": type(err).__name__})
    record["finished"] = _now()
    _write_json(out / STATUS_FILE, record)
    return record


def _worker_init() -> None:
    """Pool/Ray worker setup: one torch thread per worker (the workers are the parallelism)."""
    import torch

    torch.set_num_threads(1)


def _ray_reconstruct_scene(scene: str, out_dir: str, options: ReconstructOptions) -> dict[str, Any]:
    _worker_init()
    return reconstruct_scene(scene, out_dir, options)


# --- the batch ---------------------------------------------------------------------------------------

def read_status(out_dir: Path) -> dict[str, Any] | None:
    """A scene's ``status.json`` record, or None when it is missing or unreadable (an unfinished scene)."""
    try:
        record = json.loads((out_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_complete(out_dir: Path, options: ReconstructOptions) -> bool:
    """True when ``out_dir/status.json`` says ok for these settings and the mesh is there."""
    record = read_status(out_dir)
    return (record is not None and record.get("status") == "ok" and record.get("config") == options.config()
            and (out_dir / options.mesh_file).is_file())


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Spawned children inherit ``OMP_NUM_THREADS=1`` (Open3D's OpenMP, BLAS) unless the user set it."""
    previous = os.environ.get("OMP_NUM_THREADS")
    if previous is None:
        os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)


def _reconstruct_job(job: tuple[str, str, ReconstructOptions]) -> dict[str, Any]:
    return reconstruct_scene(*job)


def _run_pool(jobs: list[tuple[Path, Path]], options: ReconstructOptions, workers: int, bar) -> list[dict]:
    """Run the jobs in ``workers`` spawned processes; leaving early (Ctrl-C, an error) terminates the workers at
    once, and the scenes they were on stay without status, so the next run redoes them."""
    context = multiprocessing.get_context("spawn")
    results = []
    with _single_threaded_children(), context.Pool(workers, initializer=_worker_init) as pool:
        args = [(str(scene), str(out), options) for scene, out in jobs]
        for record in pool.imap_unordered(_reconstruct_job, args):
            results.append(record)
            bar.update()
    return results


def _run_ray(jobs: list[tuple[Path, Path]], options: ReconstructOptions, address: str | None, bar) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise InputError(None, "--backend ray needs Ray: pip install 'geo3d[ray]'") from None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as err:  # no cluster at that address: one line, not Ray's traceback
            raise InputError(None, f"--ray-address {address}: cannot connect to a Ray cluster ({err})") from None
    try:
        task = ray.remote(num_cpus=1)(_ray_reconstruct_scene)
        pending = [task.remote(str(scene), str(out), options) for scene, out in jobs]
        results = []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            results.append(ray.get(done[0]))
            bar.update()
    finally:
        if started:
            ray.shutdown()
    return results


def reconstruct_batch(input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                      options: ReconstructOptions | None = None, workers: int = 1, backend: str = "local",
                      ray_address: str | None = None, overwrite: bool = False, progress: bool = True) -> BatchResult:
    """Reconstruct every scene under ``input_dir`` into ``output_dir/<scene>/`` and write the summary.

    Args:
        input_dir: a scene folder, or a folder of scene folders (see :func:`list_scenes`).
        output_dir: output root (created); must not be the input's scene folders themselves.
        options: reconstruction settings (default :class:`ReconstructOptions`).
        workers: local backend: 1 runs the scenes in this process, N > 1 in N spawned processes (one torch
            thread each). Ray: ignored (Ray schedules one CPU per task).
        backend: ``"local"`` or ``"ray"`` (``ray.init(address=ray_address)`` unless Ray is already initialised;
            with a remote cluster the output folder and the scenes must be on storage every node sees).
        ray_address: Ray cluster address; None starts a local instance.
        overwrite: recompute complete scenes too.
        progress: show a tqdm bar over the scenes.

    Returns:
        :class:`BatchResult`; scene failures are in ``result.failed`` (and in each ``status.json``), not raised.

    Raises:
        InputError: bad options, no scene, output folder colliding with an input scene, Ray missing.
    """
    from tqdm import tqdm

    options = options or ReconstructOptions()
    options.validate()
    if backend not in BACKENDS:
        raise InputError(None, f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if workers < 1:
        raise InputError(None, f"workers: expected >= 1, got {workers}")
    scenes = list_scenes(input_dir)
    output = Path(output_dir)
    outs = [output / scene.name for scene in scenes]
    for scene, out in zip(scenes, outs):
        if out.resolve() == scene.resolve():
            raise InputError(output, f"the output folder would overwrite the input scene {scene}: choose another")
    if options.method == "refined":
        load_refiner(options.checkpoint)  # a bad checkpoint fails the run once, not every scene
    output.mkdir(parents=True, exist_ok=True)
    jobs = [(scene, out) for scene, out in zip(scenes, outs) if overwrite or not is_complete(out, options)]
    with tqdm(total=len(scenes), initial=len(scenes) - len(jobs), desc="reconstruct", unit="scene",
              disable=not progress) as bar:
        if backend == "ray":
            _run_ray(jobs, options, ray_address, bar)
        elif workers > 1 and len(jobs) > 1:
            _run_pool(jobs, options, min(workers, len(jobs)), bar)
        else:
            for scene, out in jobs:
                bar.set_postfix_str(scene.name)
                reconstruct_scene(scene, out, options)
                bar.update()
    records = []
    for scene, out in zip(scenes, outs):
        record = read_status(out)
        if record is None:  # only if a worker vanished without writing
            record = {"scene": out.name, "input": str(scene), "method": options.method, "status": "failed",
                      "error": f"{out / STATUS_FILE}: missing after the run"}
        records.append(record)
    csv_path, md_path = write_summary(output, records)
    return BatchResult(records, [scene.name for scene, _ in jobs], csv_path, md_path)


# --- summary -----------------------------------------------------------------------------------------

def summary_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per scene (:data:`SUMMARY_COLUMNS`, None where not applicable) and, when any ok scene has metrics,
    a last ``mean`` row: the mean of each metric, ``seconds`` and ``peak_rss_mib`` over those scenes."""
    rows = []
    for record in records:
        metrics = record.get("metrics") or {}
        row = {"scene": record.get("scene"), "status": record.get("status"), "method": record.get("method"),
               "error": record.get("error")}
        for key in METRIC_COLUMNS:
            row[key] = metrics.get(key, record.get(key) if key in ("seconds", "peak_rss_mib") else None)
        rows.append(row)
    scored = [row for row, record in zip(rows, records) if record.get("status") == "ok" and record.get("metrics")]
    if scored:
        mean = {"scene": "mean", "status": f"{len(scored)} ok", "error": None,
                "method": ",".join(sorted({str(r["method"]) for r in scored}))}
        for key in METRIC_COLUMNS:
            values = [r[key] for r in scored if r[key] is not None]
            mean[key] = sum(values) / len(values) if values else None
        rows.append(mean)
    return rows


def _markdown_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def write_summary(output: Path, records: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``output/summary.csv`` (full precision) and ``output/summary.md`` (4 significant digits),
    atomically. Lengths (chamfer, accuracy, completeness) are metres, times seconds, memory MiB."""
    rows = summary_rows(records)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else repr(v) if isinstance(v, float) else v for k, v in row.items()})
    csv_path, md_path = output / "summary.csv", output / "summary.md"
    atomic_write_text(csv_path, buffer.getvalue())
    ok = sum(r.get("status") == "ok" for r in records)
    lines = [
        "# geo3d reconstruct", "",
        f"{len(records)} scenes: {ok} ok, {len(records) - ok} failed. Chamfer, accuracy and completeness in metres "
        "(point-to-mesh), F-score at 0.25 % of each scene's diagonal, seconds = fusion to written mesh, peak RSS "
        "in MiB (the worker process's high-water mark).", "",
        "| " + " | ".join(SUMMARY_COLUMNS) + " |",
        "|" + "|".join("---" for _ in SUMMARY_COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_markdown_cell(row[k]) for k in SUMMARY_COLUMNS) + " |" for row in rows]
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


PROBE_SEED = 27
"""The seed of :func:`zoo_probe`'s synthetic scan."""


def zoo_probe(module) -> dict[str, Any]:
    """The model zoo's probe: the refined TSDF of one fixed small fused synthetic scan.

    The scan is built in code (well under a second): the procedural ``blob`` of :mod:`geo3d.synth.rgbd` (seed
    :data:`PROBE_SEED`, diagonal 1 m), ray-cast from 4 random cameras at 160 x 120 with Kinect v1 noise, fused at a
    voxel of 1/40 of the diagonal (truncation 4 voxels). The module predicts at the fused voxels and its dilation's
    candidates (:func:`~pipelines.surface.data.candidate_voxels`), in eval mode. Voxels are sorted by their
    coordinates (the fusion's hash map orders them run-dependently).

    Args:
        module: a :class:`~pipelines.surface.module.SurfaceRefiner` (a zoo entry's weights, or any).

    Returns:
        ``coords`` (M, 3) int32 voxel indices, ``tsdf`` (M,) float32 the refined TSDF (truncation units) and
        ``keep_logit`` (M,) float32 the keep logits.
    """
    import numpy as np
    import torch

    from geo3d.io.rgbd import RGBDFrame
    from geo3d.synth.rgbd import build_rgbd_object, camera_matrix, kinect_noise, random_poses, render_rgbd
    from geo3d.types import DepthMap
    from pipelines.surface.data import candidate_voxels
    from pipelines.surface.fusion import fuse_rgbd

    rng = np.random.default_rng(PROBE_SEED)
    obj = build_rgbd_object("blob", rng)
    poses, K = random_poses(4, rng), camera_matrix(160, 120)
    frames = [RGBDFrame(torch.from_numpy(color), DepthMap(kinect_noise(depth, rng).astype(np.float32), K=K), pose)
              for (color, depth), pose in zip(render_rgbd(obj, poses, K, 160, 120, nthreads=1), poses)]
    volume = fuse_rgbd(frames, 1 / 40, progress=False)
    coords, tsdf, weight, color = candidate_voxels(*volume.voxels(), module.dilation)
    order = torch.from_numpy(np.lexsort(coords.numpy().T[::-1]))
    coords, tsdf, weight, color = coords[order], tsdf[order], weight[order], color[order]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            pred, keep = module(coords, tsdf, weight, color)
    finally:
        module.train(was_training)
    return {"coords": coords.int().numpy(), "tsdf": pred.numpy(), "keep_logit": keep.numpy()}
