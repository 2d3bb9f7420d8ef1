"""The CPU path of :func:`ops.rasterize.rasterize_gaussians`: a tile-based 3D Gaussian splatting rasterizer.

gsplat's compositing (``rasterize_to_pixels``) exists only as a CUDA kernel, so on CPU tensors we run our own:

- :mod:`ops.raster.projection`: EWA projection of 3D Gaussians to the image plane (differentiable torch);
- :mod:`ops.raster.colors`: spherical harmonics to per-view RGB (differentiable torch);
- :mod:`ops.raster.tiles`: which Gaussians touch which 16x16 tile, depth-sorted per tile (vectorised torch);
- :mod:`ops.raster.kernels`: numba forward/backward compositing kernels, parallel over tiles;
- :mod:`ops.raster.composite`: the ``torch.autograd.Function`` around those kernels.
"""
