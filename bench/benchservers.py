"""The servers the blob benchmarks run side by side, and the push they time: a pyreg tree (this
checkout or an exported revision) or Debian's Distribution, each as a ``Target`` whose process
tree's CPU time (``registry_bench.cpu_seconds``) is what a push or pull cost it; one copy for
``blob_cpu_bench``, ``chunked_push_bench`` and ``push_cold_bench``."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fixtures.peers import DistributionRegistry, free_port, stop_process, wait_for_http  # noqa: E402

MiB = 1 << 20


@dataclass
class Target:
    name: str
    url: str
    pid: int
    stop: Callable[[], None]


def start_pyreg_tree(work: Path, tree: Path, name: str, workers: int = 1) -> Target:
    """``pyreg serve`` from ``tree`` (PYTHONPATH), its data under ``work``, access log off, its
    own bytecode cache (a base revision's .pyc never mixes with this checkout's)."""
    port = free_port()
    logfile = work / f"{name}.log"
    log = open(logfile, "ab")  # noqa: SIM115 - lives as long as the server
    env = dict(os.environ, PYREG_LOG_ACCESSLOG_DISABLED="true", PYTHONPATH=str(tree),
               PYTHONPYCACHEPREFIX=str(work / f"pycache-{name}"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.Popen([sys.executable, "-m", "pyreg", "serve", "--addr", f"127.0.0.1:{port}",
                             "--data-dir", str(work / f"{name}-data"), "--workers", str(workers)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                            cwd=str(work))
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/v2/", proc, log=logfile)
    if workers > 1:
        time.sleep(1.0)  # every worker up, not only the one that answered

    def stop() -> None:
        stop_process(proc)
        log.close()

    return Target(name, url, proc.pid, stop)


def start_distribution(work: Path) -> Target:
    """Debian's docker-registry with its packaged in-memory blob descriptor cache."""
    reg = DistributionRegistry(work / "distribution-root", work / "distribution", cache=True)
    reg.start()
    assert reg.proc is not None
    return Target("distribution", reg.url, reg.proc.pid, reg.stop)


def location(url: str, headers: str) -> str:
    """The absolute upload URL from a response's headers (curl -D -)."""
    found = re.search(r"(?im)^location:\s*(\S+)", headers)
    assert found, headers
    loc = found.group(1)
    return url + loc if loc.startswith("/") else loc


def with_digest(loc: str, digest: str) -> str:
    return loc + ("&" if "?" in loc else "?") + f"digest={digest}"


def curl_headers(*args: str) -> str:
    """curl's response headers (the last response's, after any 100 Continue); fails loudly."""
    result = subprocess.run(["curl", "-sS", "-f", "-D", "-", "-o", "/dev/null", *args],
                            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"curl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def push_monolithic(url: str, repo: str, path: Path, digest: str) -> None:
    """POST, then one ``PUT ?digest=`` streaming the file (``curl -T``: not read into memory)."""
    loc = location(url, curl_headers("-X", "POST", f"{url}/v2/{repo}/blobs/uploads/"))
    curl_headers("-X", "PUT", "-H", "Content-Type: application/octet-stream", "-T", str(path),
                 with_digest(loc, digest))


def random_blob(path: Path, size: int) -> str:
    """A new file of ``size`` random bytes; its digest."""
    hasher = hashlib.sha256()
    with open(path, "wb") as f:
        for off in range(0, size, MiB):
            chunk = os.urandom(min(MiB, size - off))
            f.write(chunk)
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()
