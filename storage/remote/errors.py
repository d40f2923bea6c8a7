"""The errors a remote registry gives its client, each with a one-line message.

``RemoteError`` is the client side of a registry conversation (an error answer, or no answer);
the server's own ``registry/errors.py`` error is a different thing (a spec error code to send).
"""

from __future__ import annotations

import errno
from _socket import gaierror  # socket's own class, without socket.py's enums


class RemoteError(Exception):
    """A registry answered with an error, or could not be reached; the message is one line."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def retryable(self) -> bool:
        """Worth another try: no answer (599: the connection failed), 429, or a 5xx."""
        return self.status is not None and (self.status == 429 or self.status >= 500)


_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timed out",
    errno.EPIPE: "connection closed",
}


def network_reason(exc: BaseException) -> str:
    """Words for a failed connection, without Python's raw ``[Errno N]``: the cause chain is
    searched for the OS error underneath httpx's."""
    import ssl

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            return "the server cut the TLS connection short (no TLS answer)"
        if isinstance(seen, gaierror):
            return "unknown host (name does not resolve)"
        if isinstance(seen, TimeoutError) or type(seen).__name__.endswith("Timeout"):
            return "timed out"
        if isinstance(seen, OSError) and seen.errno in _ERRNO_WORDS:
            return _ERRNO_WORDS[seen.errno]
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    # httpx often keeps only the text of the OS error: "[Errno 111] Connection refused"
    if text.startswith("[Errno"):
        text = text.partition("]")[2].strip()
        if "Name or service not known" in text or "Temporary failure in name resolution" in text \
                or "No address associated" in text:
            return "unknown host (name does not resolve)"
        return text[:1].lower() + text[1:]
    return text or type(exc).__name__
