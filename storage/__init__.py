"""Content-addressed storage and the OCI content model.

Everything that is spec knowledge (digests, media types, the name/tag/reference grammar,
manifest validation) lives here exactly once; the registry, client and runtime import it.
This package imports nothing else from the project.
"""
