"""Distil a merged container (the teacher) into one model of any backend (the student).

One concept per module, small functions over packed tensors:

* :mod:`.cameras`: virtual aerial cameras (jittered training poses, poses over the footprint).
* :mod:`.samples`: the teacher's occupied space and ray samples inside it.
* :mod:`.packs`: a view pack, the unit of distillation data: rays of one view, their samples and
  every teacher output the losses need.
* :mod:`.teacher_cache`: packs precomputed to disk, tied to the container they came from.
* :mod:`.losses`: feature, log-density, colour and rendered-colour losses.
* :mod:`.student`: build the student, initialise it from the teacher, save it as a one-cell container.
* :mod:`.distiller`: the stage schedule, hard views and hard rays, the optimisation loop.
* :mod:`.cli`: ``scripts/distill.py``.
"""
