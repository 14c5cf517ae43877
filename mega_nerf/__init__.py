"""mega_nerf: city-scale neural radiance fields.

Stages and where they live::

    data/          Mega-NeRF dataset layout (format.py) and on-disk ray chunks (chunks.py)
    geometry/      pixels to rays, near/far, altitude planes, foreground ellipsoid
    partition/     centroid grid, per-image per-cell masks (create_masks.py is the stage)
    fields/        hash-grid field, background field, encodings
    render/        samplers, compositing, the ray renderer
    training/      ray selection per cell and the training loop
    container/     merged model (routing + blending) and the merge stage
    evaluation/    metrics, result pictures and the evaluation stage
    distributed/   torch.distributed set-up shared by multi-process stages
    synthetic/     the embedded procedural city (test oracle and demo scene)
"""

__version__ = "0.1.0"
