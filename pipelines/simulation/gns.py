"""GNS (Sanchez-Gonzalez et al. 2020, "Learning to Simulate Complex Physics with Graph Networks") on PyTorch.

The model sees a window of ``HISTORY`` positions of every particle and predicts each particle's acceleration:

* graph: all pairs of particles within the connectivity radius at the current step (:func:`ops.radius_graph`,
  per batch item, with self loops as GNS), edges ``[sender, receiver]``;
* node features: the 5 standardised previous velocities (5 D), the clipped distances to the 2 D walls in radii
  (:func:`~pipelines.simulation.features.boundary_features`), and a learned 16-d embedding of the particle type;
* edge features: relative displacement ``(p_s - p_r) / r`` and distance ``|p_s - p_r| / r``;
* network: :class:`~pipelines.simulation.layers.EncodeProcessDecode` (latent 128, 10 unshared message-passing
  steps by default), decoding the standardised acceleration;
* integration: semi-implicit Euler on the de-standardised acceleration (metres/step^2).

Every input is relative (velocities, wall distances, displacements), so the model is translation invariant.

:class:`~pipelines.simulation.module.GNSModule` trains it (:mod:`pipelines.simulation.module`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from geo3d.errors import InputError
from ops.neighbors import radius_graph
from pipelines.simulation.features import (
    HISTORY,
    Normalizer,
    edge_features,
    load_statistics,
    next_position,
    node_features,
)
from pipelines.simulation.layers import EncodeProcessDecode


@dataclass(frozen=True)
class NetworkSettings:
    """The graph network of GNS, and of GIOROM's processor on its samples (the defaults are GNS's).

    Attributes:
        latent: latent width of nodes and edges (GNS: 128).
        steps: message-passing steps, unshared weights (GNS: 10).
        mlp_layers: hidden layers per MLP (GNS: 2).
        num_particle_types: size of the particle-type embedding table (GNS: 9); type ids must be below it.
        type_embedding: width of the particle-type embedding (GNS: 16).
        max_neighbors: keep at most this many neighbours per particle in the radius graph (None: all within it).
    """

    latent: int = 128
    steps: int = 10
    mlp_layers: int = 2
    num_particle_types: int = 9
    type_embedding: int = 16
    max_neighbors: int | None = None


def particle_bounds(bounds: torch.Tensor, batch: torch.Tensor | None, n: int) -> torch.Tensor:
    """Bounds for the wall features: (D, 2) as is, or (B, D, 2) gathered per particle to (N, D, 2) by ``batch``."""
    if bounds.dim() == 2:
        return bounds
    if batch is None:
        if bounds.shape[0] != 1:
            raise ValueError(f"GNS: bounds of shape {tuple(bounds.shape)} need a batch vector")
        return bounds[0]
    return bounds[batch]


class GNS(nn.Module):
    """Graph network simulator: windows of positions -> accelerations.

    Args:
        dim: number of axes D (2 or 3).
        network: the graph network's sizes.
        radius: connectivity radius, metres (a buffer: saved with the weights; :meth:`set_statistics` updates it).
        history: window length H.

    Buffers: ``radius`` (scalar) and ``normalizer.*`` (D,) statistics, identity until :meth:`set_statistics`.
    """

    def __init__(self, dim: int = 2, network: NetworkSettings = NetworkSettings(), radius: float = 0.015,
                 history: int = HISTORY):
        super().__init__()
        self.dim, self.history, self.max_neighbors = dim, history, network.max_neighbors
        self.num_particle_types = network.num_particle_types
        self.normalizer = Normalizer.identity(dim)
        self.register_buffer("radius", torch.tensor(float(radius), dtype=torch.float64))
        self.type_embedding = nn.Embedding(network.num_particle_types, network.type_embedding)
        node_in = (history - 1) * dim + 2 * dim + network.type_embedding
        self.net = EncodeProcessDecode(node_in, dim + 1, network.latent, network.steps, dim, network.mlp_layers)

    def set_statistics(self, normalizer: Normalizer, radius: float) -> None:
        """Copy a dataset's normaliser statistics and connectivity radius into the buffers (:func:`load_statistics`)."""
        load_statistics(self, normalizer, radius)

    def graph(self, history: torch.Tensor, particle_types: torch.Tensor, bounds: torch.Tensor,
              batch: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input graph of a window.

        Args:
            history: (H, N, D) positions, metres.
            particle_types: (N,) int64 type ids.
            bounds: (D, 2) ``[min, max]`` metres, or (B, D, 2) per batch item with ``batch``.
            batch: (N,) int64 batch item of each particle (None: one item).

        Returns:
            ``(node_features (N, (H-1) D + 2 D + type_embedding), edge_index (2, E) [sender, receiver],
            edge_features (E, D + 1))``.
        """
        if history.dim() != 3 or history.shape[0] != self.history or history.shape[2] != self.dim:
            raise ValueError(f"GNS: history must be ({self.history}, N, {self.dim}), got {tuple(history.shape)}")
        n = history.shape[1]
        if particle_types.shape != (n,):
            raise ValueError(f"GNS: particle_types must be ({n},), got {tuple(particle_types.shape)}")
        if n and (int(particle_types.min()) < 0 or int(particle_types.max()) >= self.num_particle_types):
            raise InputError(None, f"GNS: particle types must lie in [0, {self.num_particle_types}), got "
                                   f"[{int(particle_types.min())}, {int(particle_types.max())}]: raise "
                                   "num_particle_types")
        radius = float(self.radius)
        position = history[-1]
        edge_index = radius_graph(position.detach(), radius, max_neighbors=self.max_neighbors, batch=batch,
                                  loop=True)
        nodes = node_features(history, self.type_embedding(particle_types.to(position.device)),
                              particle_bounds(bounds, batch, n), radius, self.normalizer)
        return nodes, edge_index, edge_features(position, edge_index, radius)

    def forward(self, history: torch.Tensor, particle_types: torch.Tensor, bounds: torch.Tensor,
                batch: torch.Tensor | None = None) -> torch.Tensor:
        """Standardised accelerations (N, D) (see :meth:`graph` for the arguments)."""
        nodes, edge_index, edges = self.graph(history, particle_types, bounds, batch)
        return self.net(nodes, edge_index, edges)

    def predict_acceleration(self, history: torch.Tensor, particle_types: torch.Tensor, bounds: torch.Tensor,
                             batch: torch.Tensor | None = None) -> torch.Tensor:
        """Accelerations in metres/step^2.

        Args:
            history: (H, N, D) positions, metres.
            particle_types: (N,) int64.
            bounds: (D, 2) metres, or (B, D, 2) with ``batch``.
            batch: (N,) int64 or None.

        Returns:
            (N, D) metres/step^2.
        """
        return self.normalizer.denormalize_acceleration(self(history, particle_types, bounds, batch))

    def step(self, history: torch.Tensor, particle_types: torch.Tensor, bounds: torch.Tensor,
             batch: torch.Tensor | None = None) -> torch.Tensor:
        """Next positions (N, D), metres: semi-implicit Euler on :meth:`predict_acceleration`."""
        return next_position(history, self.predict_acceleration(history, particle_types, bounds, batch))
