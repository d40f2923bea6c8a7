"""One upstream registry as the mirror talks to it: storage/remote's RegistryClient (transport,
retries, TLS, the Basic/Bearer auth flow that sends credentials to the upstream's own origin and
its token realm only), called from worker threads so nothing blocks the event loop.

A blob's GET from a plain-HTTP upstream given no credentials goes over a bare socket first
(storage/remote/plain.py): its body is read straight into 1 MiB buffers, without httpx, httpcore
and h11 handling every 64 KiB piece (about a third of the fill's CPU). Any answer but a plain 200
with a Content-Length (401, a redirect, an error, a chunked body) is taken by the httpx path,
which sends the GET again; one that would need it every time (auth, redirects, an answer the bare
socket can't read, or no connection) turns the bare socket off for that upstream for
``PLAIN_PAUSE`` seconds. Once body bytes arrived, nothing is retried: a cut body is a cut fill,
as on the httpx path.

Credentials come from the config (``username``/``password``) or a ``docker-credential-<helper>
get`` asked with the upstream's host, the first time the upstream asks for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx

from pyreg.registry.config import UpstreamConfig
from pyreg.registry.mirror.config import upstream_host
from pyreg.storage.digest import Digest
from pyreg.storage.manifest import ManifestBlob
from pyreg.storage.remote import (
    AuthError,
    Login,
    RegistryClient,
    RemoteError,
    TLSSettings,
    error_message,
    network_reason,
)
from pyreg.storage.remote.plain import PlainHTTP, Unsupported

log = logging.getLogger("pyreg.mirror")

T = TypeVar("T")
THREADS = 32  # blocking upstream calls in flight per upstream (each fill holds one while reading)
MANIFEST_MAX = 4 << 20
RETRIES = 1  # a mirror answers its own clients: a dead upstream is said (or served stale) quickly
PLAIN_PAUSE = 600.0  # seconds blob GETs take the httpx path after the bare socket could not be used


def helper_login(helper: str, host: str) -> Login | None:
    """``docker-credential-<helper> get`` for ``host`` (its JSON ``Username``/``Secret``)."""
    try:
        result = subprocess.run([f"docker-credential-{helper}", "get"], input=host.encode(),
                                capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.error("mirror: credential helper docker-credential-%s failed: %s", helper, e)
        return None
    if result.returncode != 0:
        log.error("mirror: docker-credential-%s get %s: %s", helper, host,
                  result.stdout.decode(errors="replace").strip()[:200] or result.returncode)
        return None
    try:
        doc = json.loads(result.stdout)
        username, secret = doc.get("Username"), doc.get("Secret")
    except (ValueError, AttributeError):
        log.error("mirror: docker-credential-%s sent no JSON", helper)
        return None
    if not isinstance(secret, str) or not secret:
        return None
    if username == "<token>":  # docker's convention for an identity (refresh) token
        return Login(identity_token=secret)
    return Login(username=str(username or ""), password=secret)


class Upstream:
    """Blocking calls to one upstream, run by ``call`` in threads of the upstream's own pool: a
    stalled upstream then ties up only its own threads, never the loop's default executor that
    storage calls use."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.executor = ThreadPoolExecutor(THREADS, thread_name_prefix=f"mirror-{config.name}")
        self.config = config
        self.name = config.name
        self.host = upstream_host(config.url)
        url = config.url if "://" in config.url else f"https://{config.url}"
        cas = (("mirror CA file", config.cafile),) if config.cafile else ()
        own = TLSSettings(verify=not config.insecure, cas=cas)

        def tls(host: str) -> TLSSettings:
            return own if host == self.host else TLSSettings()

        def credentials(_registry: str) -> Login | None:
            if config.username is not None:
                return Login(config.username, config.password or "")
            if config.credentialhelper:
                return helper_login(config.credentialhelper, self.host)
            return None

        self.client = RegistryClient(url.rstrip("/"), plain_http=url.startswith("http://"),
                                     retries=RETRIES, credentials=credentials, tls=tls, pool=16)
        anonymous = config.username is None and not config.credentialhelper
        self.plain: PlainHTTP | None = None  # blob GETs over a bare socket (module docstring)
        self.plain_paused_until = 0.0  # time.monotonic() before which blob GETs take httpx
        if url.startswith("http://") and anonymous and urlsplit(url).netloc:
            self.plain = PlainHTTP(urlsplit(url).netloc)
        self.executor.submit(warm_imports)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.client.close()
        if self.plain is not None:
            self.plain.close()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def referrers(self, repo: str, digest: Digest, artifact_type: str | None) -> tuple[bytes, bool] | None:
        """The upstream's referrers index of ``digest`` (JSON bytes, and whether it applied the
        artifactType filter), None when it has no referrers API (404) or answers otherwise."""
        what = f"referrers of {digest} at {self.host}"
        params = {"artifactType": artifact_type} if artifact_type else None
        r = self._send("GET", f"{repo}/referrers/{digest}", what, params=params,
                       extensions={"pyreg_limit": MANIFEST_MAX})
        if r.status_code != 200:
            return None
        return r.content, "artifactType" in r.headers.get("oci-filters-applied", "")

    def _send(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            url = self.client.url(path)
            return self.client.http.request(method, url, **kwargs)
        except RemoteError:
            raise
        except httpx.HTTPError as e:
            raise RemoteError(f"{what}: {network_reason(e)}") from e
        except AuthError as e:  # refused credentials: upstream answered, no use serving stale
            raise RemoteError(f"{what}: {e}", 401) from e
        except Exception as e:  # ResponseRefused (a body over its bound): one line
            raise RemoteError(f"{what}: {e}", 502) from e

    def head_manifest(self, repo: str, reference: str) -> tuple[Digest | None, str | None]:
        """(digest, media type) of a tag upstream; (None, None) when upstream has no such tag.
        A HEAD that names no digest is answered by a GET (some registries omit the header)."""
        from pyreg.storage.remote.client import MANIFEST_ACCEPT

        what = f"manifest {repo}:{reference} at {self.host}"
        r = self._send("HEAD", f"{repo}/manifests/{reference}", what,
                       headers={"Accept": MANIFEST_ACCEPT})
        if r.status_code == 404:
            return None, None
        if r.status_code != 200:
            raise error_message(r, what)
        header = r.headers.get("docker-content-digest")
        if header:
            try:
                return Digest.parse(header), r.headers.get("content-type")
            except ValueError:
                pass
        blob = self.get_manifest(repo, reference)
        return blob.digest, blob.media_type

    def get_manifest(self, repo: str, reference: str, verify: Digest | None = None) -> ManifestBlob:
        try:
            return self.client.get_manifest(repo, reference, verify)
        except RemoteError:
            raise
        except AuthError as e:
            raise RemoteError(f"manifest {repo}:{reference} at {self.host}: {e}", 401) from e
        except Exception as e:  # a digest mismatch, a refused body
            raise RemoteError(f"manifest {repo}:{reference} at {self.host}: {e}", 502) from e

    def tags(self, repo: str) -> list[str]:
        """Every tag of ``repo`` upstream (all its pages, bounded by storage/remote)."""
        try:
            return self.client.tags(repo)
        except RemoteError:
            raise
        except AuthError as e:
            raise RemoteError(f"tags of {repo} at {self.host}: {e}", 401) from e
        except Exception as e:  # a refused body
            raise RemoteError(f"tags of {repo} at {self.host}: {e}", 502) from e

    def blob_size(self, repo: str, digest: Digest) -> int | None:
        """HEAD of a blob upstream: its size, None when upstream lacks it."""
        what = f"blob {digest} at {self.host}"
        r = self._send("HEAD", f"{repo}/blobs/{digest}", what)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise error_message(r, what)
        length = r.headers.get("content-length", "")
        return int(length) if length.isdigit() else None

    def open_blob(self, repo: str, digest: Digest) -> BlobBody:
        """Start the one GET of a blob: its body, to read and close. Redirects (a CDN) are
        followed without our Authorization (storage/remote/auth.py)."""
        url = self.client.url(f"{repo}/blobs/{digest}")
        if self.plain is not None and time.monotonic() >= self.plain_paused_until:
            body = self._open_plain(url)
            if body is not None:
                return body
        what = f"blob {digest} at {self.host}"
        try:
            request = self.client.http.build_request(
                "GET", url, headers={"Accept-Encoding": "identity"}, extensions={"pyreg_limit": None})
            r = self.client.http.send(request, stream=True)
        except RemoteError:
            raise
        except httpx.HTTPError as e:
            raise RemoteError(f"{what}: {network_reason(e)}") from e
        except AuthError as e:
            raise RemoteError(f"{what}: {e}", 401) from e
        except Exception as e:
            raise RemoteError(f"{what}: {e}", 502) from e
        if r.status_code != 200:
            try:
                raise error_message(r, what)
            finally:
                r.close()
        length = r.headers.get("content-length", "")
        return HttpxBody(int(length) if length.isdigit() else None, r)

    def _open_plain(self, url: str) -> PlainBody | None:
        """The GET over the bare socket; None when its answer is the httpx path's to take."""
        assert self.plain is not None
        parts = urlsplit(url)
        try:
            response = self.plain.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        except Unsupported:  # no connection, an answer it can't read: httpx says what is wrong
            self.plain_paused_until = time.monotonic() + PLAIN_PAUSE
            return None
        if response.status == 200:
            return PlainBody(response)
        response.abandon()
        if response.status == 401 or 300 <= response.status < 400:  # auth or a CDN every time
            self.plain_paused_until = time.monotonic() + PLAIN_PAUSE
        return None


class BlobBody(Protocol):
    """A blob's body being received: ``read`` up to ``size`` bytes (fewer only at the end or
    just before a failure; b"" once it ended whole; raises when it was cut), ``close``."""

    length: int | None  # Content-Length, if upstream sent one

    def read(self, size: int) -> bytes | memoryview: ...

    def close(self) -> None: ...


class PlainBody:
    """The body of a bare-socket GET, read into a new buffer per call (never reused: the bytes
    go on to clients, the staging file and the hash, and must stay as they are)."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.length: int | None = response.length

    def read(self, size: int) -> bytes | memoryview:
        want = min(size, self.response.remaining)
        if want <= 0:
            return b""
        buffer = memoryview(bytearray(want))
        got = self.response.readinto(buffer)
        return buffer[:got] if got < want else buffer

    def close(self) -> None:
        self.response.close()


class HttpxBody:
    """An httpx streamed body (64 KiB pieces) joined into reads of about ``size`` bytes; bytes
    received before a failure are returned first, the failure raised by the next read."""

    def __init__(self, length: int | None, response: httpx.Response) -> None:
        self.length = length
        self.response = response
        self._pieces: Iterator[bytes] = response.iter_raw()
        self._failure: BaseException | None = None

    def read(self, size: int) -> bytes | memoryview:
        if self._failure is not None:
            raise self._failure
        parts: list[bytes] = []
        got = 0
        try:
            for piece in self._pieces:
                parts.append(piece)
                got += len(piece)
                if got >= size:
                    break
        except Exception as e:
            if not parts:
                raise
            self._failure = e
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        self.response.close()


def warm_imports() -> None:
    """Import now, in the background, what the first pull through the mirror would otherwise
    wait for: what httpx imports on its first request (httpcore, h11 and what they pull in:
    0.1-0.5 s) and anyio's asyncio backend, which Starlette's first StreamingResponse loads."""
    import httpcore  # noqa: F401

    with contextlib.suppress(ImportError):  # the module anyio's get_async_backend() imports
        importlib.import_module("anyio._backends._asyncio")


def unavailable(e: RemoteError) -> bool:
    """Upstream is down or overloaded (no answer, 5xx, 429): a stored copy may be served."""
    return e.status is None or e.status >= 500 or e.status == 429
