"""Composition: :func:`~slitcombine.combine`, batches, discovery and configuration.

Layer 4 of the package: builds groups (:mod:`slitcombine.group`), extracts, writes
(:mod:`slitcombine.io`) and runs many groups on one machine or a Dask cluster.
"""

__all__: list[str] = []  # the modules of this layer are imported by their full names
