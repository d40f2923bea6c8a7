#!/usr/bin/env python3
"""CPU seconds of writing 256 MiB into the page cache of a new file, by the size of each write call.

    python bench/write_size_probe.py                      # 4 MiB, 256 KiB, 1 MiB, 2 MiB, 4 MiB, 256 KiB
    python bench/write_size_probe.py --dir /srv/registry 262144 4194304

Why storage/filesystem.py writes at most WRITE_PIECE (32 KiB) per call: on this project's VM
(Linux 6.18, ext4) the size of a write call picks the size of the page-cache folios it allocates,
and a folio of order k needs a free block of order >= k; once the machine has none of those
left but the big ones it gave back to its host, each first touch costs a host fault per page
(bench/push_cold_bench.py makes that state on purpose; this probe only sees the machine as it
is). The files are new each time and the runs are 3 s apart, so the
kernel gets time to report freed memory again.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

TOTAL = 256 << 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int,
                        default=[4 << 20, 256 << 10, 1 << 20, 2 << 20, 4 << 20, 256 << 10])
    parser.add_argument("--dir", default=None, help="where the files go (default: a temp dir)")
    args = parser.parse_args()
    data = memoryview(bytearray(os.urandom(4 << 20)))
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        for n, size in enumerate(args.sizes):
            path = os.path.join(work, f"probe-{n}")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
            cpu, wall = time.process_time(), time.perf_counter()
            written = 0
            while written < TOTAL:
                for off in range(0, len(data), size):
                    written += os.write(fd, data[off:off + size])
            cpu = time.process_time() - cpu
            os.fsync(fd)
            os.close(fd)
            print(f"{size >> 10:5d} KiB per write(): CPU {cpu:.3f} s, wall with fsync "
                  f"{time.perf_counter() - wall:.3f} s", flush=True)
            os.remove(path)
            time.sleep(3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
