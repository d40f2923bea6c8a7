"""Image references as the client and runtime write them: ``[registry/][namespace/]name[:tag][@digest]``.

The grammar and the error messages are Docker's (distribution/reference ``ParseNormalizedNamed``
and ``splitDockerDomain``); the path-component and tag patterns are the ones in
``storage.names`` and digests are validated by ``storage.digest`` — nothing is spelled twice.

Defaults: a missing tag is ``latest`` (unless a digest is given); a missing registry is the
configured default (``PYREG_REGISTRY``, else ``registry`` in the client config file, else
``localhost:5000``); on the default registry — and on Docker Hub, as Docker does — a
one-component name gets the ``library/`` namespace. Other registries keep the path as written.

The client config file lives here too (JSON, stdlib only) because the runtime resolves references
and finds the local store without importing ``client``: ``$PYREG_CONFIG`` or
``$XDG_CONFIG_HOME/pyreg/config.json`` (``~/.config/pyreg/config.json``), keys ``registry``,
``store``, ``insecure_registries`` (list of hosts), ``ca_file``, ``parallel``, ``chunk_size``,
``max_config_size``, ``layer_max_size``, ``layer_max_ratio``.
"""

from __future__ import annotations

import os
import re

from pyreg.storage.clientconfig import client_config, config_path  # noqa: F401  (re-exported)
from pyreg.storage.digest import Digest, DigestError
from pyreg.storage.frozen import Frozen
from pyreg.storage.names import NAME_MAX_LENGTH, PATH_COMPONENT, TAG_PATTERN

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    from typing import Final

DEFAULT_REGISTRY: Final = "localhost:5000"
DEFAULT_TAG: Final = "latest"
DOCKER_HUB: Final = "docker.io"
DOCKER_HUB_LEGACY: Final = "index.docker.io"
OFFICIAL_NAMESPACE: Final = "library"

# Docker's reference messages, word for word.
ERR_INVALID_FORMAT: Final = "invalid reference format"
ERR_UPPERCASE: Final = "invalid reference format: repository name must be lowercase"
ERR_NAME_EMPTY: Final = "repository name must have at least one component"
ERR_NAME_TOO_LONG: Final = f"repository name must not be more than {NAME_MAX_LENGTH} characters"

_DOMAIN_COMPONENT: Final = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6: Final = r"\[(?:[a-fA-F0-9:]+)\]"
DOMAIN_PATTERN: Final = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"
# The digest slot is matched loosely and then validated by storage.digest.
REFERENCE_PATTERN: Final = (
    rf"^((?:{DOMAIN_PATTERN}/)?{PATH_COMPONENT}(?:/{PATH_COMPONENT})*)"
    rf"(?::({TAG_PATTERN}))?(?:@([A-Za-z0-9][A-Za-z0-9+._-]*:[A-Za-z0-9=_-]+))?$"
)
_IDENTIFIER: Final = r"^[a-f0-9]{64}$"
# re caches compiled patterns; compiling on first use keeps `pyreg images` start-up lean.


class ReferenceError(ValueError):
    """A reference does not parse; the message is Docker's."""


# ---------------------------------------------------------------------------------------------
# client configuration (shared by client and runtime; stdlib only)

# (config_path and client_config live in storage.clientconfig, re-exported above)


