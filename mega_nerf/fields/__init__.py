"""Radiance fields: encodings, MLPs, the hash-grid field and the background model."""
