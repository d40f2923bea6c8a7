"""pyreg: an OCI registry, its push/pull client and a container runtime, under one import name.

The repository keeps the design's top-level folders (``storage/``, ``registry/``, ``client/``,
``runtime/``); the wheel ships them as ``pyreg.storage``, ``pyreg.registry``, … (pyproject's
``package-dir``), so installing pyreg adds only ``pyreg`` to the import path. In a checkout this
folder's links to those folders give the same names without installing.
"""
