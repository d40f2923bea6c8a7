"""The distribution spec's error codes and JSON error body, in one place.

Routes raise ``RegistryError`` (or one of the helpers); the app turns it into
``{"errors": [{"code", "message", "detail"}]}`` with the right status and headers.
"""

from __future__ import annotations

import json
from typing import Any, Final

from starlette.responses import Response

API_VERSION_HEADER: Final = "Docker-Distribution-API-Version"
API_VERSION: Final = "registry/2.0"
# Headers that describe the message framing: an error response computes them from its own body.
_FRAMING_HEADERS: Final = frozenset({"content-length", "transfer-encoding"})

# code -> default HTTP status (spec.md "Error Codes", plus Distribution's pagination code).
CODES: Final[dict[str, int]] = {
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 400,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 400,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "SIZE_INVALID": 400,
    "TAG_INVALID": 400,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "TOOMANYREQUESTS": 429,
    "UNAVAILABLE": 503,  # Distribution's: a mirror's upstream cannot be reached
    "PAGINATION_NUMBER_INVALID": 400,
    "UNKNOWN": 500,
}


class RegistryError(Exception):
    """An error answer: status, spec code, human message, optional detail and extra headers."""

    def __init__(self, code: str, message: str, status: int | None = None, detail: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        self.code = code
        self.message = message
        self.status = status if status is not None else CODES[code]
        self.detail = detail
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        entry: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            entry["detail"] = self.detail
        return json.dumps({"errors": [entry]}).encode()

    def response(self, head: bool = False) -> Response:
        return error_response(self.code, self.message, self.status, self.detail, self.headers, head)


def error_response(code: str, message: str, status: int | None = None, detail: Any = None,
                   headers: dict[str, str] | None = None, head: bool = False) -> Response:
    """The spec's JSON error body (HEAD answers carry the headers but no body).

    ``Content-Length`` is always the body's own: a caller's headers (often the success headers of
    the same endpoint, which say ``Content-Length: 0``) never set it. A length that disagrees with
    the body makes uvicorn drop the connection, and a keep-alive client's next request fails.
    """
    entry: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        entry["detail"] = detail
    body = json.dumps({"errors": [entry]}).encode()
    hdrs = {API_VERSION_HEADER: API_VERSION, "Content-Type": "application/json"}
    hdrs.update({k: v for k, v in (headers or {}).items() if k.lower() not in _FRAMING_HEADERS})
    hdrs["Content-Length"] = str(len(body))
    return Response(b"" if head else body, status_code=status or CODES[code], headers=hdrs)


def name_invalid(name: str, reason: str) -> RegistryError:
    return RegistryError("NAME_INVALID", reason, detail={"name": name})


def name_unknown(name: str) -> RegistryError:
    return RegistryError("NAME_UNKNOWN", f"repository {name!r} is not known to the registry",
                         detail={"name": name})


def blob_unknown(digest: str) -> RegistryError:
    return RegistryError("BLOB_UNKNOWN", f"blob {digest} is not known to the registry",
                         detail={"digest": digest})


def manifest_unknown(reference: str) -> RegistryError:
    return RegistryError("MANIFEST_UNKNOWN", f"manifest {reference} is not known to the registry",
                         detail={"reference": reference})


def upload_unknown(upload_id: str) -> RegistryError:
    return RegistryError("BLOB_UPLOAD_UNKNOWN", f"upload {upload_id} is not known to the registry",
                         detail={"uuid": upload_id})


def digest_invalid(message: str, digest: str | None = None) -> RegistryError:
    return RegistryError("DIGEST_INVALID", message, detail={"digest": digest} if digest else None)


def unsupported(message: str, status: int = 405) -> RegistryError:
    return RegistryError("UNSUPPORTED", message, status=status)
