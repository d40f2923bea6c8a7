"""Verification records: which stored version of a blob some worker or replica saw hash right.

A record is one small object beside Distribution's trees, written through the driver:

    /docker/registry/v2/pyreg-verified/<alg>/<hex>     # holds the blob's FileInfo.version token

Every worker of every replica on the same storage reads it, so a blob is hashed once per storage
(and version), not once per worker lifetime, and a restart does not forget it. The record means
something only while it equals the version token a stat of the blob gives now: any write to the
blob, or a replacement of it, gives another token, and the blob is hashed again (the record then
rewritten). Written after a whole GET hashed the blob, and by the publish of a push or a mirror fill
(registry/layout.py: publish_blob, with the token its snapshot settled). It adds no trust that
was not there: whoever can write a record can write the blob itself, on the same storage.

Costs: a worker reads a record once per blob (then its in-process map, registry/layout.py's
VerifiedBlobs, answers), and a miss is remembered for ``MISS_TTL`` seconds so a blob nobody has
verified yet costs at most one lookup a second per worker. HEADs never look. Only blobs of at
least ``TRUST_MIN_BYTES`` get records: smaller ones cost less to hash than to look up.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Final

from prometheus_client import Counter

from pyreg.storage.digest import Digest
from pyreg.storage.distlayout import ROOT
from pyreg.storage.driver import Driver
from pyreg.storage.errors import PathNotFoundError

VERIFIED: Final = f"{ROOT}/pyreg-verified"
MISS_TTL = 1.0
MAX_RECORD = 256  # a version token is well under this; anything longer is not a record of ours

log = logging.getLogger("pyreg.layout")

LOOKUPS = Counter(
    "pyreg_blob_trust_records_total",
    "Verification records in storage read by this process (registry/verified.py), by result: hit "
    "(another worker or replica verified this version: served unhashed), stale (it verified another "
    "version), missing (none), written, removed",
    ["result"], registry=None)
_HIT, _STALE, _MISSING, _WRITTEN, _REMOVED = (
    LOOKUPS.labels(r) for r in ("hit", "stale", "missing", "written", "removed"))


def verified_path(digest: Digest) -> str:
    return f"{VERIFIED}/{digest.algorithm}/{digest.hex}"


class VerificationRecords:
    """The records of one storage, read and written through its driver (see module docstring)."""

    def __init__(self, driver: Driver, maxmisses: int = 4096) -> None:
        self.driver = driver
        self.writable = True  # False in read-only mode: records are read, not written
        self.maxmisses = maxmisses
        self._misses: OrderedDict[tuple[Digest, str], float] = OrderedDict()  # -> expiry

    async def says(self, digest: Digest, version: str) -> bool:
        """Whether the stored record holds ``version``: some process hashed exactly that version
        of the blob to its digest. Storage errors count as no record (the blob is hashed)."""
        key = (digest, version)
        expiry = self._misses.get(key)
        if expiry is not None:
            if expiry > time.monotonic():
                return False
            del self._misses[key]
        try:
            raw = await self.driver.get_content(verified_path(digest))
        except PathNotFoundError:
            _MISSING.inc()
            raw = None
        except Exception as e:
            log.warning("verification record of %s unreadable (%s): hashing it", digest, e)
            raw = None
        if raw is not None and len(raw) <= MAX_RECORD and raw.decode("utf-8", "replace") == version:
            _HIT.inc()
            return True
        if raw is not None:
            _STALE.inc()
        self._misses[key] = time.monotonic() + MISS_TTL
        if len(self._misses) > self.maxmisses:
            self._misses.popitem(last=False)
        return False

    async def write(self, digest: Digest, version: str) -> None:
        """Record that ``version`` of the blob hashed right (a failed write only costs a hash)."""
        self._misses.pop((digest, version), None)
        if not self.writable:
            return
        try:
            await self.driver.put_content(verified_path(digest), version.encode("utf-8"))
        except Exception as e:
            log.warning("verification record of %s not written: %s", digest, e)
            return
        _WRITTEN.inc()

    async def remove(self, digest: Digest) -> None:
        """The blob is gone, quarantined or found changed: its record goes too."""
        try:
            await self.driver.delete(verified_path(digest))
        except PathNotFoundError:
            return
        except Exception as e:
            log.warning("verification record of %s not removed: %s", digest, e)
            return
        _REMOVED.inc()
