"""Cameras, rays and the scene's bounds (altitude planes, foreground ellipsoid)."""
