"""``pyreg build``: a Dockerfile becomes an image in the local store, each ``RUN`` a container.

Two halves meet at one interface, so either side can change without the other:

Front (reading what the user wrote; pure, no I/O beyond reading the context):
- ``dockerfile``  — parser directives (``# syntax``, ``# escape``), line continuations, comments,
  heredocs, JSON (exec) vs shell form, instruction flags; a typed ``Dockerfile`` of ``Stage`` s of
  ``Instruction`` s, each knowing its file and line (``DockerfileError`` names file:line and
  instruction).
- ``expand``      — variable expansion as the Dockerfile reference gives it (``$v``, ``${v}``,
  ``${v:-w}``, ``${v:+w}``, escapes; BuildKit's ``#``/``%``/``/`` forms), per instruction which words
  are expanded; COPY heredoc bodies (``expand_heredoc``).
- ``stages``      — stage graph: ``FROM … AS name``, stage by name or index, ``--from``,
  which stages ``--target`` needs; global ``ARG`` s before the first ``FROM``; platform ARGs.
- ``dockerignore`` — ``.dockerignore`` / ``<Dockerfile>.dockerignore`` with Docker's matching rules.
- ``context``     — the build context: a directory, or a tar on stdin, read safely, filtered by the
  ignore rules, with content checksums for the cache.

Back (making the image):
- ``layers``      — the diff of an overlay upper dir as a deterministic layer tar (whiteouts,
  opaque dirs, hardlinks, clamped mtimes), compressed straight into the local content store.
- ``executor``    — walks the stages: ARG/ENV scoping, ``RUN`` in a runtime container on an
  overlay of the layers so far, ``COPY``/``ADD``, config fields and history, the cache.
- ``cache``       — content-keyed build cache that survives invocations and is pruned by ``prune``.
- ``hashcache``   — digests of context files remembered by stat, so a rebuild re-reads only what changed.
- ``runstep``     — one ``RUN``: a runtime container on the layers so far, its upper dir the diff.
- ``fsops``       — COPY/ADD/WORKDIR through an overlay of the layers in a private mount namespace.

Both halves' value classes are ``records`` (``@record``: a dataclass's ``__init__``, ``==``,
``repr``, frozen), not dataclasses, whose import (inspect, ast, dis) was ~5 ms of a cached rebuild;
``tarfile`` and ``csv`` are imported where a tar or a ``RUN --mount`` is read or written.
"""
