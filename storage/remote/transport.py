"""The HTTP transport under every registry conversation: TLS per host, retries with backoff.

``RetryTransport`` retries connection failures (a TLS handshake the server cut off included),
429 and 5xx with exponential backoff (honouring ``Retry-After``) for requests whose body can be
sent again; streamed bodies are resumed by the callers instead (uploads from the registry's
upload status, downloads with ``Range``). A wait for a 429 is announced through ``notify``
before it starts, so a rate-limited user is told at once instead of watching a silent pause.

TLS: one ``ssl.SSLContext`` per set of ``TLSSettings`` (``tls_context``, cached), built only when
a TLS connection is first made, so plain-HTTP loopback work never pays for loading the trust
store. Where the settings come from (flags, certs.d directories) is the caller's business.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from pyreg.storage.remote.errors import RemoteError

RETRIES = 5


def backoff(attempt: int, retry_after: str | None = None) -> float:
    if retry_after:
        try:
            return min(30.0, max(0.0, float(retry_after)))
        except ValueError:
            pass
    return min(8.0, 0.25 * (2 ** attempt)) * (0.5 + random.random() / 2)


def is_tls_mismatch(exc: BaseException) -> bool:
    """A TLS handshake that failed because the other side does not speak TLS (or speaks it and we
    did not): deterministic, so never retried, and a reason to try the other scheme."""
    import ssl

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "SSL" in str(exc)


def tls_dropped(exc: BaseException) -> bool:
    """A TLS handshake the other side ended without answering it: an EOF or a reset before the
    handshake finished. A server that is busy, restarting or shedding connections does this, and
    the next connection may well be served; so it is retried like a refused connection, unless
    the request is a scheme probe (there a hang-up is the answer). A plain-HTTP server answers
    the ClientHello with bytes that are not TLS ("wrong version number"), which is no drop but a
    scheme mismatch (``is_tls_mismatch``)."""
    import ssl

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError,
                             ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
            return True
        if isinstance(seen, ssl.SSLError):
            return False  # an alert or bytes that are not TLS: the other side did answer
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    return "UNEXPECTED_EOF_WHILE_READING" in text or "EOF occurred in violation of protocol" in text


def cert_failure(exc: BaseException) -> str | None:
    """The reason, when ``exc`` is (or was caused by) a failed certificate verification."""
    import ssl

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or seen)
        seen = seen.__cause__ or seen.__context__
    return "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else None


def untrusted_message(host: str, reason: str) -> str:
    """One line: whose certificate failed, and the three ways out."""
    return (f"TLS certificate of {host} not trusted ({reason}): pass --ca-file FILE (or set "
            f"PYREG_CA_FILE), put the CA in /etc/docker/certs.d/{host}/ca.crt, or use --insecure")


@dataclass(frozen=True)
class TLSSettings:
    """What one TLS context trusts and presents: verification on or off, extra CA files
    (``(what, path)``, ``what`` names the file's origin in errors), a client certificate and key."""

    verify: bool = True
    cas: tuple[tuple[str, str], ...] = ()
    client_cert: tuple[str, str] | None = None


_contexts: dict[TLSSettings, Any] = {}
_contexts_lock = threading.Lock()


def tls_context(settings: TLSSettings = TLSSettings()) -> Any:
    """The ``ssl.SSLContext`` for ``settings``: the system store plus the extra CAs, and the
    client certificate for mutual TLS. With ``verify`` off nothing is checked (the client
    certificate is still offered). Cached per settings: building one reads the whole trust store."""
    import ssl

    with _contexts_lock:
        ctx = _contexts.get(settings)
        if ctx is not None:
            return ctx
        if settings.verify:
            ctx = ssl.create_default_context()
            if ctx.cert_store_stats().get("x509_ca", 0) == 0 and not os.environ.get("SSL_CERT_FILE"):
                # no system bundle file (a bare container?): add certifi's, which httpx has anyway
                try:
                    import certifi

                    ctx.load_verify_locations(cafile=certifi.where())
                except (ImportError, OSError):
                    pass
            for what, path in settings.cas:
                try:
                    ctx.load_verify_locations(cafile=path)
                except (OSError, ssl.SSLError) as exc:
                    raise RemoteError(f"cannot load {what} {path}: "
                                      f"{getattr(exc, 'strerror', None) or exc}") from exc
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if settings.client_cert is not None:
            cert, keyfile = settings.client_cert
            try:
                ctx.load_cert_chain(cert, keyfile)
            except (OSError, ssl.SSLError) as exc:
                raise RemoteError(f"cannot load client certificate {cert} / {keyfile}: "
                                  f"{getattr(exc, 'strerror', None) or exc}") from exc
        _contexts[settings] = ctx
        return ctx


class SchemeTransport(httpx.BaseTransport):
    """``http://`` through a plain connection pool, ``https://`` through one made on first use
    with the SSL context of the host asked (so a plain-HTTP registry never builds one).

    The registry's own host gets its context (``--insecure`` included); any other host the
    registry sends us to (a token realm, a blob redirect to S3, an upload Location) gets that
    host's own, verified unless the user listed that host as insecure: ``--insecure`` for one
    registry never turns off verification of another host."""

    def __init__(self, context: Callable[[], Any], limits: httpx.Limits, registry: str = "",
                 other: Callable[[str], Any] | None = None) -> None:
        self.context = context
        self.other = other
        self.registry = registry
        self.limits = limits
        self._plain: httpx.HTTPTransport | None = None
        self._tls: dict[str, httpx.HTTPTransport] = {}
        self._lock = threading.Lock()

    def _transport(self, url: httpx.URL) -> httpx.HTTPTransport:
        with self._lock:
            if url.scheme == "https":
                netloc = url.netloc.decode("ascii", "replace")
                own = self.other is None or netloc in (self.registry, f"{self.registry}:443") \
                    or f"{netloc}:443" == self.registry
                key = "" if own else netloc
                if key not in self._tls:
                    ctx = self.context() if own else self.other(netloc)  # type: ignore[misc]
                    self._tls[key] = httpx.HTTPTransport(verify=ctx, limits=self.limits, retries=0)
                return self._tls[key]
            if self._plain is None:
                # no TLS is ever made here: a bare context, not the trust store httpx would load
                self._plain = httpx.HTTPTransport(verify=False, limits=self.limits, retries=0)
            return self._plain

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._transport(request.url).handle_request(request)

    def close(self) -> None:
        for t in [self._plain, *self._tls.values()]:
            if t is not None:
                t.close()


class RetryTransport(httpx.BaseTransport):
    """Retries what can be retried; everything else passes through untouched.

    A request may lower its own retry count with the ``pyreg_retries`` extension; the
    ``pyreg_connect_retries`` extension bounds the retries of a refused or unresolvable
    connection alone (the first contact with a registry uses 0: nobody is listening, say so now).
    ``notify(message)`` hears each wait for a 429 before it starts."""

    def __init__(self, inner: httpx.BaseTransport, retries: int = RETRIES,
                 notify: Callable[[str], None] | None = None) -> None:
        self.inner = inner
        self.retries = retries
        self.notify = notify

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # A PATCH is never resent here: the registry may have taken its bytes; the upload code
        # asks for the upload status and resumes from there instead.
        replayable = isinstance(request.stream, httpx.ByteStream) and request.method != "PATCH"
        retries = int(request.extensions.get("pyreg_retries", self.retries))
        connect_retries = int(request.extensions.get("pyreg_connect_retries", retries))
        attempt = 0
        while True:
            try:
                response = self.inner.handle_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # a handshake cut off is no scheme mismatch (the server listens and speaks TLS,
                # or it would have answered), and no refusal: as many tries as the request has
                if request.url.scheme == "https" and not request.extensions.get("pyreg_probe") \
                        and tls_dropped(exc):
                    if attempt >= retries:
                        raise
                elif attempt >= min(retries, connect_retries) or is_tls_mismatch(exc):
                    raise
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadTimeout):
                # a scheme probe that the server hangs up on is answered: wrong protocol
                if not replayable or attempt >= retries or request.extensions.get("pyreg_probe"):
                    raise
            else:
                if (response.status_code == 429 or response.status_code >= 500) and replayable \
                        and attempt < retries:
                    retry_after = response.headers.get("retry-after")
                    response.close()
                    wait = backoff(attempt, retry_after)
                    if response.status_code == 429 and self.notify is not None:
                        host = request.url.netloc.decode("ascii", "replace")
                        shown = f"{wait:.0f}" if wait >= 1 else f"{wait:.1f}"
                        self.notify(f"rate limited by {host}, retrying in {shown} s")
                    time.sleep(wait)
                    attempt += 1
                    continue
                return response
            time.sleep(backoff(attempt))
            attempt += 1

    def close(self) -> None:
        self.inner.close()
