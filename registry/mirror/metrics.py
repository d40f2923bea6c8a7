"""The mirror's Prometheus counters, per upstream (registered by registry/metrics.py when
``mirror.upstreams`` is set)."""

from __future__ import annotations

from prometheus_client import Counter

HITS = Counter("pyreg_mirror_hits_total", "Mirror requests answered from the cache",
               ["upstream", "kind"], registry=None)
MISSES = Counter("pyreg_mirror_misses_total", "Mirror requests that fetched from upstream",
                 ["upstream", "kind"], registry=None)
STALE = Counter("pyreg_mirror_stale_total", "Tags and tag lists served stale while upstream was unavailable",
                ["upstream"], registry=None)
UPSTREAM_BYTES = Counter("pyreg_mirror_upstream_bytes_total", "Body bytes fetched from upstream",
                         ["upstream"], registry=None)
ERRORS = Counter("pyreg_mirror_upstream_errors_total",
                 "Upstream requests that failed (no answer, 5xx, 429, bad content)",
                 ["upstream"], registry=None)
METRICS = (HITS, MISSES, STALE, UPSTREAM_BYTES, ERRORS)
