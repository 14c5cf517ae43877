"""Importers: photos and videos (structure-from-motion), COLMAP, transforms.json and LLFF captures
to Mega-NeRF's dataset layout.

Each source module parses into a :class:`~mega_nerf.data.importers.common.SourceScene`;
:func:`~mega_nerf.data.importers.writer.write_dataset` aligns, undistorts, splits and writes it.
A new source needs only the first half; structure-from-motion (:mod:`.sfm`, :mod:`.video`) does::

    scene = read_colmap_model(reconstruction, image_dir, source="sfm")  # a pycolmap.Reconstruction
    scene.up, scene.metres_per_unit = np.array([0, 0, 1.0]), 1.0         # when aligned to ENU metres
    write_dataset(scene, output, ImportOptions(val_every=8, downscale=2))
"""
