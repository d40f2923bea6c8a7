"""TLS helpers for ``pyreg serve``: uvicorn takes one CA file for client certificates, the config
takes a list (``tls.clientcas``), so several are joined into one bundle for the server's lifetime."""

from __future__ import annotations

import atexit
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path


def client_ca_bundle(paths: Sequence[str]) -> str:
    """One PEM file holding every CA of ``paths`` (the file itself when there is only one)."""
    if len(paths) == 1:
        return paths[0]
    fd, bundle = tempfile.mkstemp(prefix="pyreg-clientcas-", suffix=".pem")
    with os.fdopen(fd, "wb") as out:
        for path in paths:
            data = Path(path).read_bytes()
            out.write(data if data.endswith(b"\n") else data + b"\n")
    atexit.register(lambda: Path(bundle).unlink(missing_ok=True))
    return bundle
