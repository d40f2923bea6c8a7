"""Signed session cookies for the web UI: who is logged in plus a CSRF token, HMAC-signed.

The cookie is HttpOnly and SameSite=Strict; state-changing calls must also echo the session's
CSRF token in a header and come from this origin. The key is ``http.secret`` (so every worker
and replica accepts the cookie), else a random key per process (sessions then end on restart).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE = "pyreg_ui_session"
LIFETIME = 8 * 3600  # seconds a session (logged in or not) stays valid


@dataclass(frozen=True)
class Session:
    user: str | None
    csrf: str
    expires: float


class SessionSigner:
    def __init__(self, secret: str | None) -> None:
        material = secret.encode() if secret else secrets.token_bytes(32)
        self._key = hashlib.sha256(b"pyreg-ui-session\0" + material).digest()

    def _mac(self, payload: bytes) -> str:
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def new(self, user: str | None) -> Session:
        return Session(user, secrets.token_urlsafe(24), time.time() + LIFETIME)

    def dump(self, session: Session) -> str:
        payload = json.dumps({"u": session.user, "c": session.csrf, "e": int(session.expires)},
                             separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + self._mac(payload)

    def load(self, value: str | None) -> Session | None:
        """The session in a cookie value; None when missing, forged or expired."""
        if not value or "." not in value or len(value) > 4096:
            return None
        body, mac = value.rsplit(".", 1)
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            data = json.loads(payload)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(mac, self._mac(payload)) or not isinstance(data, dict):
            return None
        user, csrf, expires = data.get("u"), data.get("c"), data.get("e")
        if not isinstance(csrf, str) or not isinstance(expires, int) or expires < time.time():
            return None
        if user is not None and not isinstance(user, str):
            return None
        return Session(user, csrf, float(expires))
