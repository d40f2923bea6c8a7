"""Image reference -> what the runtime needs (config and layer dirs), with a start-up cache.

Resolving through ``storage.localstore`` imports dataclasses, hashlib, tarfile and friends: tens
of milliseconds of a ``pyreg run`` budget of 50. So a resolution is remembered in
``<run root>/images.json``, keyed by the reference exactly as typed plus everything that can
change its meaning (the environment variables naming the store, the default registry and the
client config), and trusted only while the store's ``index.json`` and the client config file are
the same files with the same size and mtime, and every layer directory still exists. Any pull,
tag, rmi or config edit therefore sends the next run down the full path.
"""

from __future__ import annotations

import json
import os

from pyreg.runtime import state

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_KEY_ENV = ("PYREG_STORE", "PYREG_REGISTRY", "PYREG_CONFIG", "HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME")


def _cache_path() -> str:
    return os.path.join(state.run_root(), "images.json")


def _fingerprint(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _key(ref: str) -> str:
    return json.dumps([ref, os.geteuid(), *(os.environ.get(k) for k in _KEY_ENV)])


def _load_cache() -> dict[str, Any]:
    """The cache, unless someone else could have written it: it names the dirs ``run`` mounts as
    the container's root (an older pyreg under ``umask 0`` left it writable by anyone)."""
    try:
        with open(_cache_path()) as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return {}
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _cached(ref: str) -> dict[str, Any] | None:
    entry = _load_cache().get(_key(ref))
    if not isinstance(entry, dict) or "warning" not in entry:  # an older pyreg's entry: no warning
        return None
    try:
        for path, fp in entry["fingerprints"]:
            if _fingerprint(path) != fp:
                return None
        if not all(os.path.isdir(p) for p in entry["layers"]):
            return None
    except (KeyError, TypeError, ValueError):
        return None
    return entry


def _remember(ref: str, entry: dict[str, Any]) -> None:
    data = _load_cache()
    data[_key(ref)] = entry
    if len(data) > 256:  # keep it small: drop the oldest entries
        data = dict(list(data.items())[-256:])
    path = _cache_path()
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data))  # dumps is C-accelerated, dump is not
        os.rename(tmp, path)
    except OSError:
        pass


def resolve(ref: str, pull: Callable[[str], None] | None = None
            ) -> tuple[str, str, dict[str, Any], list[str], str | None]:
    """(image name, manifest digest, image config, layer dirs base first, docker's warning when
    the image's platform is not this host's) for a local image.

    When the image is not in the store, ``pull(ref)`` is called (the CLI passes the client's
    pull, so the runtime does not depend on the client) and the store asked again. A path to a
    directory (``./rootfs``, ``/srv/rootfs``) is run as a one-layer image with an empty config:
    handy for debugging and for the benchmark.
    """
    if ref.startswith(("/", "./", "../")) and os.path.isdir(ref):
        return ref, "", {}, [os.path.abspath(ref)], None
    state.ensure_run_root()  # before trusting the cache in it: private, and not another user's
    hit = _cached(ref)
    if hit is not None:
        return hit["name"], hit["digest"], hit["config"], hit["layers"], hit.get("warning")
    from pyreg.runtime.extract import extract_layer
    from pyreg.storage.graph import platform_warning
    from pyreg.storage.localstore import ImageNotFoundError, LocalStore
    from pyreg.storage.reference import config_path

    store = LocalStore()
    try:
        img = store.resolve(ref, extractor=extract_layer)
    except ImageNotFoundError:
        if pull is None:
            raise
        pull(ref)
        img = store.resolve(ref, extractor=extract_layer)
    layers = [str(p) for p in img.layer_dirs]
    index = str(store.root / "index.json")
    cfg_file = str(config_path())
    # remembered too: storage.graph (dataclasses, hashlib, platform) costs ~20 ms of start-up
    warning = platform_warning(img.config)
    _remember(ref, {
        "name": img.name, "digest": str(img.manifest_digest), "config": img.config, "layers": layers,
        "warning": warning,
        "fingerprints": [[index, _fingerprint(index)], [cfg_file, _fingerprint(cfg_file)]],
    })
    return img.name, str(img.manifest_digest), img.config, layers, warning
