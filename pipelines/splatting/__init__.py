"""Sparse-view Gaussian splatting: 2-8 posed images -> 3D Gaussians (visual-hull init, floater pruning)."""
