"""GIOROM-style reduced-order neural operator: dynamics on a sparse sample of the particles, queried anywhere.

The idea follows GIOROM (Viswanath, Chang, Berner, Chen, Bera 2024, "Reduced-Order Neural Operators: Learning
Lagrangian Dynamics on Highly Sparse Graphs", arXiv 2407.03925): a Lagrangian system is reduced not to an
abstract global latent code but to a *sparse subset of its own particles*; a graph network time-stepper evolves the
dynamics on that sparse graph, and a learned kernel integral (a graph neural operator / neural field) evaluates the
result at arbitrary query points from the nearby samples. The expensive message passing then costs the same
whatever the resolution at which the solution is wanted, and each query costs a few small MLP evaluations. This
module is a re-implementation of that idea in the GNS conventions of this package (not GIOROM's code):

1. **Sampling** (:func:`sample_indices`): each step picks ``n`` of the N current particles, by farthest-point
   sampling (spread evenly over the material; exact greedy FPS, :func:`ops.sampling.farthest_point_sampling`,
   optionally over a random candidate subset of ``fps_candidates * n`` particles so that a 100k cloud costs O(n^2)
   rather than O(n N)) or uniformly at random. ``num_samples`` is a count (int) or a fraction of N (float in
   (0, 1]). These settings are :class:`SamplingSettings`.
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
   evaluated at any resolution. Its cost per query is ``O(k * kernel_width^2 + latent^2)``: every (query, sample)
   pair carries only ``kernel_width`` (16) channels for k = 4 neighbours, the per-query encoder and decoder
   ``latent`` (32), and the queries are processed in chunks of ``chunk`` (16384) so that the per-pair tensors stay
   small (at 100k queries, unchunked 25-50 MB temporaries cost more in fresh-page faults than in arithmetic); these
   settings are :class:`QuerySettings`. The processor's cost on the n samples is fixed whatever the number of
   queries.

All inputs are relative (velocities, wall distances, displacements), so the model is translation invariant.
Accelerations are in metres/step^2 and time in stored steps (see :mod:`pipelines.simulation.features`).

:class:`~pipelines.simulation.module.GIOROMModule` trains it on sparse inputs (a fresh sample of every noisy
training window, supervised at all particles of the window or a random subset of them) and evaluates it at full
resolution: validation rolls out every particle (each step re-samples the current cloud with a fixed seed and
queries all particles, each integrated with its own history), logging
:func:`geo3d.metrics.simulation.rollout_metrics` beside the constant-velocity baseline's, with the evaluation
:class:`~pipelines.simulation.module.GNSModule` uses (their shared base class).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from geo3d.errors import InputError
from ops.neighbors import knn, radius_graph
from ops.sampling import farthest_point_sampling
from pipelines.simulation.features import (
    HISTORY,
    Normalizer,
    edge_features,
    load_statistics,
    next_position,
    node_features,
    velocities,
)
from pipelines.simulation.gns import NetworkSettings, particle_bounds
from pipelines.simulation.layers import MLP, EncodeProcessDecode

SAMPLE_METHODS = ("fps", "random")

NETWORK = NetworkSettings(latent=64, steps=4)
"""GIOROM's default processor: smaller than GNS's (latent 64, 4 message-passing steps)."""


# --- sampling ------------------------------------------------------------------------------------------------------

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


# --- settings ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SamplingSettings:
    """How GIOROM picks the sparse samples its processor runs on (:meth:`GIOROM.sample`).

    Attributes:
        num_samples: samples per cloud: an int is a count, a float in (0, 1] a fraction of the particles
            (:func:`resolve_count`).
        method: ``"fps"`` (farthest-point sampling from a random start) or ``"random"`` (:func:`sample_indices`).
        fps_candidates: FPS over a random subset of ``fps_candidates * n`` particles when the cloud is larger
            (None: exact FPS over all).
        sparse_radius: radius of the samples' graph, metres (None: ``radius_factor * radius * (N / n)^(1/D)``).
        radius_factor: multiplier of the automatic sparse radius.
        seed: seed of the sampling in eval mode (deterministic rollouts); training mode uses the global RNG.
    """

    num_samples: int | float = 0.125
    method: str = "fps"
    fps_candidates: int | None = 4
    sparse_radius: float | None = None
    radius_factor: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in SAMPLE_METHODS:
            raise ValueError(f"GIOROM: sample must be one of {SAMPLE_METHODS}, got {self.method!r}")
        resolve_count(self.num_samples, 1)  # validates


@dataclass(frozen=True)
class QuerySettings:
    """GIOROM's kernel-integral query stage (:meth:`GIOROM.query`).

    Attributes:
        neighbors: k, the samples each query integrates over (>= 1).
        kernel_width: channels of the kernel integral (kernel MLP hidden and output, value map): the per-pair width.
        latent: width of the query encoder and of the decoder's hidden layer (per query).
        layers: hidden layers of the query stage's MLPs.
        chunk: evaluate this many queries at a time (None: all at once). The output does not depend on it; chunks
            keep the per-pair tensors small (cache-resident, and below the allocator's mmap threshold, so a step
            does not page-fault fresh memory for them).
    """

    neighbors: int = 4
    kernel_width: int = 16
    latent: int = 32
    layers: int = 1
    chunk: int | None = 16384

    def __post_init__(self) -> None:
        if self.neighbors < 1:
            raise ValueError(f"GIOROM: query_neighbors must be >= 1, got {self.neighbors}")


# --- the model -----------------------------------------------------------------------------------------------------

class GIOROM(nn.Module):
    """Reduced-order neural operator: windows of positions -> accelerations at any query points.

    Args:
        dim: number of axes D (2 or 3).
        network: the processor on the sparse graph (:class:`~pipelines.simulation.gns.NetworkSettings`; the
            decoder is not used, the query stage decodes).
        sampling: how the samples are picked and the sparse graph's radius.
        query: the kernel-integral query stage.
        radius: the data's connectivity radius, metres (a buffer; :meth:`set_statistics` updates it).
        acceleration_features: also feed every node its 4 past accelerations standardised by ``acc_std``
            (:func:`acceleration_features`; not in GNS, see the module docstring).
        history: window length H.

    Attributes ``query_chunk`` (from ``query.chunk``) and the others read by the stages may be changed after
    construction (e.g. the chunk size). Buffers: ``radius`` (scalar float64) and ``normalizer.*`` (D,)
    statistics, identity until :meth:`set_statistics`.
    """

    def __init__(self, dim: int = 2, network: NetworkSettings = NETWORK,
                 sampling: SamplingSettings = SamplingSettings(), query: QuerySettings = QuerySettings(),
                 radius: float = 0.015, acceleration_features: bool = True, history: int = HISTORY):
        super().__init__()
        self.dim, self.history, self.max_neighbors = dim, history, network.max_neighbors
        self.num_particle_types = network.num_particle_types
        self.num_samples, self.sample_method, self.fps_candidates = (sampling.num_samples, sampling.method,
                                                                     sampling.fps_candidates)
        self.fixed_sparse_radius, self.radius_factor = sampling.sparse_radius, float(sampling.radius_factor)
        self.query_neighbors, self.sample_seed, self.query_chunk = query.neighbors, sampling.seed, query.chunk
        self.normalizer = Normalizer.identity(dim)
        self.register_buffer("radius", torch.tensor(float(radius), dtype=torch.float64))
        self.type_embedding = nn.Embedding(network.num_particle_types, network.type_embedding)
        self.use_acceleration_features = acceleration_features
        node_in = ((history - 1) * dim + 2 * dim + network.type_embedding
                   + (history - 2) * dim * int(acceleration_features))
        self.net = EncodeProcessDecode(node_in, dim + 1, network.latent, network.steps, dim, network.mlp_layers)
        del self.net.decoder  # the query stage decodes; keeps the checkpoint free of unused weights
        kernel_in = 2 * dim + 1
        self.kernel = MLP(kernel_in, query.kernel_width, query.kernel_width, query.layers, layer_norm=False)
        self.value = nn.Linear(network.latent, query.kernel_width)
        self.query_encoder = MLP(node_in, query.latent, query.latent, query.layers)
        self.decoder = MLP(query.kernel_width + query.latent, query.latent, dim, query.layers, layer_norm=False)

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
