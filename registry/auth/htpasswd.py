"""bcrypt htpasswd files, the format ``htpasswd -B`` writes (``user:$2y$cost$...``).

The file is re-read when it changes (checked by stat on use), so ``pyreg user add`` takes effect
without a restart. An unknown user is checked against a dummy hash of the same cost, so a wrong
name and a wrong password take the same time. bcrypt reads at most 72 bytes of a password (bcrypt 5
raises on more, older releases silently ignored the rest): a longer password is a failed login,
never a crash, and ``pyreg user add`` refuses to store one. A successful check is remembered (keyed by a
process-secret keyed hash of the password) until the file changes, so Basic auth does not pay bcrypt
on every request of a push.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import tempfile
import threading
from pathlib import Path

import bcrypt

log = logging.getLogger("pyreg.auth")

_BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
DEFAULT_COST = 10
MAX_PASSWORD_BYTES = 72  # bcrypt's limit, in UTF-8 bytes
_CACHE_MAX = 4096


class HtpasswdError(ValueError):
    """A malformed htpasswd file or an unusable user name."""


def parse(text: str) -> dict[str, str]:
    """user -> bcrypt hash; other hash kinds are skipped with a warning (pyreg only does bcrypt)."""
    users: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise HtpasswdError(f"line {lineno}: expected user:hash")
        if not hashed.startswith(_BCRYPT_PREFIXES):
            log.warning("htpasswd line %d (%s): not a bcrypt hash, user ignored", lineno, user)
            continue
        users[user] = hashed
    return users


def _cost(hashed: str) -> int:
    try:
        return int(hashed.split("$")[2])
    except (IndexError, ValueError):
        return DEFAULT_COST


class Htpasswd:
    """A bcrypt htpasswd file, re-read when its stat changes. Thread-safe; ``verify`` blocks
    (bcrypt), so async callers run it in a thread."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._path_str = str(self.path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, str] = {}
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(DEFAULT_COST))
        self._secret = secrets.token_bytes(32)  # BLAKE2b keys are at most 64 bytes
        self._ok: dict[tuple[str, bytes], None] = {}
        self._missing_logged = False
        self._reload()

    def _reload(self) -> None:
        try:
            st = os.stat(self._path_str)
        except FileNotFoundError:
            if self._stamp is not None or not self._missing_logged:
                log.warning("htpasswd file %s is missing: nobody can log in", self.path)
                self._missing_logged = True
            self._stamp, self._users, self._ok = None, {}, {}
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        users = parse(self.path.read_text(encoding="utf-8"))
        costs = {_cost(h) for h in users.values()}
        cost = max(costs) if costs else DEFAULT_COST
        if _cost(self._dummy.decode()) != cost:
            self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))
        self._stamp, self._users, self._ok = stamp, users, {}

    def _mac(self, password: bytes) -> bytes:
        """A keyed hash of a password (keyed BLAKE2b: a MAC, and cheap per request)."""
        return hashlib.blake2b(password, key=self._secret, digest_size=32).digest()

    def users(self) -> list[str]:
        with self._lock:
            self._reload()
            return sorted(self._users)

    def version(self, user: str) -> str | None:
        """A short fingerprint of ``user``'s entry (None: no such user). It changes with the
        password, so refresh tokens carrying it die with the old password."""
        with self._lock:
            self._reload()
            hashed = self._users.get(user)
        return None if hashed is None else hashlib.blake2b(hashed.encode(), digest_size=8).hexdigest()

    def __contains__(self, user: object) -> bool:
        with self._lock:
            self._reload()
            return user in self._users

    def remembered(self, user: str, password: str) -> bool:
        """True when this exact login was verified since the file last changed: no bcrypt, no
        thread needed, so async callers try this first."""
        key = (user, self._mac(password.encode("utf-8")))
        with self._lock:
            self._reload()
            return key in self._ok

    def verify(self, user: str, password: str) -> bool:
        """True when ``password`` is ``user``'s; unknown users take as long as wrong passwords."""
        pw = password.encode("utf-8")
        if len(pw) > MAX_PASSWORD_BYTES:  # no stored hash can match it: as long as a wrong password
            bcrypt.checkpw(pw[:MAX_PASSWORD_BYTES], self._dummy)
            return False
        key = (user, self._mac(pw))
        with self._lock:
            self._reload()
            if key in self._ok:
                return True
            hashed = self._users.get(user)
        if hashed is None:
            bcrypt.checkpw(pw, self._dummy)
            return False
        ok = bcrypt.checkpw(pw, hashed.encode("ascii"))
        if ok:
            with self._lock:
                if len(self._ok) >= _CACHE_MAX:
                    self._ok.clear()
                self._ok[key] = None
        return ok


def _check_user(user: str) -> None:
    if not user or ":" in user or any(c.isspace() for c in user):
        raise HtpasswdError(f"bad user name {user!r}: it must be non-empty, without ':' or spaces")


def _write(path: Path, lines: list[str]) -> None:
    """Write aside and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".htpasswd.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def hash_password(password: str, cost: int = DEFAULT_COST) -> str:
    """A ``$2y$`` hash, as ``htpasswd -B`` writes it; HtpasswdError for a password bcrypt cannot hold."""
    pw = password.encode("utf-8")
    if len(pw) > MAX_PASSWORD_BYTES:
        raise HtpasswdError(f"the password is {len(pw)} bytes long: bcrypt uses at most "
                            f"{MAX_PASSWORD_BYTES} bytes (UTF-8), so a longer one cannot be stored")
    hashed = bcrypt.hashpw(pw, bcrypt.gensalt(cost)).decode("ascii")
    return "$2y$" + hashed[4:]


def set_user(path: str | os.PathLike[str], user: str, password: str, cost: int = DEFAULT_COST) -> bool:
    """Add ``user`` or change its password; True when the user is new."""
    _check_user(user)
    p = Path(path)
    entry = f"{user}:{hash_password(password, cost)}"
    lines, found = [], False
    for line in _lines(p):
        if line.partition(":")[0] == user:
            if not found:
                lines.append(entry)
            found = True
        else:
            lines.append(line)
    if not found:
        lines.append(entry)
    _write(p, lines)
    return not found


def delete_user(path: str | os.PathLike[str], user: str) -> bool:
    """Remove ``user``; False when it was not there."""
    p = Path(path)
    old = _lines(p)
    lines = [line for line in old if line.partition(":")[0] != user]
    if len(lines) == len(old):
        return False
    _write(p, lines)
    return True