def default_registry() -> str:
    """``PYREG_REGISTRY``, else the config file's ``registry``, else ``localhost:5000``."""
    value = os.environ.get("PYREG_REGISTRY") or client_config().get("registry") or DEFAULT_REGISTRY
    value = str(value).removeprefix("https://").removeprefix("http://").rstrip("/")
    if not re.match(rf"^{DOMAIN_PATTERN}$", value):
        raise ValueError(f"invalid default registry {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# references

class Reference(Frozen):
    """A fully qualified reference: registry host, repository path, and a tag and/or digest
    (immutable; compared and hashed as those four)."""

    __slots__ = ("registry", "repository", "tag", "digest")  # noqa: RUF023 - __init__'s order (repr, pickling)
    registry: str
    repository: str
    tag: str | None
    digest: Digest | None

    def __init__(self, registry: str, repository: str, tag: str | None = None,
                 digest: Digest | None = None) -> None:
        self._set("registry", registry)
        self._set("repository", repository)
        self._set("tag", tag)
        self._set("digest", digest)

    @property
    def name(self) -> str:
        """``registry/repository`` — the fully qualified name without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes in ``/v2/<name>/manifests/<reference>``: the digest if any, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or DEFAULT_TAG

    def _suffix(self) -> str:
        """``:tag``, ``@digest``, both, or nothing."""
        out = ""
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    def __str__(self) -> str:
        return self.name + self._suffix()

    def with_digest(self, digest: Digest) -> Reference:
        return Reference(self.registry, self.repository, None, digest)

    def familiar(self, default: str | None = None) -> str:
        """The short form a user would type (drops the default registry and ``library/``)."""
        default = default if default is not None else default_registry()
        if self.registry == default:
            repo = self.repository.removeprefix(f"{OFFICIAL_NAMESPACE}/")
            if "/" in repo:
                repo = self.repository
            out = repo
        else:
            out = self.name
        return out + self._suffix()


def split_domain(name: str, default: str) -> tuple[str, str]:
    """Docker's splitDockerDomain, with ``default`` in the role of docker.io.

    The first component is a registry when it contains '.' or ':', is 'localhost', or has an
    upper-case letter; otherwise the whole string is a path on the default registry.
    """
    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"
                     and first.lower() == first):
        domain, remainder = default, name
    else:
        domain, remainder = first, rest
    if domain == DOCKER_HUB_LEGACY:
        domain = DOCKER_HUB
    if domain in (default, DOCKER_HUB) and "/" not in remainder:
        remainder = f"{OFFICIAL_NAMESPACE}/{remainder}"
    return domain, remainder


def parse(value: str, default: str | None = None, default_tag: bool = True) -> Reference:
    """Parse a reference as ``docker pull`` would; raise ReferenceError with Docker's message.

    ``default`` is the registry for names that do not name one (default: ``default_registry()``).
    With ``default_tag`` a reference with neither tag nor digest gets ``latest``.
    """
    if re.match(_IDENTIFIER, value):
        raise ReferenceError(
            f"invalid repository name ({value}), cannot specify 64-byte hexadecimal strings")
    default = default if default is not None else default_registry()
    domain, remainder = split_domain(value, default)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise ReferenceError(f"invalid reference format: repository name ({remote}) must be lowercase")
    full = f"{domain}/{remainder}"
    match = re.match(REFERENCE_PATTERN, full)
    if match is None:
        if not value:
            raise ReferenceError(ERR_NAME_EMPTY)
        if re.match(REFERENCE_PATTERN, full.lower()):
            raise ReferenceError(ERR_UPPERCASE)
        raise ReferenceError(ERR_INVALID_FORMAT)
    name, tag, digest_text = match.group(1), match.group(2), match.group(3)
    if len(name) > NAME_MAX_LENGTH:
        raise ReferenceError(ERR_NAME_TOO_LONG)
    digest = None
    if digest_text is not None:
        try:
            digest = Digest.parse(digest_text)
        except DigestError as exc:
            if exc.unsupported:
                raise ReferenceError("unsupported digest algorithm") from exc
            raise ReferenceError(ERR_INVALID_FORMAT) from exc
    registry, _, repository = name.partition("/")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(registry, repository, tag, digest)


def parse_repository(value: str, default: str | None = None) -> Reference:
    """A repository without tag or digest (``pyreg tags REPO``); a tag or digest is an error."""
    ref = parse(value, default, default_tag=False)
    if ref.tag is not None or ref.digest is not None:
        raise ReferenceError(f"{value}: a repository name, not a tag or digest, is expected here")
    return ref
