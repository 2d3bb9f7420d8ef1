"""Sparse-voxel surface reconstruction: TSDF fusion on voxel blocks, a learned sparse U-Net refinement, meshes."""
