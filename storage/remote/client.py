"""The distribution-spec calls against one registry, over the transport, auth flow and limits
of this package: what the client's pull / push / copy and the registry's pull-through cache share.

Nothing here reads the user's files: credentials come from a provider the caller passes in
(``(registry) -> Credentials | None``, asked once and only when the registry asks), TLS trust
from ``TLSSettings`` providers, the plain-HTTP allowance and the in-memory limit as arguments.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urljoin

import httpx

from pyreg.storage import mediatypes
from pyreg.storage.digest import Digest, DigestMismatchError
from pyreg.storage.manifest import ManifestBlob
from pyreg.storage.netaddr import is_loopback
from pyreg.storage.reference import DOCKER_HUB
from pyreg.storage.remote.auth import AuthError, Credentials, RegistryAuth
from pyreg.storage.remote.errors import RemoteError, network_reason
from pyreg.storage.remote.limits import ACCEPT_ENCODING, LIST_PAGE_LIMIT, BoundedTransport
from pyreg.storage.remote.received import received_manifest
from pyreg.storage.remote.transport import (
    RETRIES,
    RetryTransport,
    SchemeTransport,
    TLSSettings,
    backoff,
    cert_failure,
    is_tls_mismatch,
    tls_context,
    tls_dropped,
    untrusted_message,
)

MANIFEST_ACCEPT = ", ".join([mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST_LIST, mediatypes.OCI_MANIFEST,
                             mediatypes.DOCKER_MANIFEST])
CHUNK = 1 << 20
MANIFEST_MAX = 4 << 20
MAX_REDIRECTS = 10
MAX_PAGES = 10_000            # Link pages followed for one listing
MAX_LIST_ITEMS = 1_000_000    # tags or repositories kept from one listing
MAX_CONFIG_SIZE = 8 << 20     # an image config read whole, unless the caller says otherwise

CredentialsProvider = Callable[[str], "Credentials | None"]


class ResumableWriter(Protocol):
    """Where ``download_blob`` streams a blob: it keeps what it holds across a dropped
    connection (``offset``), so the rest is asked for with ``Range``; ``commit`` verifies."""

    size: int | None

    @property
    def offset(self) -> int: ...

    def restart(self) -> None: ...

    def write(self, data: bytes) -> None: ...

    def commit(self) -> object: ...


def error_message(response: httpx.Response, what: str) -> RemoteError:
    """One line from the spec's error JSON (``{"errors": [{"code", "message"}]}``)."""
    code = None
    detail = ""
    try:
        response.read()
        doc = response.json()
        first = (doc.get("errors") or [{}])[0]
        code = first.get("code")
        detail = first.get("message") or ""
    except Exception:
        detail = response.reason_phrase
    text = f"{what}: {response.status_code}"
    if code:
        text += f" {code}"
    if detail:
        text += f": {' '.join(str(detail).split())[:300]}"
    if response.status_code == 401:
        text += " (authentication required: pyreg login?)"
    request_id = response.headers.get("x-request-id", "")
    if response.status_code >= 500:
        if request_id and len(request_id) <= 128 and request_id.isprintable():
            text += f" (a registry-side failure: quote request id {request_id} to its operator)"
        else:
            text += " (a registry-side failure: retry later, or ask its operator)"
    return RemoteError(text, response.status_code, code)


