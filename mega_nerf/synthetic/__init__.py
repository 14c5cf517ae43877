"""Embedded procedural test scenes with exact ground truth (see :mod:`mega_nerf.synthetic.city`)."""
