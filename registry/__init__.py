"""The registry server: the OCI distribution-spec HTTP API on top of a storage driver.

- ``config``: the whole YAML configuration (dataclasses), PYREG_* overrides, validation.
- ``app``: ``create_app(config)``, the middleware stack (API-version header, auth, read-only).
- ``routes``: the /v2 endpoints, one module per concept (blobs and uploads, manifests, listings).
- ``layout``: Distribution's on-disk layout on any driver, plus the lookup cache.
- ``uploads``: upload sessions whose state lives in the driver; stale-upload purging.
- ``errors``: the spec's error codes and JSON body.
- ``drivers``: the configured storage driver; ``serve_command``: ``pyreg serve``.
- Operations: ``gc`` (mark-and-sweep safe beside live pushes; ``gc_command``: ``pyreg gc``),
  ``metrics`` (Prometheus ``/metrics``), ``notifications`` (webhooks), ``accesslog`` (request ids
  and one access-log line per request).
"""
