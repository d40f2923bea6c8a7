"""Signed session cookies for the web UI: who is logged in plus a CSRF token, HMAC-signed.

The cookie is HttpOnly and SameSite=Strict; state-changing calls must also echo the session's
CSRF token in a header and come from this origin. The key is derived from ``http.secret``; without
one, from a random key kept in the storage (KEY_PATH) so every worker and replica sharing the
storage accepts the same cookies, and sessions survive restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from pyreg.storage.driver import Driver
from pyreg.storage.errors import PathNotFoundError

COOKIE = "pyreg_ui_session"
LIFETIME = 8 * 3600  # seconds a session (logged in or not) stays valid
KEY_PATH = "/pyreg/ui/session-key"  # outside /docker/registry/v2, so gc and the API never see it


async def stored_key(driver: Driver) -> str:
    """The storage's UI session key, created on first use; when two processes race, both end up
    using the one that landed (it is read back after writing)."""
    try:
        return (await driver.get_content(KEY_PATH)).decode()
    except PathNotFoundError:
        await driver.put_content(KEY_PATH, secrets.token_hex(32).encode())
        return (await driver.get_content(KEY_PATH)).decode()


@dataclass(frozen=True)
class Session:
    user: str | None
    csrf: str
    expires: float


class SessionSigner:
    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"pyreg-ui-session\0" + secret.encode()).digest()

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
