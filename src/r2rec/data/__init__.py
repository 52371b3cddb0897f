"""Data layer: dataset sources, leave-one-out splits, frozen candidates and ``r2rec prepare``.

Read prepared data through :mod:`r2rec.data.schema` (``PreparedData``); build it with
:func:`r2rec.data.prepare.prepare`.
"""
