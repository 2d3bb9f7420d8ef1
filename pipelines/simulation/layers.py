"""Graph-network building blocks of GNS: MLPs, interaction networks and the encode-process-decode stack.

Graphs are given as ``edge_index`` (2, E) int64 ``[sender, receiver]`` (the ``[source, target]`` order of
:func:`ops.radius_graph`); a message travels from ``edge_index[0]`` to ``edge_index[1]`` and is summed at the
receiver with :func:`ops.scatter_sum`. Node tensors are (N, F), edge tensors (E, F); everything works in any
float dtype and on any device.
"""

from __future__ import annotations

import torch
from torch import nn

from ops.scatter import scatter_sum


class MLP(nn.Sequential):
    """``layers`` hidden layers of width ``hidden`` with ReLU, a linear output, then optionally a LayerNorm.

    Args:
        in_features: input width.
        hidden: hidden width.
        out_features: output width.
        layers: number of hidden layers (GNS uses 2): ``layers + 1`` linear maps in all.
        layer_norm: LayerNorm on the output (GNS: every MLP except the decoder's).

    Shapes: (..., in_features) -> (..., out_features).
    """

    def __init__(self, in_features: int, hidden: int, out_features: int, layers: int = 2, layer_norm: bool = True):
        modules: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            modules += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        modules.append(nn.Linear(width, out_features))
        if layer_norm:
            modules.append(nn.LayerNorm(out_features))
        super().__init__(*modules)


class InteractionNetwork(nn.Module):
    """One message-passing step with residual updates (Battaglia et al. 2016, as in GNS).

    ``e' = e + phi_e([e, v_sender, v_receiver])``, ``v' = v + phi_v([v, sum of e' over the edges received])``,
    with ``phi_e``, ``phi_v`` :class:`MLP` of ``hidden`` width and LayerNorm.

    Args:
        node_dim: node latent width (kept).
        edge_dim: edge latent width (kept).
        hidden: hidden width of both MLPs.
        layers: hidden layers of both MLPs.
    """

    def __init__(self, node_dim: int, edge_dim: int, hidden: int, layers: int = 2):
        super().__init__()
        self.edge_mlp = MLP(edge_dim + 2 * node_dim, hidden, edge_dim, layers)
        self.node_mlp = MLP(node_dim + edge_dim, hidden, node_dim, layers)

    def forward(self, nodes: torch.Tensor, edge_index: torch.Tensor, edges: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update nodes and edges.

        Args:
            nodes: (N, node_dim).
            edge_index: (2, E) int64 ``[sender, receiver]``.
            edges: (E, edge_dim).

        Returns:
            ``(nodes (N, node_dim), edges (E, edge_dim))`` after the residual updates.
        """
        sender, receiver = edge_index[0], edge_index[1]
        messages = self.edge_mlp(torch.cat([edges, nodes[sender], nodes[receiver]], dim=-1))
        received = scatter_sum(messages, receiver, nodes.shape[0])
        nodes = nodes + self.node_mlp(torch.cat([nodes, received], dim=-1))
        return nodes, edges + messages


class Processor(nn.Module):
    """``steps`` interaction networks with unshared weights, applied in sequence on a fixed graph.

    Args:
        latent: node and edge latent width (also the MLPs' hidden width).
        steps: number of message-passing steps (GNS: 10).
        layers: hidden layers of each MLP.
    """

    def __init__(self, latent: int, steps: int, layers: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList(InteractionNetwork(latent, latent, latent, layers) for _ in range(steps))

    def forward(self, nodes: torch.Tensor, edge_index: torch.Tensor, edges: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, latent), (2, E), (E, latent) -> ``(nodes (N, latent), edges (E, latent))``."""
        for block in self.blocks:
            nodes, edges = block(nodes, edge_index, edges)
        return nodes, edges


class EncodeProcessDecode(nn.Module):
    """GNS's network: MLP encoders to a latent graph, a :class:`Processor`, an MLP decoder on the nodes.

    Args:
        node_in: node feature width Fn.
        edge_in: edge feature width Fe.
        latent: latent width (GNS: 128).
        steps: message-passing steps (GNS: 10).
        out: output width per node (D for accelerations).
        layers: hidden layers of every MLP (GNS: 2).
    """

    def __init__(self, node_in: int, edge_in: int, latent: int, steps: int, out: int, layers: int = 2):
        super().__init__()
        self.node_encoder = MLP(node_in, latent, latent, layers)
        self.edge_encoder = MLP(edge_in, latent, latent, layers)
        self.processor = Processor(latent, steps, layers)
        self.decoder = MLP(latent, latent, out, layers, layer_norm=False)

    def encode(self, node_features: torch.Tensor, edge_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, Fn), (E, Fe) -> latent ``(nodes (N, latent), edges (E, latent))``."""
        return self.node_encoder(node_features), self.edge_encoder(edge_features)

    def process(self, latent_nodes: torch.Tensor, edge_index: torch.Tensor, latent_edges: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Message passing alone (any latent graph of this width, e.g. a reduced one):
        (N, latent), (2, E) ``[sender, receiver]``, (E, latent) -> ``(nodes (N, latent), edges (E, latent))``."""
        return self.processor(latent_nodes, edge_index, latent_edges)

    def decode(self, latent_nodes: torch.Tensor) -> torch.Tensor:
        """(N, latent) -> (N, out)."""
        return self.decoder(latent_nodes)

    def forward(self, node_features: torch.Tensor, edge_index: torch.Tensor, edge_features: torch.Tensor
                ) -> torch.Tensor:
        """Encode, process, decode.

        Args:
            node_features: (N, Fn).
            edge_index: (2, E) int64 ``[sender, receiver]``.
            edge_features: (E, Fe).

        Returns:
            (N, out).
        """
        nodes, edges = self.encode(node_features, edge_features)
        nodes, _ = self.process(nodes, edge_index, edges)
        return self.decode(nodes)
