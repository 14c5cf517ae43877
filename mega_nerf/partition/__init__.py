"""Spatial partition: the centroid grid and per-image, per-cell pixel masks."""
