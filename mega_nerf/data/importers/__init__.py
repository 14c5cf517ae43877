"""Importers: COLMAP, transforms.json and LLFF captures to Mega-NeRF's dataset layout.

Each source module parses into a :class:`~mega_nerf.data.importers.common.SourceScene`;
:func:`~mega_nerf.data.importers.writer.write_dataset` aligns, undistorts, splits and writes it.
"""
