"""GIOROM-style reduced-order neural operator: dynamics on a sparse sample of the particles, queried anywhere.

The idea follows GIOROM (Viswanath, Chang, Berner, Chen, Bera 2024, "Reduced-Order Neural Operators: Learning
Lagrangian Dynamics on Highly Sparse Graphs", arXiv 2407.03925): a Lagrangian system is reduced not to an
abstract global latent code but to a *sparse subset of its own particles*; a graph network time-stepper evolves the
dynamics on that sparse graph, and a learned kernel integral (a graph neural operator / neural field) evaluates the
result at arbitrary query points from the nearby samples. The expensive message passing then costs the same
whatever the resolution at which the solution is wanted, and each query costs a few small MLP evaluations. This
module is a re-implementation of that idea in the GNS conventions of this package (not GIOROM's code):

1. **Sampling** (:func:`sample_indices`): each step picks ``n`` of the N current particles, by farthest-point
   sampling (spread evenly over the material; on the CPU exact greedy FPS in float64 NumPy, optionally over a random
   candidate subset of ``fps_candidates * n`` particles so that a 100k cloud costs O(n^2) rather than O(n N)) or
   uniformly at random. ``num_samples`` is a count (int) or a fraction of N (float in (0, 1]).
2. **Reduced time-stepper** on the samples: GNS's node features (5 standardised velocities, wall distances, type
   embedding; :mod:`pipelines.simulation.features`), plus by default the 4 past accelerations standardised by
   ``acc_std`` (:func:`acceleration_features`; on MPM data with elastic vibrations the next acceleration is about
   96% (R^2) linearly predictable from a particle's own past 4, a signal that velocities standardised by the ~10x
   larger ``vel_std`` bury), and edge features on the radius graph of the *samples*, encoded
   and processed by :class:`~pipelines.simulation.layers.EncodeProcessDecode` (``encode`` + ``process``; the
   decoder is not used) into latent features ``h_j`` at the sample nodes. The samples are ``N / n`` times sparser
   than the particles, so the graph radius is scaled to keep the neighbour count of the full graph:
   ``sparse_radius = radius_factor * radius * (N / n)^(1/D)`` (the mean spacing of points at constant density grows
   as the D-th root of the thinning), unless ``sparse_radius`` is given in metres.
3. **Query stage** (a graph-neural-operator kernel integral, GIOROM's discretization-agnostic decoder): for each
   query point q (the full cloud, or any other points with a position history) and its k nearest samples j
   (:func:`ops.knn`),

       I(q) = (1 / k) sum_j kappa(e_qj) * (W h_j),     e_qj = [(x_q - x_j) / R, |x_q - x_j| / R, (v_q - v_j) / s_v]

   with ``kappa`` a small MLP of the relative position and relative last velocity (standardised), ``W`` a linear map
   and ``*`` a channel-wise product (a diagonal kernel); ``1/k`` is the Monte-Carlo quadrature weight of the
   integral over the k neighbours. The query's own node features (as the samples', with wall distances in the
   data's connectivity radius) are encoded by a small MLP, and a decoder MLP maps ``[I(q), self(q)]`` to the
   query's standardised acceleration. Nothing in a query's output depends on the other queries, so the operator is
   evaluated at any resolution. Its cost per query is ``O(k * kernel_width^2 + query_latent^2)``: every (query,
   sample) pair carries only ``kernel_width`` (16) channels for k = 4 neighbours, the per-query encoder and decoder
   ``query_latent`` (32), and the queries are processed in chunks of ``query_chunk`` (16384) so that the per-pair
   tensors stay small (at 100k queries, unchunked 25-50 MB temporaries cost more in fresh-page faults than in
   arithmetic). The processor's cost on the n samples is fixed whatever the number of queries.

All inputs are relative (velocities, wall distances, displacements), so the model is translation invariant.
Accelerations are in metres/step^2 and time in stored steps (see :mod:`pipelines.simulation.features`).

:class:`GIOROMModule` trains it on sparse inputs (a fresh sample of every noisy training window, supervised at all
particles of the window or a random subset of them) and evaluates it at full resolution: validation rolls out every
particle (each step re-samples the current cloud with a fixed seed and queries all particles, each integrated with
its own history), logging :func:`geo3d.metrics.simulation.rollout_metrics` beside the constant-velocity baseline's
exactly as :class:`~pipelines.simulation.gns.GNSModule` does (its evaluation methods are reused).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from geo3d.errors import InputError
from ops.neighbors import knn, radius_graph
from pipelines.simulation.features import (
    HISTORY,
    KINEMATIC_TYPE,
    Normalizer,
    edge_features,
    load_statistics,
    next_position,
    node_features,
    velocities,
)
from pipelines.simulation.gns import GNSModule, particle_bounds
from pipelines.simulation.layers import MLP, EncodeProcessDecode

SAMPLE_METHODS = ("fps", "random")


# --- sampling ------------------------------------------------------------------------------------------------------

def farthest_point_sampling(points: torch.Tensor, count: int, start: int = 0) -> torch.Tensor:
    """Exact greedy farthest-point sampling.

    Starting from ``start``, repeatedly add the point whose distance to the already chosen ones is largest (ties:
    the lowest index). Distances are computed in float64 (NumPy on the CPU, whose threads do not stall on a busy
    machine as torch's do; torch on other devices).

    Args:
        points: (N, D) positions, metres.
        count: points to pick, 0 <= count <= N.
        start: index of the first point.

    Returns:
        (count,) int64 indices into ``points`` in the order picked, on ``points``' device.
    """
    n = points.shape[0]
    if not 0 <= count <= n:
        raise ValueError(f"farthest_point_sampling: count must lie in [0, {n}], got {count}")
    if count and not 0 <= start < n:
        raise ValueError(f"farthest_point_sampling: start must lie in [0, {n}), got {start}")
    if points.device.type == "cpu":
        axes = np.ascontiguousarray(points.detach().double().numpy().T)  # (D, N): contiguous 1-D passes
        out = np.empty(count, dtype=np.int64)
        nearest = np.full(n, np.inf)
        d2, diff = np.empty(n), np.empty(n)
        last = start
        for i in range(count):
            out[i] = last
            d2.fill(0.0)
            for axis in axes:  # ((0 + dx^2) + dy^2) + dz^2
                np.subtract(axis, axis[last], out=diff)
                np.multiply(diff, diff, out=diff)
                np.add(d2, diff, out=d2)
            np.minimum(nearest, d2, out=nearest)
            last = int(nearest.argmax())
        return torch.from_numpy(out)
    p = points.detach().double()
    out = torch.empty(count, dtype=torch.int64, device=points.device)
    nearest = torch.full((n,), math.inf, dtype=torch.float64, device=points.device)
    last = torch.tensor(start, device=points.device)
    for i in range(count):
        out[i] = last
        nearest = torch.minimum(nearest, (p - p[last]).square().sum(dim=1))
        last = torch.argmax(nearest)
    return out


def sample_indices(points: torch.Tensor, count: int, method: str = "fps", generator: torch.Generator | None = None,
                   fps_candidates: int | None = None) -> torch.Tensor:
    """A sparse subset of a point cloud.

    Args:
        points: (N, D) positions, metres.
        count: points to pick, 0 <= count <= N.
        method: ``"fps"`` (farthest-point sampling from a random start, :func:`farthest_point_sampling`) or
            ``"random"`` (uniform without replacement).
        generator: CPU torch generator for the random start / candidates / draw (None: the global one), so a
            seeded generator gives the same subset every time.
        fps_candidates: with ``"fps"``, run FPS over a uniform random subset of ``fps_candidates * count`` points
            when N is larger (cost O(fps_candidates * count^2) instead of O(count * N); the result is spread
            like an FPS of the candidates, which are themselves a uniform sample). None: over all points.

    Returns:
        (count,) int64 indices into ``points``, distinct, on ``points``' device.
    """
    n = points.shape[0]
    if method not in SAMPLE_METHODS:
        raise ValueError(f"sample_indices: method must be one of {SAMPLE_METHODS}, got {method!r}")
    if not 0 <= count <= n:
        raise ValueError(f"sample_indices: count must lie in [0, {n}], got {count}")
    if method == "random":
        return torch.randperm(n, generator=generator)[:count].to(points.device)
    candidates = None
    if fps_candidates is not None and n > fps_candidates * count:
        candidates = torch.randperm(n, generator=generator)[:fps_candidates * count].to(points.device)
    pool = points if candidates is None else points[candidates]
    start = int(torch.randint(pool.shape[0], (1,), generator=generator)) if count else 0
    picked = farthest_point_sampling(pool, count, start)
    return picked if candidates is None else candidates[picked]


def resolve_count(num_samples: int | float, n: int) -> int:
    """Samples to take of ``n`` points: an int is a count (capped at n), a float in (0, 1] a fraction of n
    (rounded up). At least 1 when n > 0."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, float)):
        raise ValueError(f"num_samples must be an int (count) or a float in (0, 1] (fraction), got {num_samples!r}")
    if isinstance(num_samples, float):
        if not 0.0 < num_samples <= 1.0:
            raise ValueError(f"num_samples as a fraction must lie in (0, 1], got {num_samples}")
        count = math.ceil(num_samples * n)
    else:
        if num_samples < 1:
            raise ValueError(f"num_samples as a count must be >= 1, got {num_samples}")
        count = num_samples
    return min(max(count, 1), n)


def acceleration_features(history: torch.Tensor, normalizer: Normalizer) -> torch.Tensor:
    """The window's past accelerations, standardised, oldest first, flattened per particle.

    Args:
        history: (H, N, D) positions, metres.
        normalizer: supplies ``acc_mean`` / ``acc_std``.

    Returns:
        (N, (H - 2) D): particle i's row is ``[a_1 (D), ..., a_{H-2} (D)]`` with ``a = v_{t} - v_{t-1}``
        (metres/step^2) standardised.
    """
    v = velocities(history)
    a = normalizer.normalize_acceleration(v[1:] - v[:-1])
    return a.permute(1, 0, 2).reshape(history.shape[1], -1)


def _groups(batch: torch.Tensor | None, n: int, device: torch.device) -> list[torch.Tensor]:
    """(n_b,) int64 indices of each batch item, ascending item order (one group when ``batch`` is None)."""
    if batch is None:
        return [torch.arange(n, device=device)]
    order = torch.argsort(batch, stable=True)
    return [g for g in torch.split(order, torch.bincount(batch).tolist()) if len(g)]


# --- the model -----------------------------------------------------------------------------------------------------

class GIOROM(nn.Module):
    """Reduced-order neural operator: windows of positions -> accelerations at any query points.

    Args:
        dim: number of axes D (2 or 3).
        latent: latent width of the sparse graph's nodes and edges (the processor).
        steps: message-passing steps on the sparse graph.
        mlp_layers: hidden layers of the processor's MLPs.
        num_particle_types: size of the type embedding table (GNS: 9).
        type_embedding: width of the particle-type embedding.
        radius: the data's connectivity radius, metres (a buffer; :meth:`set_statistics` updates it).
        history: window length H.
        num_samples: sparse samples per cloud: an int is a count, a float in (0, 1] a fraction of the particles.
        sample: ``"fps"`` or ``"random"`` (:func:`sample_indices`).
        fps_candidates: FPS over a random subset of ``fps_candidates * n`` particles when the cloud is larger
            (None: exact FPS over all).
        sparse_radius: radius of the samples' graph, metres (None: ``radius_factor * radius * (N / n)^(1/D)``).
        radius_factor: multiplier of the automatic sparse radius.
        max_neighbors: keep at most this many neighbours per sample in the sparse graph (None: all).
        query_neighbors: k, the samples each query integrates over.
        kernel_width: channels of the kernel integral (kernel MLP hidden and output, value map): the per-pair width.
        query_latent: width of the query encoder and of the decoder's hidden layer (per query).
        query_layers: hidden layers of the query stage's MLPs.
        sample_seed: seed of the sampling in eval mode (deterministic rollouts); training mode uses the global RNG.
        acceleration_features: also feed every node its 4 past accelerations standardised by ``acc_std``
            (:func:`acceleration_features`; not in GNS, see the module docstring).
        query_chunk: evaluate the query stage this many queries at a time (None: all at once). The output does not
            depend on it; chunks keep the per-pair tensors small (cache-resident, and below the allocator's mmap
            threshold, so a step does not page-fault fresh memory for them).

    Buffers: ``radius`` (scalar float64) and ``normalizer.*`` (D,) statistics, identity until
    :meth:`set_statistics`.
    """

    def __init__(self, dim: int = 2, latent: int = 64, steps: int = 4, mlp_layers: int = 2,
                 num_particle_types: int = 9, type_embedding: int = 16, radius: float = 0.015,
                 history: int = HISTORY, num_samples: int | float = 0.125, sample: str = "fps",
                 fps_candidates: int | None = 4, sparse_radius: float | None = None, radius_factor: float = 1.0,
                 max_neighbors: int | None = None, query_neighbors: int = 4, kernel_width: int = 16,
                 query_latent: int = 32, query_layers: int = 1, sample_seed: int = 0,
                 acceleration_features: bool = True, query_chunk: int | None = 16384):
        super().__init__()
        if sample not in SAMPLE_METHODS:
            raise ValueError(f"GIOROM: sample must be one of {SAMPLE_METHODS}, got {sample!r}")
        resolve_count(num_samples, 1)  # validates
        if query_neighbors < 1:
            raise ValueError(f"GIOROM: query_neighbors must be >= 1, got {query_neighbors}")
        self.dim, self.history, self.max_neighbors = dim, history, max_neighbors
        self.num_particle_types = num_particle_types
        self.num_samples, self.sample_method, self.fps_candidates = num_samples, sample, fps_candidates
        self.fixed_sparse_radius, self.radius_factor = sparse_radius, float(radius_factor)
        self.query_neighbors, self.sample_seed, self.query_chunk = query_neighbors, sample_seed, query_chunk
        self.normalizer = Normalizer.identity(dim)
        self.register_buffer("radius", torch.tensor(float(radius), dtype=torch.float64))
        self.type_embedding = nn.Embedding(num_particle_types, type_embedding)
        self.use_acceleration_features = acceleration_features
        node_in = (history - 1) * dim + 2 * dim + type_embedding + (history - 2) * dim * int(acceleration_features)
        self.net = EncodeProcessDecode(node_in, dim + 1, latent, steps, dim, mlp_layers)
        del self.net.decoder  # the query stage decodes; keeps the checkpoint free of unused weights
        kernel_in = 2 * dim + 1
        self.kernel = MLP(kernel_in, kernel_width, kernel_width, query_layers, layer_norm=False)
        self.value = nn.Linear(latent, kernel_width)
        self.query_encoder = MLP(node_in, query_latent, query_latent, query_layers)
        self.decoder = MLP(kernel_width + query_latent, query_latent, dim, query_layers, layer_norm=False)

    def set_statistics(self, normalizer: Normalizer, radius: float) -> None:
        """Copy a dataset's normaliser statistics and connectivity radius into the buffers (:func:`load_statistics`)."""
        load_statistics(self, normalizer, radius)

    # --- stages ---------------------------------------------------------------------------------------------------

    def node_features(self, history: torch.Tensor, particle_types: torch.Tensor, bounds: torch.Tensor,
                      batch: torch.Tensor | None, radius: float) -> torch.Tensor:
        """Per-particle input features (samples and queries alike).

        Args:
            history: (H, N, D) positions, metres.
            particle_types: (N,) int64.
            bounds: (D, 2) metres, or (B, D, 2) with ``batch``.
            batch: (N,) int64 or None.
            radius: metres, the unit of the wall distances.

        Returns:
            (N, F): standardised velocities ((H-1) D), wall distances in ``radius`` clipped to [-1, 1] (2 D), the
            type embedding, and with ``acceleration_features`` the standardised past accelerations ((H-2) D).
        """
        position = history[-1]
        parts = [node_features(history, self.type_embedding(particle_types.to(position.device)),
                               particle_bounds(bounds, batch, position.shape[0]), radius, self.normalizer)]
        if self.use_acceleration_features:
            parts.append(acceleration_features(history, self.normalizer))
        return torch.cat(parts, dim=-1)

    def sparse_radius(self, num_points: int, num_samples: int) -> float:
        """Radius of the samples' graph, metres: ``sparse_radius`` if configured, else
        ``radius_factor * radius * (num_points / num_samples)^(1/D)``."""
        if self.fixed_sparse_radius is not None:
            return float(self.fixed_sparse_radius)
        return self.radius_factor * float(self.radius) * (num_points / max(num_samples, 1)) ** (1.0 / self.dim)

    def sample(self, position: torch.Tensor, batch: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Indices of the sparse samples, per batch item.

        Args:
            position: (N, D) current positions, metres.
            batch: (N,) int64 batch item of each particle, or None.
            generator: CPU generator (None: a fresh one seeded with ``sample_seed`` in eval mode, the global RNG
                in training mode).

        Returns:
            (n,) int64 indices into the N particles (each item's ``resolve_count(num_samples, N_b)``).
        """
        if generator is None and not self.training:
            generator = torch.Generator().manual_seed(self.sample_seed)
        out = []
        for group in _groups(batch, position.shape[0], position.device):
            count = resolve_count(self.num_samples, len(group))
            out.append(group[sample_indices(position[group], count, self.sample_method, generator,
                                            self.fps_candidates)])
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64, device=position.device)

    def encode_samples(self, history: torch.Tensor, particle_types: torch.Tensor, bounds: torch.Tensor,
                       batch: torch.Tensor | None, sparse_radius: float) -> torch.Tensor:
        """Reduced time-stepper: encode + process the radius graph of the samples.

        Args:
            history: (H, n, D) positions of the samples, metres.
            particle_types: (n,) int64.
            bounds: (D, 2) metres, or (B, D, 2) with ``batch``.
            batch: (n,) int64 batch item of each sample, or None.
            sparse_radius: graph radius, metres.

        Returns:
            (n, latent) latent features at the sample nodes.
        """
        position = history[-1]
        edge_index = radius_graph(position.detach(), sparse_radius, max_neighbors=self.max_neighbors, batch=batch,
                                  loop=True)
        nodes = self.node_features(history, particle_types, bounds, batch, sparse_radius)
        latent_nodes, latent_edges = self.net.encode(nodes, edge_features(position, edge_index, sparse_radius))
        latent_nodes, _ = self.net.process(latent_nodes, edge_index, latent_edges)
        return latent_nodes

    def query(self, sample_latent: torch.Tensor, sample_history: torch.Tensor, sample_types: torch.Tensor,
              query_history: torch.Tensor, bounds: torch.Tensor, sparse_radius: float,
              query_types: torch.Tensor | None = None, sample_batch: torch.Tensor | None = None,
              query_batch: torch.Tensor | None = None) -> torch.Tensor:
        """Kernel-integral query stage: standardised accelerations at arbitrary points.

        Args:
            sample_latent: (n, latent) from :meth:`encode_samples`.
            sample_history: (H, n, D) positions of the samples, metres.
            sample_types: (n,) int64.
            query_history: (H, Q, D) positions of the query points, metres.
            bounds: (D, 2) metres, or (B, D, 2) with the batch vectors.
            sparse_radius: metres (relative positions are divided by it).
            query_types: (Q,) int64 (None: the type of each query's nearest sample).
            sample_batch, query_batch: (n,), (Q,) int64 batch items, both or neither.

        Returns:
            (Q, D) standardised accelerations; row q depends only on query q and the samples.
        """
        q_pos, s_pos = query_history[-1], sample_history[-1]
        k = min(self.query_neighbors, s_pos.shape[0])
        index, _ = knn(s_pos.detach(), q_pos.detach(), k, sample_batch, query_batch)
        index = index.to(q_pos.device)
        if query_types is None:
            query_types = sample_types.to(index.device)[index[:, 0].clamp(min=0)]
        values = self.value(sample_latent)
        s_vel = self.normalizer.normalize_velocity(sample_history[-1] - sample_history[-2])
        q = q_pos.shape[0]
        chunk = self.query_chunk or max(q, 1)
        out = [self._query_chunk(values, s_pos, s_vel, query_history[:, lo:lo + chunk], query_types[lo:lo + chunk],
                                 bounds, query_batch[lo:lo + chunk] if query_batch is not None else None,
                                 index[lo:lo + chunk], sparse_radius) for lo in range(0, q, chunk)]
        return torch.cat(out) if out else q_pos.new_zeros((0, self.dim))

    def _query_chunk(self, values: torch.Tensor, s_pos: torch.Tensor, s_vel: torch.Tensor,
                     query_history: torch.Tensor, query_types: torch.Tensor, bounds: torch.Tensor,
                     query_batch: torch.Tensor | None, index: torch.Tensor, sparse_radius: float) -> torch.Tensor:
        """:meth:`query` for a slice of the queries: ``index`` (Q, k) their samples (-1: none)."""
        q_pos = query_history[-1]
        own = self.node_features(query_history, query_types, bounds, query_batch, float(self.radius))
        valid = index >= 0
        index = index.clamp(min=0)
        # relative standardised last velocity: (v_q - mean) / std - (v_j - mean) / std = (v_q - v_j) / std
        last = slice((self.history - 2) * self.dim, (self.history - 1) * self.dim)
        rel = (q_pos[:, None] - s_pos[index]) / sparse_radius
        pair = torch.cat([rel, rel.norm(dim=-1, keepdim=True), own[:, None, last] - s_vel[index]], dim=-1)
        terms = self.kernel(pair) * values[index]
        if bool(valid.all()):
            integral = terms.sum(dim=1) / index.shape[1]
        else:
            weight = valid.to(terms.dtype)
            integral = (terms * weight[..., None]).sum(dim=1) / weight.sum(dim=1, keepdim=True).clamp(min=1)
        return self.decoder(torch.cat([integral, self.query_encoder(own)], dim=-1))

    # --- whole model ----------------------------------------------------------------------------------------------

    def _check(self, name: str, history: torch.Tensor, particle_types: torch.Tensor | None) -> None:
        if history.dim() != 3 or history.shape[0] != self.history or history.shape[2] != self.dim:
            raise ValueError(f"GIOROM: {name} must be ({self.history}, N, {self.dim}), got {tuple(history.shape)}")
        if particle_types is None:
            return
        n = history.shape[1]
        if particle_types.shape != (n,):
            raise ValueError(f"GIOROM: {name} types must be ({n},), got {tuple(particle_types.shape)}")
        if n and (int(particle_types.min()) < 0 or int(particle_types.max()) >= self.num_particle_types):
            raise InputError(None, f"GIOROM: particle types must lie in [0, {self.num_particle_types}), got "
                                   f"[{int(particle_types.min())}, {int(particle_types.max())}]: raise "
                                   "num_particle_types")

    def forward(self, history: torch.Tensor, particle_types: torch.Tensor, bounds: torch.Tensor,
                query_history: torch.Tensor | None = None, *, batch: torch.Tensor | None = None,
                query_types: torch.Tensor | None = None, query_batch: torch.Tensor | None = None,
                sample_index: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standardised accelerations (Q, D) at the query points (see :meth:`predict_acceleration`)."""
        self._check("history", history, particle_types)
        n = history.shape[1]
        if query_history is None:
            if query_types is not None or query_batch is not None:
                raise ValueError("GIOROM: query_types / query_batch need query_history")
            query_history, query_types, query_batch = history, particle_types, batch
        else:
            self._check("query_history", query_history, query_types)
            if (batch is None) != (query_batch is None):
                raise ValueError("GIOROM: batch and query_batch: give both or neither")
        if sample_index is None:
            sample_index = self.sample(history[-1], batch, generator)
        sample_index = sample_index.to(history.device)
        sample_batch = batch[sample_index] if batch is not None else None
        radius = self.sparse_radius(n, sample_index.shape[0])
        sample_history, sample_types = history[:, sample_index], particle_types[sample_index]
        latent = self.encode_samples(sample_history, sample_types, bounds, sample_batch, radius)
        return self.query(latent, sample_history, sample_types, query_history, bounds, radius, query_types,
                          sample_batch, query_batch)

    def predict_acceleration(self, history: torch.Tensor, particle_types: torch.Tensor, bounds: torch.Tensor,
                             query_history: torch.Tensor | None = None, *, batch: torch.Tensor | None = None,
                             query_types: torch.Tensor | None = None, query_batch: torch.Tensor | None = None,
                             sample_index: torch.Tensor | None = None,
                             generator: torch.Generator | None = None) -> torch.Tensor:
        """Accelerations at the query points, metres/step^2.

        Args:
            history: (H, N, D) positions of the particles the dynamics are computed from, metres.
            particle_types: (N,) int64.
            bounds: (D, 2) ``[min, max]`` metres, or (B, D, 2) with ``batch``.
            query_history: (H, Q, D) positions of the query points, metres (None: the N particles).
            batch: (N,) int64 batch item of each particle (None: one item).
            query_types: (Q,) int64 (None: the nearest sample's type).
            query_batch: (Q,) int64, required with ``batch`` when ``query_history`` is given.
            sample_index: (n,) int64 indices of the samples (None: :meth:`sample`).
            generator: CPU generator for the sampling (None: see :meth:`sample`).

        Returns:
            (Q, D) metres/step^2.
        """
        out = self(history, particle_types, bounds, query_history, batch=batch, query_types=query_types,
                   query_batch=query_batch, sample_index=sample_index, generator=generator)
        return self.normalizer.denormalize_acceleration(out)

    def step(self, history: torch.Tensor, particle_types: torch.Tensor, bounds: torch.Tensor,
             batch: torch.Tensor | None = None) -> torch.Tensor:
        """Next positions (N, D) of all particles, metres: semi-implicit Euler on :meth:`predict_acceleration`
        (each particle with its own history)."""
        return next_position(history, self.predict_acceleration(history, particle_types, bounds, batch=batch))


# --- training ------------------------------------------------------------------------------------------------------

class GIOROMModule(pl.LightningModule):
    """Training (sparse) and full-resolution evaluation of :class:`GIOROM`.

    Training: every noisy window of the datamodule is re-sampled (a fresh random FPS start or random subset), the
    processor runs on the samples, and the loss is the MSE of the standardised acceleration at the query points:
    all particles of the window, or ``train_queries`` of them drawn at random (kinematic particles masked out).
    Evaluation reuses :class:`~pipelines.simulation.gns.GNSModule`'s: one-step ``val/loss`` on clean windows at all
    particles, rollouts of every particle (deterministic sampling, seed ``sample_seed``), ``rollout_metrics``
    (``mse_1/5/20/full``, ``chamfer``, ``ekin_error``) and the constant-velocity ``baseline_*``. At ``setup`` the
    datamodule's normaliser and radius are copied into the model's buffers, so checkpoints carry them.

    Args:
        dim, latent, steps, mlp_layers, num_particle_types, type_embedding, num_samples, sample, fps_candidates,
            sparse_radius, radius_factor, max_neighbors, query_neighbors, kernel_width, query_latent, query_layers,
            sample_seed, acceleration_features: see :class:`GIOROM`.
        train_queries: query points per training batch: None = all particles, an int a count, a float in (0, 1]
            a fraction of the batch's particles.
        radius: connectivity radius, metres (None: the datamodule's).
        lr: Adam learning rate at step 0.
        lr_final: learning rate reached at ``trainer.max_steps`` (exponential decay).
        val_rollout_steps: steps rolled out per validation trajectory.
        test_rollout_steps: steps per test trajectory (None: to the end).
        val_windows: clean one-step windows per validation trajectory for ``val/loss``.
        particle_mass: particle mass for the kinetic-energy error, kg.
    """

    def __init__(self, dim: int = 2, latent: int = 64, steps: int = 4, mlp_layers: int = 2,
                 num_particle_types: int = 9, type_embedding: int = 16, num_samples: int | float = 0.125,
                 sample: str = "fps", fps_candidates: int | None = 4, sparse_radius: float | None = None,
                 radius_factor: float = 1.0, max_neighbors: int | None = None, query_neighbors: int = 4,
                 kernel_width: int = 16, query_latent: int = 32, query_layers: int = 1, sample_seed: int = 0,
                 train_queries: int | float | None = None, radius: float | None = None, lr: float = 1e-3,
                 lr_final: float = 1e-5, val_rollout_steps: int = 20, test_rollout_steps: int | None = None,
                 val_windows: int = 16, particle_mass: float = 1.0, acceleration_features: bool = True):
        super().__init__()
        self.save_hyperparameters()
        if train_queries is not None:
            resolve_count(train_queries, 1)  # validates
        self.model = GIOROM(dim, latent, steps, mlp_layers, num_particle_types, type_embedding,
                            radius=radius if radius is not None else 1.0, num_samples=num_samples, sample=sample,
                            fps_candidates=fps_candidates, sparse_radius=sparse_radius, radius_factor=radius_factor,
                            max_neighbors=max_neighbors, query_neighbors=query_neighbors, kernel_width=kernel_width,
                            query_latent=query_latent, query_layers=query_layers, sample_seed=sample_seed,
                            acceleration_features=acceleration_features)

    # GNSModule's data hooks, evaluation and optimiser work unchanged on any model with ``history``, ``step`` and
    # ``set_statistics``; reuse them rather than copy them.
    setup = GNSModule.setup
    _clean_windows = GNSModule._clean_windows
    rollout_trajectory = GNSModule.rollout_trajectory
    _evaluate = GNSModule._evaluate
    validation_step = GNSModule.validation_step
    test_step = GNSModule.test_step
    predict_step = GNSModule.predict_step
    configure_optimizers = GNSModule.configure_optimizers

    def forward(self, history: torch.Tensor, particle_types: torch.Tensor, bounds: torch.Tensor,
                query_history: torch.Tensor | None = None, batch: torch.Tensor | None = None) -> torch.Tensor:
        """Accelerations (Q, D), metres/step^2 (:meth:`GIOROM.predict_acceleration`)."""
        return self.model.predict_acceleration(history, particle_types, bounds, query_history, batch=batch)

    def one_step_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """MSE of the standardised acceleration over non-kinematic query particles and axes (scalar).

        In training mode with ``train_queries`` set, the queries are a random subset of the batch's particles;
        otherwise all of them.

        Args:
            batch: :func:`~pipelines.simulation.data.collate_windows` output (target in metres/step^2).
        """
        history, types, bounds = batch["history"], batch["particle_types"], batch["bounds"]
        items = batch.get("batch")
        target = batch["target_acceleration"]
        kwargs: dict[str, Any] = {"batch": items}
        if self.training and self.hparams.train_queries is not None:
            n = history.shape[1]
            chosen = torch.randperm(n)[:resolve_count(self.hparams.train_queries, n)].to(history.device)
            types_q, target = types[chosen], target[chosen]
            kwargs.update(query_history=history[:, chosen], query_types=types_q,
                          query_batch=items[chosen] if items is not None else None)
        else:
            types_q = types
        pred = self.model(history, types, bounds, **kwargs)
        err = ((pred - self.model.normalizer.normalize_acceleration(target)) ** 2)[types_q != KINEMATIC_TYPE]
        return err.mean() if err.numel() else pred.sum() * 0.0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.one_step_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["num_particles"]))
        return loss
