"""Depth completion: an OMNI-DC-style model with a multi-resolution depth integration layer."""