class RegistryClient:
    """Distribution-spec calls against one registry host."""

    def __init__(self, registry: str, *, plain_http: bool = False, retries: int = RETRIES,
                 credentials: Credentials | CredentialsProvider | None = None, pool: int = 8,
                 tls: Callable[[str], TLSSettings] | None = None,
                 plain_realm: Callable[[str], bool] = is_loopback,
                 max_config_size: int | Callable[[], int] = MAX_CONFIG_SIZE,
                 has_client_cert: Callable[[], bool] = lambda: True,
                 notify: Callable[[str], None] | None = None) -> None:
        """``registry`` is ``host[:port]`` (``docker.io`` means Docker Hub's API host), or
        ``https://host[:port]`` / ``http://…`` to fix the scheme instead of probing for it.
        ``plain_http`` allows http:// (tried first on loopback, after https elsewhere);
        ``tls(host)`` gives the TLS settings for the registry and any host it sends us to
        (default: verified against the system store); ``credentials`` is a login, or a provider
        asked with the registry's name when the registry first asks; ``plain_realm(host)`` says
        whether credentials may go to a plain-HTTP token realm on another host;
        ``max_config_size`` (or a function giving it, asked when needed) bounds a blob read whole;
        ``has_client_cert()`` only shapes a hint when a TLS registry hangs up on us;
        ``notify(message)`` hears waits the user should know about (a 429)."""
        scheme, sep, rest = registry.partition("://")
        self.scheme: str | None = None
        if sep:
            if scheme not in ("http", "https"):
                raise RemoteError(f"invalid registry URL {registry!r}: http:// or https:// only")
            registry, self.scheme = rest.rstrip("/"), scheme
        self.registry = registry
        self.host = "registry-1.docker.io" if registry == DOCKER_HUB else registry
        self.plain_allowed = plain_http or self.scheme == "http"
        self.retries = retries
        self.max_config_size = max_config_size
        self.has_client_cert = has_client_cert
        source: Any = credentials
        if callable(credentials):
            def source() -> Credentials | None:
                return credentials(registry)
        self.auth = RegistryAuth(source, self.host, plain_realm)
        limits = httpx.Limits(max_connections=pool * 2, max_keepalive_connections=pool * 2)
        timeout = httpx.Timeout(connect=15.0, read=300.0, write=300.0, pool=None)
        settings = tls or (lambda host: TLSSettings())

        def context() -> Any:
            return tls_context(settings(registry))

        def other(host: str) -> Any:
            return tls_context(settings(host))

        transport = BoundedTransport(RetryTransport(SchemeTransport(context, limits, self.host, other),
                                                    retries, notify))
        self.http = httpx.Client(transport=transport, auth=self.auth, timeout=timeout,
                                 follow_redirects=True, max_redirects=MAX_REDIRECTS,
                                 headers={"User-Agent": "pyreg/0.1", "Accept-Encoding": ACCEPT_ENCODING})
        self._base: str | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- base URL / ping ----------------------------------------------------------------------
    @property
    def base(self) -> str:
        if self._base is None:
            self.ping()
        assert self._base is not None
        return self._base

    def ping(self) -> None:
        """GET /v2/: picks https or (when allowed) http, and learns the auth scheme."""
        # Loopback traffic never leaves the machine: try plain HTTP first there (no TLS handshake
        # to fail). Other hosts allowed plain HTTP (--insecure, the config list) still prefer TLS.
        if self.scheme is not None:
            schemes = [self.scheme]
        elif not self.plain_allowed:
            schemes = ["https"]
        elif is_loopback(self.registry):
            schemes = ["http", "https"]
        else:
            schemes = ["https", "http"]
        last: Exception | None = None
        tls_hung_up = False
        for scheme in schemes:
            url = f"{scheme}://{self.host}/v2/"
            probe = scheme == schemes[0] and len(schemes) > 1
            # the first contact: a refused or unresolvable host is said at once, not after retries
            extensions: dict[str, Any] = {"pyreg_connect_retries": 1}
            if probe:
                extensions["pyreg_probe"] = True
            try:
                response = self.http.get(url, extensions=extensions)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError,
                    httpx.ReadError) as exc:
                last = exc
                tls_hung_up = scheme == "https" and (isinstance(exc, (httpx.RemoteProtocolError,
                                                                      httpx.ReadError)) or tls_dropped(exc))
                if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) and not is_tls_mismatch(exc):
                    break  # refused or unreachable: the other scheme would be too
                continue
            except AuthError:
                self._base = f"{scheme}://{self.host}"
                self.auth.origin = httpx.URL(self._base)
                raise
            # A probe must look like a registry: a TLS server answering plain HTTP says 400.
            if response.status_code in (200, 401, 403) or (not probe and response.status_code < 500):
                self._base = f"{scheme}://{self.host}"
                self.auth.origin = httpx.URL(self._base)
                return
            last = error_message(response, f"GET {url}")
        reason = cert_failure(last) if last is not None else None
        if reason is not None:
            raise RemoteError(untrusted_message(self.registry, reason))
        if not self.plain_allowed and isinstance(last, httpx.ConnectError) and "SSL" in str(last) \
                and not tls_dropped(last):
            raise RemoteError(f"cannot reach {self.registry} over https ({last}); "
                                "use --insecure or list it in insecure_registries for plain http")
        hint = ""
        if tls_hung_up and not self.has_client_cert():
            # what a registry that wants a client certificate (mutual TLS) does to one without
            hint = (f" (if it requires a client certificate, put client.cert + client.key in "
                    f"/etc/docker/certs.d/{self.registry}/)")
        reason = str(last) if isinstance(last, RemoteError) else network_reason(last) if last else "no answer"
        raise RemoteError(f"cannot reach registry {self.registry}: {reason}{hint}")

    def url(self, path: str) -> str:
        return f"{self.base}/v2/{path}"

    def _send(self, method: str, path_or_url: str, what: str, ok: tuple[int, ...] = (200,),
              **kwargs: Any) -> httpx.Response:
        url = path_or_url if "://" in path_or_url else self.url(path_or_url)
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.TooManyRedirects:
            raise RemoteError(f"{what}: more than {MAX_REDIRECTS} redirects") from None
        except httpx.TransportError as exc:
            reason = cert_failure(exc)
            if reason is not None:  # a redirect to another host, say
                try:
                    failed = exc.request.url.netloc.decode()
                except RuntimeError:
                    failed = httpx.URL(url).netloc.decode()
                raise RemoteError(untrusted_message(failed, reason)) from exc
            raise RemoteError(f"{what}: {network_reason(exc)}", 599) from exc
        if response.status_code not in ok:
            raise error_message(response, what)
        return response

    # -- manifests -------------------------------------------------------------------------------
    def get_manifest(self, repo: str, reference: str, verify: Digest | None = None) -> ManifestBlob:
        response = self._send("GET", f"{repo}/manifests/{reference}", f"manifest {repo}:{reference}",
                              headers={"Accept": MANIFEST_ACCEPT}, extensions={"pyreg_limit": MANIFEST_MAX})
        return received_manifest(response.content, response.headers.get("content-type"), verify,
                                 response.headers.get("docker-content-digest"),
                                 f"manifest {repo}:{reference}")

    def head_manifest(self, repo: str, reference: str) -> Digest | None:
        response = self._send("HEAD", f"{repo}/manifests/{reference}", f"manifest {repo}:{reference}",
                              ok=(200, 404), headers={"Accept": MANIFEST_ACCEPT})
        if response.status_code == 404:
            return None
        header = response.headers.get("docker-content-digest")
        return Digest.parse(header) if header else None

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> Digest:
        response = self._send("PUT", f"{repo}/manifests/{reference}", f"push manifest {repo}:{reference}",
                              ok=(201, 200, 202), content=data, headers={"Content-Type": media_type})
        header = response.headers.get("docker-content-digest")
        digest = Digest.of(data)
        if header and Digest.parse(header) != digest:
            raise RemoteError(f"registry stored manifest as {header}, expected {digest}")
        return digest

    def delete_manifest(self, repo: str, reference: str) -> None:
        self._send("DELETE", f"{repo}/manifests/{reference}", f"delete {repo}:{reference}", ok=(202, 200))

    # -- blobs -----------------------------------------------------------------------------------
    def blob_exists(self, repo: str, digest: Digest) -> int | None:
        response = self._send("HEAD", f"{repo}/blobs/{digest}", f"blob {digest}", ok=(200, 404))
        if response.status_code == 404:
            return None
        length = response.headers.get("content-length", "-1")
        return int(length) if length.isdigit() else -1

    def get_blob_bytes(self, repo: str, digest: Digest, limit: int | None = None,
                       size: int | None = None) -> bytes:
        """A small blob (an image config) read whole: at most ``limit`` bytes (default: the
        configured ``max_config_size``), and exactly ``size`` when the descriptor says so."""
        from pyreg.storage.units import human

        limit = limit or (self.max_config_size() if callable(self.max_config_size)
                          else self.max_config_size)
        if size is not None and size > limit:
            raise RemoteError(f"blob {digest} is {human(size)}, more than the {human(limit)} pyreg "
                                "reads into memory (raise max_config_size / PYREG_MAX_CONFIG_SIZE)")
        bound = limit if size is None else size
        response = self._send("GET", f"{repo}/blobs/{digest}", f"blob {digest}",
                              extensions={"pyreg_limit": bound})
        data = response.content
        actual = Digest.of(data, digest.algorithm)
        if actual != digest:
            raise DigestMismatchError(digest, actual)
        return data

    def download_blob(self, repo: str, digest: Digest, writer: ResumableWriter,
                      progress: Callable[[int], None] | None = None) -> None:
        """Stream a blob into ``writer``, resuming with Range after a dropped connection;
        ``writer.commit()`` verifies the digest (a mismatch deletes everything written)."""
        attempt = 0
        while True:
            headers = {}
            if writer.offset:
                headers["Range"] = f"bytes={writer.offset}-"
            try:
                headers["Accept-Encoding"] = "identity"  # the blob's own bytes, hashed as sent
                with self.http.stream("GET", self.url(f"{repo}/blobs/{digest}"), headers=headers,
                                      extensions={"pyreg_limit": None}) as r:
                    if r.status_code == 200 and writer.offset:
                        if progress:
                            progress(-writer.offset)
                        writer.restart()
                    elif r.status_code == 206:
                        try:
                            start = int(r.headers.get("content-range", "").split()[1].split("-")[0])
                        except (IndexError, ValueError):
                            raise RemoteError(f"blob {digest}: invalid Content-Range "
                                                f"{r.headers.get('content-range', '')[:100]!r}") from None
                        if start != writer.offset:
                            raise RemoteError(
                                f"blob {digest}: asked for offset {writer.offset}, got {start}")
                    elif r.status_code == 416 and writer.size is not None and writer.offset == writer.size:
                        pass
                    elif r.status_code != 200:
                        raise error_message(r, f"blob {digest}")
                    elif progress and attempt == 0:
                        pass
                    for chunk in r.iter_raw():
                        writer.write(chunk)
                        if progress:
                            progress(len(chunk))
                writer.commit()
                return
            except httpx.TransportError as exc:
                attempt += 1
                if attempt > self.retries:
                    raise RemoteError(f"blob {digest}: {network_reason(exc)}") from exc
                time.sleep(backoff(attempt))

    def mount_blob(self, repo: str, digest: Digest, source: str) -> str | None:
        """Cross-repository mount; returns None when mounted, else the upload URL to use."""
        response = self._send("POST", f"{repo}/blobs/uploads/", f"mount {digest} from {source}",
                              ok=(201, 202), params={"mount": str(digest), "from": source})
        if response.status_code == 201:
            return None
        return self._location(response)

    def _location(self, response: httpx.Response) -> str:
        location = response.headers.get("location")
        if not location:
            raise RemoteError("registry started an upload but sent no Location")
        return urljoin(str(response.url), location)

    def start_upload(self, repo: str) -> str:
        response = self._send("POST", f"{repo}/blobs/uploads/", f"start upload to {repo}", ok=(202,))
        return self._location(response)

    def upload_status(self, location: str) -> int:
        """Bytes the registry holds for an upload session (from its ``Range: 0-N``)."""
        response = self._send("GET", location, "upload status", ok=(204, 200))
        value = response.headers.get("range", "")
        end = value.rsplit("-", 1)[1].strip() if "-" in value else ""
        return int(end) + 1 if end.isdigit() else 0

    # -- listing -----------------------------------------------------------------------------------
    def _paginate(self, path: str, key: str, what: str, page: int | None) -> list[str]:
        """Every page of a listing. Only the path and query of a ``Link: <…>; rel="next"`` are
        followed, always on this registry (a Link naming another host gets nothing of ours);
        pages, items and each page's size are bounded, and a page that links to one already
        read ends with an error instead of a loop."""
        out: list[str] = []
        url: str | None = self.url(path)
        params: dict[str, Any] | None = {"n": page} if page else None
        seen: set[str] = set()
        while url:
            if len(seen) >= MAX_PAGES:
                raise RemoteError(f"{what}: more than {MAX_PAGES} pages; stopping")
            seen.add(url)
            response = self._send("GET", url, what, params=params,
                                  extensions={"pyreg_limit": LIST_PAGE_LIMIT})
            params = None
            try:
                doc = response.json()
            except ValueError:
                raise RemoteError(f"{what}: the registry sent a page that is not JSON") from None
            items = doc.get(key) if isinstance(doc, dict) else None
            if items is None:
                items = []
            if not isinstance(items, list) or not all(isinstance(i, str) and 0 < len(i) <= 256
                                                      for i in items):
                raise RemoteError(f"{what}: the registry sent a malformed {key!r} list")
            out.extend(items)
            if len(out) > MAX_LIST_ITEMS:
                raise RemoteError(f"{what}: more than {MAX_LIST_ITEMS} entries; stopping")
            url = self._next_page(response.headers.get("link"), what)
            if url is not None and url in seen:
                raise RemoteError(f"{what}: the registry's Link points back to a page already read")
        return out

    def _next_page(self, link: str | None, what: str) -> str | None:
        """The next page's URL on this registry, from the path and query of a ``rel="next"`` Link."""
        if not link:
            return None
        for part in link.split(","):
            target, _, rest = part.partition(";")
            if 'rel="next"' not in rest.replace(" ", "") and "rel=next" not in rest.replace(" ", ""):
                continue
            try:
                ref = httpx.URL(target.strip().strip("<>"))
            except httpx.InvalidURL:
                raise RemoteError(f"{what}: the registry sent an invalid Link {target!r}") from None
            path = ref.raw_path.decode("ascii", "replace")  # path and query, still encoded
            if not path.startswith("/v2/") or "/../" in path.split("?")[0] + "/":
                raise RemoteError(f"{what}: the registry's Link leaves /v2/ ({path[:100]!r})")
            return f"{self.base}{path}"
        return None

    def tags(self, repo: str, page: int | None = None) -> list[str]:
        return self._paginate(f"{repo}/tags/list", "tags", f"tags of {repo}", page)

    def catalog(self, page: int | None = None) -> list[str]:
        return self._paginate("_catalog", "repositories", "catalog", page)
