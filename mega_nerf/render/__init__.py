"""Samplers, volume compositing and the ray renderer (foreground + background)."""
